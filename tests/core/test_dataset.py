"""VarMixupDataset (encode once, cache, refuse random augmentation) and BatchRandomCropFlip."""

from __future__ import annotations

import torch
import pytest
from torch.utils.data import DataLoader, Dataset, TensorDataset

from _helpers import CountingVAE, tiny_conv_vae
from varmixup_aug import (
    BatchRandomCropFlip,
    Posterior,
    VarMixup,
    VarMixupCollate,
    VarMixupDataset,
    VarMixupError,
    VarMixupLoader,
)


def _data(n=20):
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.rand(n, 3, 8, 8, generator=g), torch.arange(n) % 4)


class RandomlyAugmented(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.rand(3, 8, 8), 0


class TestVarMixupDataset:
    def test_posteriors_match_encoder(self):
        vae, data = tiny_conv_vae(), _data()
        ds = VarMixupDataset(data, vae, batch_size=8, progress=False)
        mu, logvar = vae.encode(data.tensors[0])
        torch.testing.assert_close(ds.mu, mu)
        torch.testing.assert_close(ds.logvar, logvar)
        assert torch.equal(ds.labels, data.tensors[1]) and len(ds) == 20
        item, label = ds[3]
        assert isinstance(item, Posterior) and item.mu.shape == (4,) and label == 3

    def test_training_never_runs_encoder(self):
        vae = CountingVAE(tiny_conv_vae())
        ds = VarMixupDataset(_data(), vae, batch_size=8, progress=False)
        assert vae.encode_calls == 3  # ceil(20 / 8) batches, once
        loader = DataLoader(ds, batch_size=5, shuffle=True, collate_fn=VarMixupCollate(vae, num_classes=4, seed=0))
        for x, t in loader:
            assert x.shape == (5, 3, 8, 8) and t.shape == (5, 4) and torch.allclose(t.sum(1), torch.ones(5))
        assert vae.encode_calls == 3 and vae.decode_calls == 4
        # The same through default_collate + VarMixupLoader.
        for x, _ in VarMixupLoader(DataLoader(ds, batch_size=10), VarMixup(vae, num_classes=4, seed=0)):
            assert x.shape == (10, 3, 8, 8)
        assert vae.encode_calls == 3

    def test_cache_skips_encoding(self, tmp_path):
        data = _data()
        first = CountingVAE(tiny_conv_vae())
        ds1 = VarMixupDataset(data, first, cache_path=tmp_path, progress=False)
        assert first.encode_calls == 1 and ds1.cache_file.parent == tmp_path and ds1.cache_file.exists()
        second = CountingVAE(tiny_conv_vae())
        ds2 = VarMixupDataset(data, second, cache_path=tmp_path, progress=False)
        assert second.encode_calls == 0
        assert torch.equal(ds1.mu, ds2.mu) and torch.equal(ds1.labels, ds2.labels)
        # Another VAE has another fingerprint and encodes again.
        other = CountingVAE(tiny_conv_vae(seed=1))
        ds3 = VarMixupDataset(data, other, cache_path=tmp_path, progress=False)
        assert other.encode_calls == 1 and ds3.cache_file != ds1.cache_file

    def test_cache_file_path_and_corrupt_cache(self, tmp_path):
        data, path = _data(), tmp_path / "latents.safetensors"
        VarMixupDataset(data, CountingVAE(tiny_conv_vae()), cache_path=path, progress=False)
        again = CountingVAE(tiny_conv_vae())
        VarMixupDataset(data, again, cache_path=path, progress=False)
        assert again.encode_calls == 0
        path.write_bytes(b"garbage")  # not ours: refused, never overwritten
        with pytest.raises(VarMixupError, match="exists and is not a latent cache written by VarMixupDataset"):
            VarMixupDataset(data, tiny_conv_vae(), cache_path=path, progress=False)
        assert path.read_bytes() == b"garbage"

    def test_refuses_random_augmentation(self):
        with pytest.raises(VarMixupError, match="dataset returns a different image each time the same index is read"):
            VarMixupDataset(RandomlyAugmented(), tiny_conv_vae(), progress=False)

    def test_bad_input(self):
        with pytest.raises(VarMixupError, match="dataset is empty"):
            VarMixupDataset(TensorDataset(torch.zeros(0, 3, 8, 8), torch.zeros(0)), tiny_conv_vae(), progress=False)
        with pytest.raises(VarMixupError, match="vae must implement encode/decode"):
            VarMixupDataset(_data(), torch.nn.Identity(), progress=False)
        with pytest.raises(VarMixupError, match="device=meta but the VAE is on cpu"):
            VarMixupDataset(_data(), tiny_conv_vae(), device="meta", progress=False)

    def test_repr(self):
        assert "VarMixupDataset(items=20, latent=(4,)" in repr(VarMixupDataset(_data(), tiny_conv_vae(), progress=False))


class _Adapter:
    """A VAE that is not an nn.Module: it wraps one."""

    def __init__(self, inner):
        self.inner, self.channels, self.image_size = inner, 3, 8

    def encode(self, x):
        return self.inner.encode(x)

    def decode(self, z):
        return self.inner.decode(z)


class _Opaque:
    """A VAE whose weights the fingerprint cannot see."""

    channels, image_size = 3, 8

    def __init__(self, seed):
        self.seed = seed

    def encode(self, x):
        return x.flatten(1)[:, :4] * self.seed, torch.zeros(x.shape[0], 4)

    def decode(self, z):
        return torch.zeros(z.shape[0], 3, 8, 8)


class _Items(Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class _Flip(Dataset):
    """A p=0.5 random horizontal flip."""

    def __init__(self):
        self.x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return 16

    def __getitem__(self, i):
        return (self.x[i].flip(-1) if torch.rand(()) < 0.5 else self.x[i]), 0


class TestCacheIntegrity:
    def test_change_anywhere_in_a_tensor_dataset(self, tmp_path):
        x, y = torch.rand(20, 3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(20) % 4
        VarMixupDataset(TensorDataset(x, y), tiny_conv_vae(), cache_path=tmp_path, progress=False)
        y2 = y.clone()
        y2[7] = 3  # neither item 0, n/2 nor n-1
        ds = VarMixupDataset(TensorDataset(x, y2), tiny_conv_vae(), cache_path=tmp_path, progress=False)
        assert ds.labels[7] == 3
        vae = CountingVAE(tiny_conv_vae())  # the fingerprint does not depend on batch_size
        VarMixupDataset(TensorDataset(x, y2), vae, cache_path=tmp_path, batch_size=3, progress=False)
        VarMixupDataset(TensorDataset(x, y2), vae, cache_path=tmp_path, batch_size=7, progress=False)
        assert vae.encode_calls == 7
        x2 = x.clone()
        x2[3, 0, 0, 0] = 0.5
        vae = CountingVAE(tiny_conv_vae())
        VarMixupDataset(TensorDataset(x2, y), vae, cache_path=tmp_path, progress=False)
        assert vae.encode_calls == 1

    def test_change_anywhere_in_an_image_folder(self, tmp_path):
        from PIL import Image
        from torchvision.datasets import ImageFolder
        from torchvision.transforms import ToTensor

        for c in range(2):
            (tmp_path / "data" / f"c{c}").mkdir(parents=True)
            for i in range(5):
                Image.new("RGB", (8, 8), (40 * i, 20 * c, 7)).save(tmp_path / "data" / f"c{c}" / f"{i}.png")
        folder = ImageFolder(str(tmp_path / "data"), transform=ToTensor())
        VarMixupDataset(folder, tiny_conv_vae(), cache_path=tmp_path / "cache", progress=False)
        Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "data" / "c0" / "2.png")  # a middle file
        folder = ImageFolder(str(tmp_path / "data"), transform=ToTensor())
        vae = CountingVAE(tiny_conv_vae())
        ds = VarMixupDataset(folder, vae, cache_path=tmp_path / "cache", progress=False)
        assert vae.encode_calls == 1
        torch.testing.assert_close(ds.mu[2], tiny_conv_vae().encode(ToTensor()(Image.open(folder.samples[2][0]))[None])[0][0])

    def test_vae_that_is_not_a_module(self, tmp_path):
        data = _data()
        a = VarMixupDataset(data, _Adapter(tiny_conv_vae(seed=0)), cache_path=tmp_path, progress=False)
        b = VarMixupDataset(data, _Adapter(tiny_conv_vae(seed=1)), cache_path=tmp_path, progress=False)
        assert a.cache_file != b.cache_file and not torch.equal(a.mu, b.mu)
        with pytest.raises(VarMixupError, match="cannot fingerprint the weights of the VAE.*pass cache_key"):
            VarMixupDataset(data, _Opaque(1.0), cache_path=tmp_path, progress=False)
        one = VarMixupDataset(data, _Opaque(1.0), cache_path=tmp_path, cache_key="one", progress=False)
        two = VarMixupDataset(data, _Opaque(2.0), cache_path=tmp_path, cache_key="two", progress=False)
        assert torch.equal(two.mu, 2 * one.mu)
        VarMixupDataset(data, _Opaque(1.0), progress=False)  # no cache: nothing to fingerprint
        with pytest.raises(VarMixupError, match="cache_key must be a non-empty string"):
            VarMixupDataset(data, tiny_conv_vae(), cache_path=tmp_path, cache_key="", progress=False)

    def test_unwritable_folder_checked_before_encoding(self, tmp_path, monkeypatch):
        import varmixup_aug._dataset as dataset_module

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(dataset_module.tempfile, "NamedTemporaryFile", refuse)
        vae = CountingVAE(tiny_conv_vae())
        with pytest.raises(VarMixupError, match="its folder is not writable.*nothing was encoded"):
            VarMixupDataset(_data(), vae, cache_path=tmp_path, progress=False)
        assert vae.encode_calls == 0
        (tmp_path / "file").write_text("x")
        with pytest.raises(VarMixupError, match="cannot create its folder"):
            VarMixupDataset(_data(), tiny_conv_vae(), cache_path=tmp_path / "file" / "sub" / "c.safetensors", progress=False)

    def test_failed_write_leaves_no_temp(self, tmp_path, monkeypatch):
        import varmixup_aug._io as io_module

        def broken(tensors, path, metadata=None):
            open(path, "wb").write(b"partial")
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(io_module, "save_file", broken)
        with pytest.raises(OSError, match="No space left"):
            VarMixupDataset(_data(), tiny_conv_vae(), cache_path=tmp_path, progress=False)
        assert [p.name for p in tmp_path.rglob("*") if ".tmp-" in p.name or p.name.startswith("shard-")] == []
        assert not list(tmp_path.glob("*.safetensors"))  # no manifest: the next run encodes again

    def test_items_checked_before_encoding(self):
        vae = CountingVAE(tiny_conv_vae())
        good = [(torch.rand(3, 8, 8), 0) for _ in range(6)]
        cases = [
            (good[:4] + [(torch.rand(3, 8, 8) * 255, 1)], r"items 0\.\.4: images hold values in \[.*expects \[0, 1\]"),
            ([(torch.rand(3, 16, 16), 0)] * 3, "images are 16x16 but the VAE expects 8x8"),
            ([(torch.rand(1, 8, 8), 0)] * 3, "images have 1 channels but the VAE expects 3"),
            (good[:4] + [(torch.full((3, 8, 8), float("nan")), 1)], "NaN or Inf"),
            ([(torch.rand(3, 8, 8), 2.7)] * 3, "integer class labels, got 2.7"),
            ([(torch.rand(3, 8, 8), torch.tensor(1.0))] * 3, "integer class labels, got a torch.float32"),
            ([(torch.rand(3, 8, 8), -1)] * 3, "class label -1 is negative"),
        ]
        for items, match in cases:
            with pytest.raises(VarMixupError, match=match):
                VarMixupDataset(_Items(items), vae, batch_size=8, progress=False)
        assert vae.encode_calls == 0

    def test_random_flip_always_caught(self):
        for trial in range(30):
            torch.manual_seed(trial)
            with pytest.raises(VarMixupError, match="different image each time the same index is read"):
                VarMixupDataset(_Flip(), tiny_conv_vae(), progress=False)


class TestBatchRandomCropFlip:
    def test_identity_without_padding_and_flip(self):
        x = torch.rand(4, 3, 8, 8)
        assert torch.equal(BatchRandomCropFlip(padding=0, flip=False)(x), x)

    def test_per_sample_shifted_windows(self):
        x = torch.rand(64, 2, 8, 8, dtype=torch.float64)
        out = BatchRandomCropFlip(padding=2, flip=False, seed=0)(x)
        assert out.shape == x.shape and out.dtype == x.dtype
        padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
        offsets = set()
        for i in range(64):
            match = [(dy, dx) for dy in range(5) for dx in range(5)
                     if torch.equal(out[i], padded[i, :, dy:dy + 8, dx:dx + 8])]
            assert match, f"sample {i} is not a crop of its padded image"
            offsets.add(match[0])
        assert len(offsets) > 5  # offsets differ per sample

    def test_flip_per_sample(self):
        x = torch.rand(64, 1, 4, 4)
        out = BatchRandomCropFlip(padding=0, flip=True, seed=0)(x)
        flipped = torch.tensor([torch.equal(out[i], x[i].flip(-1)) for i in range(64)])
        same = torch.tensor([torch.equal(out[i], x[i]) for i in range(64)])
        assert (flipped | same).all() and 10 < flipped.sum() < 54

    def test_seeded(self):
        x = torch.rand(8, 3, 8, 8)
        assert torch.equal(BatchRandomCropFlip(seed=1)(x), BatchRandomCropFlip(seed=1)(x))

    def test_errors(self):
        with pytest.raises(VarMixupError, match="padding must be an int >= 0, got -1"):
            BatchRandomCropFlip(padding=-1)
        with pytest.raises(VarMixupError, match="images must be a \\(B, C, H, W\\) tensor"):
            BatchRandomCropFlip()(torch.rand(3, 8, 8))
