"""collate_images, VarMixupCollate and VarMixupLoader with real DataLoaders and workers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, TensorDataset

from _helpers import tiny_conv_vae
from varmixup_aug import VarMixup, VarMixupCollate, VarMixupError, VarMixupLoader
from varmixup_aug._collate import collate_images


class RepeatedImages(Dataset):
    """Items i and i + 4 are identical, so two workers with one stream would return equal batches."""

    def __init__(self, kind: str = "tensor") -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand(4, 3, 8, 8, generator=g)
        self.kind = kind

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int):
        x = self.images[i % 4]
        if self.kind == "pil":
            return Image.fromarray((x.permute(1, 2, 0).numpy() * 255).astype(np.uint8)), i % 4
        if self.kind == "numpy":
            return (x.permute(1, 2, 0).numpy() * 255).astype(np.uint8), i % 4
        return x, i % 4


class TestCollateImages:
    def test_types_agree(self):
        batches = {kind: collate_images([RepeatedImages(kind)[i] for i in range(4)]) for kind in ("pil", "numpy")}
        assert torch.equal(batches["pil"][0], batches["numpy"][0])
        assert batches["pil"][0].dtype == torch.float32 and batches["pil"][0].max() <= 1
        assert batches["pil"][1].tolist() == [0, 1, 2, 3]
        uint8 = collate_images([((RepeatedImages()[i][0] * 255).to(torch.uint8), 1) for i in range(2)])[0]
        assert uint8.dtype == torch.float32 and uint8.max() <= 1

    def test_soft_and_tensor_labels(self):
        _, y = collate_images([(torch.rand(3, 2, 2), torch.tensor(1)), (torch.rand(3, 2, 2), torch.tensor(0))])
        assert y.dtype == torch.long and y.tolist() == [1, 0]
        _, y = collate_images([(torch.rand(3, 2, 2), torch.tensor([0.5, 0.5]))] * 2)
        assert y.shape == (2, 2) and y.is_floating_point()

    def test_errors(self):
        with pytest.raises(VarMixupError, match="batch is empty"):
            collate_images([])
        with pytest.raises(VarMixupError, match="each dataset item must be an \\(image, label\\) pair, got Tensor"):
            collate_images([torch.rand(3, 2, 2)])
        with pytest.raises(VarMixupError, match="images in a batch must share one shape"):
            collate_images([(torch.rand(3, 2, 2), 0), (torch.rand(3, 4, 4), 1)])
        with pytest.raises(VarMixupError, match="images must be tensors, PIL images or numpy arrays, got str"):
            collate_images([("x", 0)])
        with pytest.raises(VarMixupError, match="image tensors must be float or uint8, got torch.int64"):
            collate_images([(torch.zeros(3, 2, 2, dtype=torch.long), 0)])


class TestVarMixupCollate:
    def test_single_process(self):
        loader = DataLoader(RepeatedImages("pil"), batch_size=4, collate_fn=VarMixupCollate(tiny_conv_vae(), num_classes=4, seed=0))
        x, t = next(iter(loader))
        assert x.shape == (4, 3, 8, 8) and x.dtype == torch.float32 and t.shape == (4, 4)
        assert torch.allclose(t.sum(1), torch.ones(4))

    @pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
    def test_workers(self, method):
        def run(epochs: int, torch_seed: int) -> list:
            collate = VarMixupCollate(tiny_conv_vae(), num_classes=4, seed=0)
            loader = DataLoader(RepeatedImages("numpy"), batch_size=4, num_workers=2, collate_fn=collate,
                                multiprocessing_context=method)
            torch.manual_seed(torch_seed)  # has no say: the streams come from seed=0 alone
            return [[b for b in loader] for _ in range(epochs)]

        first, again = run(2, torch_seed=0), run(1, torch_seed=1)
        assert len(first[0]) == 2
        for (xa, ta), (xb, tb) in zip(first[0], again[0]):  # seed alone reproduces the run
            assert torch.equal(xa, xb) and torch.equal(ta, tb)
        # Batch 0 came from worker 0 and batch 1 from worker 1, on identical items: streams must differ.
        assert not torch.equal(first[0][0][1], first[0][1][1])
        assert not torch.equal(first[0][0][1], first[1][0][1])  # the next epoch's workers draw new streams

    @pytest.mark.filterwarnings("ignore:.*pin_memory.*:UserWarning")
    def test_persistent_workers_and_pin_memory(self):
        collate = VarMixupCollate(tiny_conv_vae(), num_classes=4, seed=0)
        loader = DataLoader(RepeatedImages(), batch_size=4, num_workers=2, collate_fn=collate,
                            persistent_workers=True, pin_memory=True)  # without CUDA torch warns and skips pinning
        epoch1 = [t for _, t in loader]
        epoch2 = [t for _, t in loader]
        assert not torch.equal(epoch1[0], epoch2[0])

    def test_pickles(self):
        collate = VarMixupCollate(tiny_conv_vae(), num_classes=4, seed=3, generator=None)
        clone = pickle.loads(pickle.dumps(collate))
        batch = [RepeatedImages()[i] for i in range(4)]
        xa, ta = collate(batch)
        xb, tb = clone(batch)
        assert torch.equal(xa, xb) and torch.equal(ta, tb)

    def test_pickled_copy_keeps_the_owners_rank(self, monkeypatch):
        # Spawned workers do not inherit the process group; the rank travels with the pickle.
        batch = [RepeatedImages()[i] for i in range(4)]
        copies = {}
        for rank in ("0", "1"):
            monkeypatch.setenv("RANK", rank)
            copies[rank] = pickle.dumps(VarMixupCollate(tiny_conv_vae(), num_classes=4, seed=0))
        monkeypatch.delenv("RANK")
        t0 = pickle.loads(copies["0"])(batch)[1]
        t1 = pickle.loads(copies["1"])(batch)[1]
        assert not torch.equal(t0, t1)

    def test_pickles_with_generator(self):
        collate = VarMixupCollate(tiny_conv_vae(), num_classes=4, generator=torch.Generator().manual_seed(5))
        assert isinstance(pickle.loads(pickle.dumps(collate)), VarMixupCollate)

    def test_refuses_cuda_in_worker(self):
        collate = VarMixupCollate(tiny_conv_vae(), num_classes=4)
        collate.device = torch.device("cuda")  # as if constructed on a CUDA machine
        loader = DataLoader(RepeatedImages(), batch_size=4, num_workers=1, collate_fn=collate)
        with pytest.raises(VarMixupError, match="cannot run inside a DataLoader worker: CUDA must not be initialised"):
            next(iter(loader))

    @pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
    def test_cuda_unavailable(self):
        with pytest.raises(VarMixupError, match="device='cuda' but CUDA is not available"):
            VarMixupCollate(tiny_conv_vae(), num_classes=4, device="cuda")

    @pytest.mark.cuda
    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    def test_cuda_device_main_process(self):
        collate = VarMixupCollate(tiny_conv_vae(), num_classes=4, seed=0, device="cuda")
        x, t = next(iter(DataLoader(RepeatedImages(), batch_size=4, collate_fn=collate)))
        assert x.device.type == "cuda" and t.device.type == "cuda"

    def test_repr(self):
        assert "VarMixupCollate(VarMixup(num_classes=4" in repr(VarMixupCollate(tiny_conv_vae(), num_classes=4))


class TestVarMixupLoader:
    def test_mixes_batches_from_workers(self):
        base = DataLoader(RepeatedImages(), batch_size=4, num_workers=2, pin_memory=torch.cuda.is_available())
        loader = VarMixupLoader(base, VarMixup(tiny_conv_vae(), num_classes=4, seed=0))
        out = list(loader)
        assert len(loader) == 2 and len(out) == 2
        x, t = out[0]
        assert x.shape == (4, 3, 8, 8) and t.shape == (4, 4) and torch.allclose(t.sum(1), torch.ones(4))

    def test_uint8_batches_are_scaled(self):
        ds = TensorDataset(torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8), torch.arange(4))
        x, _ = next(iter(VarMixupLoader(DataLoader(ds, batch_size=4), VarMixup(tiny_conv_vae(), num_classes=4))))
        assert x.dtype == torch.float32 and x.max() <= 1

    def test_errors(self):
        with pytest.raises(VarMixupError, match="mixer must be a VarMixup, got function"):
            VarMixupLoader([], lambda x, y: (x, y))
        loader = VarMixupLoader([torch.zeros(2)], VarMixup(tiny_conv_vae(), num_classes=4))
        with pytest.raises(VarMixupError, match="expects the loader to yield \\(images, labels\\) batches"):
            next(iter(loader))

    @pytest.mark.cuda
    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    def test_cuda(self):
        base = DataLoader(RepeatedImages(), batch_size=4, num_workers=2, pin_memory=True)
        x, t = next(iter(VarMixupLoader(base, VarMixup(tiny_conv_vae().cuda(), num_classes=4, seed=0))))
        assert x.device.type == "cuda" and t.device.type == "cuda"
