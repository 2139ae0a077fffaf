"""timm's ``train.py`` with VarMixup: its ``mixup_args``, the mixup/CutMix switch, and the prefetcher path through
timm's real ``create_loader(..., use_prefetcher=True)``, checking the normalised inputs the model receives."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from _docs import run_snippet
from varmixup_aug import VarMixup, VarMixupError

timm = pytest.importorskip("timm")
vtimm = pytest.importorskip("varmixup_aug.integrations.timm")
from timm.data import create_loader  # noqa: E402

K, SIZE = 4, 8
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def mixup_args(**kw: Any) -> dict[str, Any]:
    """The dict timm's train.py builds from its command line (``--mixup 0.8 --cutmix 1.0 --smoothing 0.1``)."""
    args = dict(mixup_alpha=0.8, cutmix_alpha=1.0, cutmix_minmax=None, prob=1.0, switch_prob=0.5, mode="batch",
                label_smoothing=0.1, num_classes=K)
    return {**args, **kw}


class PILImages(Dataset):
    """A dataset as timm's ``create_loader`` wants it: PIL images and a ``transform`` attribute it sets."""

    def __init__(self, n: int = 8) -> None:
        rng = np.random.default_rng(0)
        self.arrays = rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
        self.labels = [i % K for i in range(n)]
        self.transform: Any = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        image = Image.fromarray(self.arrays[i])
        return (self.transform(image) if self.transform is not None else image), self.labels[i]


def prefetch_loader(dataset: Dataset, collate_fn: Any) -> Any:
    return create_loader(dataset, input_size=(3, SIZE, SIZE), batch_size=4, is_training=False, use_prefetcher=True,
                         collate_fn=collate_fn, num_workers=0, crop_pct=1.0, mean=MEAN, std=STD,
                         device=torch.device("cpu"), persistent_workers=False)


def normalised(uint8_images: Tensor) -> Tensor:
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) * 255 for v in (MEAN, STD))
    return (uint8_images.float() - mean) / std


@pytest.fixture(scope="module", autouse=True)
def _threads(one_thread: None) -> None:
    return None


# ---- mixup_args -------------------------------------------------------------------------------------------------

def test_from_timm_args_maps_train_py_dict() -> None:
    mixer = VarMixup.from_timm_args(None, **mixup_args(cutmix_alpha=0.0), space="input", seed=0)
    assert (mixer.alpha, mixer.num_classes, mixer.label_smoothing, mixer.lam_per_sample, mixer.prob) == (
        0.8, K, 0.1, False, 1.0)
    elem = VarMixup.from_timm_args(None, **mixup_args(cutmix_alpha=0.0, mode="elem", prob=0.5), space="input")
    assert elem.lam_per_sample and elem.prob == 0.5
    x, t = mixer(torch.rand(4, 3, SIZE, SIZE), torch.arange(4))
    assert t.shape == (4, K) and torch.allclose(t.sum(1), torch.ones(4))


@pytest.mark.parametrize(("change", "match"), [
    (dict(), r"cutmix_alpha=1\.0, cutmix_minmax=None: VarMixup has no CutMix half; .*VarMixupCutMix"),
    (dict(cutmix_alpha=0.0, cutmix_minmax=(0.2, 0.8)), r"cutmix_minmax=\(0\.2, 0\.8\): VarMixup has no CutMix"),
    (dict(cutmix_alpha=0.0, mode="pair"), r"mode must be 'batch' or 'elem' for VarMixup, got 'pair'"),
    (dict(cutmix_alpha=0.0, prob=0.5), r"prob=0\.5 with mode='batch'.*mode='elem'"),
    (dict(cutmix_alpha=0.0, mixup_alpha=0.0), r"mixup_alpha must be > 0 for VarMixup"),
    (dict(cutmix_alpha=0.0, multi_label=True), r"multi_label=True .* not supported"),
    (dict(cutmix_alpha=0.0, alpha=0.4), r"alpha is set by timm's mixup_alpha here"),
    (dict(cutmix_alpha=-1.0), r"cutmix_alpha must be a number >= 0"),
])
def test_from_timm_args_refusals_name_the_argument(change: dict[str, Any], match: str) -> None:
    with pytest.raises(VarMixupError, match=match):
        VarMixup.from_timm_args(None, **mixup_args(**change), space="input")


# ---- the mixup/CutMix switch ------------------------------------------------------------------------------------

def test_switch_prob_and_prob_are_honoured() -> None:
    mixer = vtimm.VarMixupCutMix(None, **mixup_args(switch_prob=0.3, prob=0.8), space="input", seed=0)
    x, y = torch.rand(4, 3, SIZE, SIZE), torch.arange(4)
    given = x.clone()
    seen = {"cutmix": 0, "varmixup": 0, "none": 0}
    for _ in range(400):
        images, targets = mixer(x, y)
        seen[mixer.last_choice] += 1
        pasted = ((images == x) | (images == x.flip(0))).all()  # timm's CutMix pastes from the flipped batch
        assert bool(pasted) == (mixer.last_choice in ("cutmix", "none"))
        if mixer.last_choice == "none":
            assert torch.equal(images, x) and torch.allclose(targets.max(1).values, torch.full((4,), 0.925))
    # 400 batches: 80 % mixed, 30 % of those CutMix; binomial bounds of 4 standard deviations.
    assert abs(seen["none"] / 400 - 0.2) < 4 * (0.2 * 0.8 / 400) ** 0.5
    assert abs(seen["cutmix"] / 400 - 0.24) < 4 * (0.24 * 0.76 / 400) ** 0.5
    assert torch.equal(x, given)  # timm's CutMix works in place: it got a copy


