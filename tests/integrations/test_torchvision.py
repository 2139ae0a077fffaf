"""torchvision's documented MixUp/CutMix recipe with VarMixup in ``v2.RandomChoice``: in a ``collate_fn`` with 2
workers and after the loader; the input structures of ``v2.MixUp``, ``tv_tensors.Image`` kept, label dtypes."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset, default_collate
from torchvision import tv_tensors
from torchvision.transforms import v2

from _docs import run_snippet
from varmixup_aug import MixupParams, VarMixup, VarMixupError

K, SIZE = 10, 8


def batch(n: int = 8, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, SIZE, SIZE, generator=g), torch.arange(n) % K


def fixed_params(n: int = 8) -> MixupParams:
    return MixupParams(lam=torch.linspace(0.2, 0.9, n), index=torch.arange(n).roll(1),
                       applied=torch.ones(n, dtype=torch.bool), noise_seed=3)


def is_cutmix(images: Tensor, x: Tensor) -> bool:
    """torchvision's CutMix pastes a box from the batch rolled by one: every pixel is the image's or its partner's."""
    return bool(((images == x) | (images == x.roll(1, 0))).all())


@pytest.fixture(scope="module", autouse=True)
def _threads(one_thread: None) -> None:
    return None


def test_structures_give_the_same_mix(tiny_vae: Any) -> None:
    mixer = VarMixup(tiny_vae, num_classes=K)
    x, y = batch()
    ref_x, ref_t = mixer(x, y, params=fixed_params())
    for given, kind in (((x, y), tuple), ([x, y], list)):
        out = mixer(given, params=fixed_params())
        assert type(out) is kind
        assert torch.equal(out[0], ref_x) and torch.equal(out[1], ref_t)
    ids = torch.arange(8) + 100
    out = mixer({"image": x, "labels": y, "id": ids}, params=fixed_params())
    assert list(out) == ["image", "labels", "id"] and out["id"] is ids
    assert torch.equal(out["image"], ref_x) and torch.equal(out["labels"], ref_t)


def test_tv_image_is_kept_and_label_dtypes_followed(tiny_vae: Any) -> None:
    mixer = VarMixup(tiny_vae, num_classes=K, seed=0)
    x, y = batch()
    images, targets = mixer(tv_tensors.Image(x), y)
    assert type(images) is tv_tensors.Image and targets.dtype == torch.float32
    mixer.mixup_enabled = False  # the unmixed path too
    images, _ = mixer(tv_tensors.Image(x), y)
    assert type(images) is tv_tensors.Image and torch.equal(images.as_subclass(Tensor), x)
    mixer.mixup_enabled = True
    one_hot = torch.nn.functional.one_hot(y, K)
    for dtype in (torch.float64, torch.float16, torch.bfloat16):
        _, targets = mixer(x, one_hot.to(dtype))
        assert targets.dtype == dtype and torch.allclose(targets.double().sum(1), torch.ones(8, dtype=torch.float64),
                                                         atol=1e-2)
    _, targets = mixer(x.double(), y)
    assert targets.dtype == torch.float64


def test_random_choice_after_the_loader(tiny_vae: Any) -> None:
    cutmix_or_varmixup = v2.RandomChoice([v2.CutMix(num_classes=K), VarMixup(tiny_vae, num_classes=K, seed=0)])
    x, y = batch()
    picked = {"cutmix": 0, "varmixup": 0}
    torch.manual_seed(0)
    for call in range(12):
        args = ((x, y),) if call % 2 else (x, y)  # one tuple, as torchvision's transforms take it, or two arguments
        images, targets = cutmix_or_varmixup(*args)
        picked["cutmix" if is_cutmix(images, x) else "varmixup"] += 1
        assert images.shape == x.shape and targets.shape == (8, K) and torch.allclose(targets.sum(1), torch.ones(8))
    assert picked["cutmix"] > 0 and picked["varmixup"] > 0, picked


def test_doc_snippet_in_a_collate_fn_with_two_workers(tiny_vae: Any) -> None:
    x, y = batch(64)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * SIZE * SIZE, K))
    torch.manual_seed(0)  # the workers' seeds, so RandomChoice's picks are the same on every run
    ns = run_snippet("torchvision", dict(vae=tiny_vae, train_set=TensorDataset(x, y), model=model, torch=torch,
                                          DataLoader=DataLoader, default_collate=default_collate))
    assert torch.isfinite(ns["loss"])
    kinds = []
    for images, targets in ns["loader"]:
        assert images.shape == (8, 3, SIZE, SIZE) and targets.shape == (8, K)
        assert torch.allclose(targets.sum(1), torch.ones(8))
        # CutMix: every pixel is some training image's pixel at that place; VarMixup decodes new pixels.
        kinds.append("cutmix" if bool((images.unsqueeze(1) == x.unsqueeze(0)).any(1).all()) else "varmixup")
    assert len(kinds) == 8 and set(kinds) == {"cutmix", "varmixup"}, kinds


def test_labels_are_required() -> None:
    mixer = VarMixup(None, num_classes=K, space="input")
    x, _ = batch()
    with pytest.raises(VarMixupError, match=r"VarMixup needs the labels too: .* got a Tensor alone"):
        mixer(x)
    with pytest.raises(VarMixupError, match=r"got a tuple of length 3 alone"):
        mixer((x, x, x))
    with pytest.raises(VarMixupError, match=r"dict dataset items need a label key"):
        mixer({"image": x})
