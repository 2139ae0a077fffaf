"""Hugging Face ``datasets``: dict items through ``VarMixupCollate`` and ``VarMixupDataset``.

A real ``datasets.Dataset`` built in memory from 320 real CIFAR-10 training images (PIL) with a
``with_transform`` pipeline (PIL -> float tensor), read by a DataLoader with 2 workers.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, default_collate

datasets = pytest.importorskip("datasets")

from varmixup_aug import (  # noqa: E402
    VarMixup,
    VarMixupCollate,
    VarMixupDataset,
    VarMixupError,
    load_pretrained_vae,
)
from varmixup_aug.harness import open_image_dataset  # noqa: E402

NUM_CLASSES = 10
N = 320


@pytest.fixture(scope="module")
def cifar_pil(cifar_root):
    """320 real CIFAR-10 training images as PIL images, spread over the classes, and their labels."""
    folder = open_image_dataset(cifar_root, "train")
    n = len(folder)
    picks = [(k * n) // N for k in range(N)]
    items = [folder[i] for i in picks]
    images = [im.convert("RGB") for im, _ in items]
    labels = [int(y) for _, y in items]
    assert len(set(labels)) == NUM_CLASSES
    return images, labels


def _to_tensor(batch: dict) -> dict:
    """The ``with_transform`` pipeline: PIL -> float tensor (C, H, W) in [0, 1]; other columns as they are."""
    import torchvision.transforms.v2.functional as F

    batch["img"] = [F.to_dtype(F.pil_to_tensor(im), torch.float32, scale=True) for im in batch["img"]]
    return batch


@pytest.fixture(scope="module")
def hf_dataset(cifar_pil):
    images, labels = cifar_pil
    ds = datasets.Dataset.from_dict({"img": images, "label": labels, "idx": list(range(N)),
                                     "name": [f"cifar{i}" for i in range(N)]})
    return ds.with_transform(_to_tensor)


@pytest.fixture(scope="module")
def vae():
    return load_pretrained_vae("cifar10")


class TestCollateOnDicts:
    def test_real_hf_dataset_two_workers(self, hf_dataset, vae, one_thread):
        item = hf_dataset[0]
        assert isinstance(item, dict) and item["img"].shape == (3, 32, 32)
        collate = VarMixupCollate(vae, num_classes=NUM_CLASSES, seed=0)
        loader = DataLoader(hf_dataset, batch_size=64, collate_fn=collate, num_workers=2)
        seen = []
        for batch in loader:
            assert list(batch) == ["img", "label", "idx", "name"]  # same keys, the first item's order
            x, t = batch["img"], batch["label"]
            assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32
            assert 0 <= float(x.min()) and float(x.max()) <= 1
            assert t.shape == (64, NUM_CLASSES)
            assert torch.allclose(t.sum(1), torch.ones(64), atol=1e-5)
            assert (t.max(1).values < 1).any()  # mixed
            # Other keys as default_collate batches them: ints -> tensor, strings -> list.
            assert batch["idx"].dtype == torch.int64 and batch["name"] == [f"cifar{i}" for i in batch["idx"].tolist()]
            seen += batch["idx"].tolist()
        assert seen == list(range(N))

    def test_targets_follow_the_labels(self, hf_dataset):
        # Unmixed: the label key holds the one-hot rows of the dataset's labels.
        collate = VarMixupCollate(None, num_classes=NUM_CLASSES, space="input", seed=0)
        collate.mixup_enabled = False
        items = [hf_dataset[i] for i in range(8)]
        batch = collate(items)
        assert torch.equal(batch["label"].argmax(1), torch.tensor([it["label"] for it in items]))
        assert torch.equal(batch["img"], torch.stack([it["img"] for it in items]))

    def test_same_draws_as_tuples(self, hf_dataset, vae):
        items = [hf_dataset[i] for i in range(0, N, N // 16)]
        as_dicts = VarMixupCollate(vae, num_classes=NUM_CLASSES, seed=3)(items)
        x, t = VarMixupCollate(vae, num_classes=NUM_CLASSES, seed=3)([(it["img"], it["label"]) for it in items])
        assert torch.equal(as_dicts["img"], x) and torch.equal(as_dicts["label"], t)

    def test_pil_items_without_transform(self, cifar_pil):
        images, labels = cifar_pil
        ds = datasets.Dataset.from_dict({"image": images[:8], "labels": labels[:8]})
        batch = VarMixupCollate(None, num_classes=NUM_CLASSES, space="input", seed=0)([ds[i] for i in range(8)])
        assert set(batch) == {"image", "labels"} and batch["image"].shape == (8, 3, 32, 32)

    @pytest.mark.parametrize("key", ["image", "img", "pixel_values"])
    def test_default_image_keys(self, key):
        items = [{key: torch.rand(3, 4, 4), "label": i % 2} for i in range(4)]
        batch = VarMixupCollate(None, num_classes=2, space="input", seed=0)(items)
        assert set(batch) == {key, "label"}

    def test_other_keys_kept_or_dropped_as_default_collate(self):
        items = [{"img": torch.rand(3, 4, 4), "label": i % 2, "score": 0.5 * i, "arr": torch.zeros(2),
                  "ragged": torch.zeros(i + 1), "none": None, "meta": {"id": i}, "some": i}
                 for i in range(4)]
        del items[2]["some"]
        batch = VarMixupCollate(None, num_classes=2, space="input", seed=0)(items)
        assert list(batch) == ["img", "label", "score", "arr", "meta"]
        for key in ("score", "arr", "meta"):
            expected = default_collate([it[key] for it in items])
            got = batch[key]
            assert torch.equal(got["id"], expected["id"]) if key == "meta" else torch.equal(got, expected)

    def test_explicit_keys(self):
        items = [{"pixels": torch.rand(3, 4, 4), "fine_label": i % 3, "coarse_label": 0} for i in range(4)]
        collate = VarMixupCollate(None, num_classes=3, space="input", seed=0, image_key="pixels",
                                  label_key="fine_label")
        batch = collate(items)
        assert batch["fine_label"].shape == (4, 3) and torch.equal(batch["coarse_label"], torch.zeros(4, dtype=torch.long))

    def test_key_errors_list_the_keys(self):
        collate = VarMixupCollate(None, num_classes=2, space="input", seed=0)
        with pytest.raises(VarMixupError, match=r"image_key=.*'foo'|'foo'.*image_key"):
            collate([{"foo": torch.rand(3, 4, 4), "label": 0}] * 2)
        with pytest.raises(VarMixupError, match=r"several an image keys|'image', 'img'"):
            collate([{"image": torch.rand(3, 4, 4), "img": torch.rand(3, 4, 4), "label": 0}] * 2)
        with pytest.raises(VarMixupError, match=r"'label', 'labels'"):
            collate([{"img": torch.rand(3, 4, 4), "label": 0, "labels": 0}] * 2)
        with pytest.raises(VarMixupError, match=r"label_key='y' is not a key.*'img'"):
            VarMixupCollate(None, num_classes=2, space="input", label_key="y")([{"img": torch.rand(3, 4, 4),
                                                                                "label": 0}] * 2)
        with pytest.raises(VarMixupError, match="image_key must be"):
            VarMixupCollate(None, num_classes=2, space="input", image_key=3.5)

    def test_tuples_unchanged(self):
        ds = [(torch.rand(3, 4, 4), i % 2) for i in range(4)]
        out = VarMixupCollate(None, num_classes=2, space="input", seed=0)(ds)
        assert isinstance(out, tuple) and out[0].shape == (4, 3, 4, 4) and out[1].shape == (4, 2)


class TestDatasetOnDicts:
    def test_encodes_the_image_key(self, hf_dataset, vae, one_thread):
        cached = VarMixupDataset(hf_dataset, vae, batch_size=64, num_workers=2, progress=False)
        assert len(cached) == N
        posterior, label = cached[5]
        assert isinstance(label, int) and label == hf_dataset[5]["label"]
        # The same posteriors as encoding the images directly.
        with torch.no_grad():
            mu, _ = vae.encode(torch.stack([hf_dataset[i]["img"] for i in range(4)]))
        assert torch.allclose(cached.mu[:4], mu.float(), atol=1e-5)
        # Items stay (Posterior, label) tuples: the collate gives (images, targets) tuples.
        loader = DataLoader(cached, batch_size=32, num_workers=2,
                            collate_fn=VarMixupCollate(vae, num_classes=NUM_CLASSES, seed=0))
        x, t = next(iter(loader))
        assert x.shape == (32, 3, 32, 32) and torch.allclose(t.sum(1), torch.ones(32), atol=1e-5)

    def test_explicit_keys_and_errors(self, vae):
        ds = datasets.Dataset.from_dict({"pixels": [torch.rand(3, 32, 32).numpy() for _ in range(4)],
                                         "y": [0, 1, 2, 3]}).with_format("torch")
        with pytest.raises(VarMixupError, match=r"none of 'image', 'img', 'pixel_values'.*'pixels'"):
            VarMixupDataset(ds, vae, progress=False)
        cached = VarMixupDataset(ds, vae, image_key="pixels", label_key="y", progress=False)
        assert cached.labels.tolist() == [0, 1, 2, 3]


def test_mixup_off_in_dict_batches(hf_dataset):
    collate = VarMixupCollate(None, num_classes=NUM_CLASSES, space="input", seed=0, mixup_off_epoch=1)
    items = [hf_dataset[i] for i in range(0, N, N // 16)]  # several classes
    collate.set_epoch(0)
    assert (collate(items)["label"].max(1).values < 1).any()
    collate.set_epoch(1)
    out = collate(items)
    assert torch.equal(out["label"].max(1).values, torch.ones(16))
    assert isinstance(VarMixup(None, num_classes=2, space="input").mixup_enabled, bool)