def test_torchvision_cutmix_as_the_other_half() -> None:
    from torchvision.transforms import v2

    mixer = vtimm.VarMixupCutMix(None, **mixup_args(switch_prob=1.0), cutmix=v2.CutMix(num_classes=K),
                                 space="input", seed=0)
    images, targets = mixer(torch.rand(4, 3, SIZE, SIZE), torch.arange(4))
    assert mixer.last_choice == "cutmix" and targets.shape == (4, K)


def test_switch_refusals() -> None:
    with pytest.raises(VarMixupError, match=r"mode must be 'batch' for VarMixupCutMix"):
        vtimm.VarMixupCutMix(None, **mixup_args(mode="elem"), space="input")
    with pytest.raises(VarMixupError, match=r"cutmix must be a callable"):
        vtimm.VarMixupCutMix(None, **mixup_args(), cutmix="cutmix", space="input")


# ---- the prefetcher path ----------------------------------------------------------------------------------------

def test_prefetcher_inputs_match_timms_own_path_when_unmixed() -> None:
    ds = PILImages()
    collate = vtimm.VarMixupFastCollate(None, **mixup_args(), space="input", seed=0)
    loader = prefetch_loader(ds, collate)
    loader.mixup_enabled = False  # what train.py does at --mixup-off-epoch, through PrefetchLoader
    assert collate.mixup_enabled is False
    ours = [x for x, _ in loader]
    timms = [x for x, _ in prefetch_loader(PILImages(), None)]  # timm's fast_collate, no mixing
    expected = normalised(torch.from_numpy(ds.arrays).permute(0, 3, 1, 2))
    for a, b, e in zip(ours, timms, expected.split(4), strict=True):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, e)


def test_prefetcher_inputs_are_the_mixed_pixels_normalised(tiny_vae: Any) -> None:
    ds = PILImages()
    loader = prefetch_loader(ds, vtimm.VarMixupFastCollate(tiny_vae, **mixup_args(cutmix_alpha=0.0), seed=0))
    assert loader.mixup_enabled is True
    replay = vtimm.VarMixupCutMix(tiny_vae, **mixup_args(cutmix_alpha=0.0), seed=0)  # the same stream, in floats
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (MEAN, STD))
    for step, (x, t) in enumerate(loader):
        pixels = torch.from_numpy(ds.arrays[4 * step:4 * step + 4]).permute(0, 3, 1, 2).float() / 255
        mixed, targets = replay(pixels, torch.tensor(ds.labels[4 * step:4 * step + 4]))
        # What the model gets, taken back to pixels, is VarMixup's output (up to uint8 rounding), not x / 255.
        torch.testing.assert_close(x * std + mean, mixed, atol=0.5 / 255 + 1e-5, rtol=0)
        torch.testing.assert_close(t, targets)
        assert float((mixed - pixels).abs().max()) > 0.1  # really mixed


def test_prefetcher_collate_refusals() -> None:
    with pytest.raises(VarMixupError, match=r"input_normalization=.*PrefetchLoader normalises after it"):
        vtimm.VarMixupFastCollate(None, **mixup_args(), space="input", input_normalization=(MEAN, STD))
    collate = vtimm.VarMixupFastCollate(None, **mixup_args(), space="input")
    with pytest.raises(VarMixupError, match=r"takes timm's prefetcher items, uint8 \(C, H, W\) images, got "
                                            r"torch.float32.*use VarMixupCollate"):
        collate([(torch.rand(3, SIZE, SIZE), 0), (torch.rand(3, SIZE, SIZE), 1)])


def test_doc_snippets_both_paths(tiny_vae: Any) -> None:
    args = type("Args", (), dict(prefetcher=True, mixup_off_epoch=1))()
    ns = run_snippet("timm-prefetcher", dict(vae=tiny_vae, mixup_args=mixup_args(), args=args,
                                             create_loader=lambda ds, **kw: prefetch_loader(ds, kw["collate_fn"]),
                                             dataset_train=PILImages()))
    x, t = next(iter(ns["loader_train"]))
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (MEAN, STD))
    pixels = x * std + mean  # pixels in [0, 1]; a float collate here would give x / 255, all below 0.004
    assert t.shape == (4, K) and float(pixels.min()) > -1e-4 and 0.1 < float(pixels.max()) < 1 + 1e-4
    ns["loader_train"].mixup_enabled = False
    assert ns["collate_fn"].mixup_enabled is False

    ns = run_snippet("timm-no-prefetcher", dict(vae=tiny_vae, mixup_args=mixup_args(), mean=MEAN, std=STD))
    pixels = torch.rand(4, 3, SIZE, SIZE)
    x, t = ns["mixup_fn"]((pixels - mean) / std, torch.arange(4))
    assert t.shape == (4, K) and bool(((x * std + mean) > -1e-4).all() and ((x * std + mean) < 1 + 1e-4).all())
