"""Robustness evaluation of a classifier: calibration, common corruptions, FGSM/PGD with and without MI.

Everything here takes a classifier that maps pixel-space images ``(B, C, H, W)`` in ``[0, 1]``
to logits ``(B, K)``; a model that needs input normalisation must do it inside (as
:class:`~varmixup_aug._models.PreActResNet` does), so attacks and Mixup Inference act on pixels.

- :func:`expected_calibration_error`, :func:`calibration_bins`, :func:`reliability_diagram`;
- :data:`CORRUPTIONS`, :func:`corruption_transform`, :func:`corrupt`: albumentations corruptions
  at 3 severities, deterministic under a seed;
- :func:`adversarial_examples`: FGSM, PGD and EOT-PGD from ``torchattacks``;
- :func:`select_mi_lam`: choose MI's ``lam`` on held-out training images;
- :class:`EvalConfig`, :func:`evaluate_robustness`, :func:`evaluate_checkpoint`: the whole report;
- :func:`markdown_table`: the results as a markdown table.

Randomness: only the torch RNG and seeds. Albumentations seeds and the attacks' random starts are
derived from ``seed`` (or, with ``seed=None``, drawn from torch's global RNG), so a run repeats
exactly under the same seed and batch order.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .._checks import check_int, check_number, check_seed
from .._errors import VarMixupError
from .._mi import MIPredictor
from .._random import mix_seed
from .._tensors import module_device, resolve_device, to_float_images
from .data import import_albumentations

__all__ = [
    "CORRUPTIONS",
    "SEVERITIES",
    "EvalConfig",
    "adversarial_examples",
    "calibration_bins",
    "corrupt",
    "corruption_transform",
    "eps_key",
    "evaluate_checkpoint",
    "evaluate_robustness",
    "expected_calibration_error",
    "markdown_table",
    "predict_logits",
    "reliability_diagram",
    "select_mi_lam",
]

SEVERITIES = (1, 2, 3)

# Parameters per severity 1, 2, 3; fixed values (no ranges), so only the inherently random parts
# (noise samples, blur direction, fog particles, elastic field) vary, and those follow the seed.
_CORRUPTION_LEVELS: dict[str, tuple[Any, ...]] = {
    "gaussian_noise": (0.04, 0.07, 0.10),  # noise std, fraction of the pixel range
    "shot_noise": (0.005, 0.015, 0.03),  # ShotNoise scale (1 / photon count)
    "iso_noise": ((0.01, 0.2), (0.03, 0.35), (0.05, 0.5)),  # (colour shift, intensity)
    "gaussian_blur": (0.5, 0.75, 1.0),  # sigma in pixels
    "motion_blur": (3, 5, 7),  # kernel size in pixels, random direction
    "jpeg_compression": (60, 35, 20),  # JPEG quality
    "brightness": (0.1, 0.2, 0.3),  # added to every pixel, fraction of the range
    "contrast": (0.6, 0.4, 0.2),  # contrast factor (blend towards the mean grey)
    "fog": (0.05, 0.1, 0.15),  # RandomFog alpha_coef at fog_coef 0.8
    "pixelate": (0.5, 0.375, 0.25),  # downscale factor (area down, nearest up)
    "elastic_transform": (10.0, 20.0, 30.0),  # ElasticTransform alpha at sigma 4
}
CORRUPTIONS: tuple[str, ...] = tuple(_CORRUPTION_LEVELS)

_DEFAULT_EPS = (2 / 255, 4 / 255, 8 / 255)
_PIXEL_TOLERANCE = 1e-4


# ---- helpers ----------------------------------------------------------------------------------


def _ranges(n: int, batch_size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, batch_size):
        yield start, min(n, start + batch_size)


@contextlib.contextmanager
def _seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Run with torch's global RNG seeded (torchattacks draws its random start from it), then restore it."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _as_float_images(images: Any, name: str = "images") -> Tensor:
    if not isinstance(images, Tensor):
        raise VarMixupError(f"{name} must be a tensor (N, C, H, W), got {type(images).__name__}")
    if images.ndim != 4 or images.shape[0] < 1:
        raise VarMixupError(f"{name} must have shape (N, C, H, W) with N >= 1, got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return to_float_images(images)
    if not images.is_floating_point():
        raise VarMixupError(f"{name} must be float in [0, 1] or uint8, got {images.dtype}")
    if not torch.isfinite(images).all():
        raise VarMixupError(f"{name} contain NaN or Inf")
    low, high = float(images.min()), float(images.max())
    if low < -_PIXEL_TOLERANCE or high > 1 + _PIXEL_TOLERANCE:
        raise VarMixupError(
            f"{name} must lie in pixel space [0, 1], got values in [{low:.3g}, {high:.3g}]; pass unnormalised "
            "images and put the normalisation inside the model"
        )
    return images


def _as_labels(labels: Any, n: int, name: str = "labels") -> Tensor:
    if not isinstance(labels, Tensor) or labels.shape != (n,) or labels.is_floating_point() or labels.dtype == torch.bool:
        got = f"{tuple(labels.shape)} {labels.dtype}" if isinstance(labels, Tensor) else type(labels).__name__
        raise VarMixupError(f"{name} must be an integer tensor of shape (N,) = ({n},), got {got}")
    return labels.long()


def eps_key(eps: float) -> str:
    """``2/255`` for ``eps = 2/255``; other values as ``%g``. Used as JSON keys."""
    r = eps * 255.0
    if abs(r - round(r)) < 1e-6:
        return f"{int(round(r))}/255"
    return f"{eps:.6g}"


# ---- calibration ------------------------------------------------------------------------------


def _check_conf_correct(confidences: Any, correct: Any, n_bins: Any) -> tuple[Tensor, Tensor]:
    if not isinstance(confidences, Tensor) or confidences.ndim != 1 or confidences.numel() == 0:
        raise VarMixupError(
            f"confidences must be a non-empty 1-D tensor (N,), got "
            f"{tuple(confidences.shape) if isinstance(confidences, Tensor) else type(confidences).__name__}"
        )
    if not isinstance(correct, Tensor) or correct.shape != confidences.shape:
        raise VarMixupError(
            f"correct must be a tensor of the same shape as confidences {tuple(confidences.shape)}, got "
            f"{tuple(correct.shape) if isinstance(correct, Tensor) else type(correct).__name__}"
        )
    check_int("n_bins", n_bins)
    conf = confidences.detach().to("cpu", torch.float64)
    if not torch.isfinite(conf).all() or float(conf.min()) < 0 or float(conf.max()) > 1:
        raise VarMixupError("confidences must lie in [0, 1] (the top softmax probability of each prediction)")
    return conf, correct.detach().to("cpu", torch.float64)


def calibration_bins(confidences: Tensor, correct: Tensor, *, n_bins: int = 15) -> dict[str, Tensor]:
    """Per-bin statistics of a reliability diagram, with ``n_bins`` equal-width bins on ``[0, 1]``.

    Bin ``b`` holds the predictions with confidence in ``(b / n_bins, (b + 1) / n_bins]`` (the
    first bin also holds confidence 0).

    Args:
        confidences: ``(N,)`` top-class probabilities.
        correct: ``(N,)`` bool or 0/1, whether each prediction is right.
        n_bins: number of bins.

    Returns:
        ``{"edges": (n_bins + 1,), "count": (n_bins,), "accuracy": (n_bins,), "confidence": (n_bins,)}``,
        float64; accuracy and confidence are the bin means (0 for empty bins).
    """
    conf, corr = _check_conf_correct(confidences, correct, n_bins)
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64)
    index = (torch.ceil(conf * n_bins).long() - 1).clamp(0, n_bins - 1)
    count = torch.bincount(index, minlength=n_bins).double()
    acc_sum = torch.bincount(index, weights=corr, minlength=n_bins)
    conf_sum = torch.bincount(index, weights=conf, minlength=n_bins)
    safe = count.clamp_min(1)
    return {"edges": edges, "count": count, "accuracy": acc_sum / safe, "confidence": conf_sum / safe}


def expected_calibration_error(confidences: Tensor, correct: Tensor, *, n_bins: int = 15) -> float:
    """Expected calibration error ``sum_b (n_b / N) |acc_b - conf_b|`` over ``n_bins`` equal-width bins.

    Args:
        confidences: ``(N,)`` top-class probabilities in ``[0, 1]``.
        correct: ``(N,)`` bool or 0/1.
        n_bins: number of bins (15 as in Guo et al., 2017).

    Example:
        >>> import torch
        >>> conf = torch.tensor([0.9, 0.9, 0.6, 0.6])
        >>> round(expected_calibration_error(conf, torch.tensor([True, False, True, False])), 3)
        0.25
    """
    bins = calibration_bins(confidences, correct, n_bins=n_bins)
    gap = (bins["accuracy"] - bins["confidence"]).abs()
    return float((bins["count"] * gap).sum() / bins["count"].sum())


def reliability_diagram(
    confidences: Tensor, correct: Tensor, path: str | os.PathLike[str], *, n_bins: int = 15,
    title: str | None = None,
) -> Path:
    """Write a reliability diagram (accuracy per confidence bin, and the confidence histogram) as a PNG.

    Uses matplotlib's Agg canvas directly, so it works headless and leaves the global backend alone.

    Args:
        confidences, correct, n_bins: as in :func:`calibration_bins`.
        path: output ``.png`` file; parent folders are created.
        title: figure title; the ECE is appended.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    bins = calibration_bins(confidences, correct, n_bins=n_bins)
    ece = expected_calibration_error(confidences, correct, n_bins=n_bins)
    centers = ((bins["edges"][:-1] + bins["edges"][1:]) / 2).numpy()
    width = 1.0 / n_bins
    count, acc, conf = bins["count"].numpy(), bins["accuracy"].numpy(), bins["confidence"].numpy()
    nonempty = count > 0

    fig = Figure(figsize=(4.8, 6.0), dpi=110)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.bar(centers[nonempty], acc[nonempty], width=width, edgecolor="black", color="tab:blue", label="accuracy")
    top.bar(centers[nonempty], (conf - acc)[nonempty], bottom=acc[nonempty], width=width, edgecolor="tab:red",
            color="tab:red", alpha=0.3, hatch="//", label="gap to confidence")
    top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left", fontsize=8)
    top.set_title(f"{title + ': ' if title else ''}ECE = {100 * ece:.2f}% ({n_bins} bins)", fontsize=10)
    bottom.bar(centers, count / max(1.0, count.sum()), width=width, edgecolor="black", color="tab:gray")
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("fraction")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path))
    return path


# ---- corruptions ------------------------------------------------------------------------------


def corruption_transform(name: str, severity: int) -> Any:
    """The albumentations transform (``p=1``) of corruption ``name`` at ``severity`` 1, 2 or 3.

    The corruptions (parameters per severity in ``_CORRUPTION_LEVELS``): ``gaussian_noise``,
    ``shot_noise``, ``iso_noise``, ``gaussian_blur``, ``motion_blur``, ``jpeg_compression``,
    ``brightness``, ``contrast``, ``fog``, ``pixelate``, ``elastic_transform``. They act on
    ``uint8`` HWC RGB images.
    """
    if name not in _CORRUPTION_LEVELS:
        raise VarMixupError(f"corruption must be one of {list(CORRUPTIONS)}, got {name!r}")
    if severity not in SEVERITIES:
        raise VarMixupError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    A = import_albumentations()
    import cv2

    v = _CORRUPTION_LEVELS[name][severity - 1]
    builders: dict[str, Callable[[], Any]] = {
        "gaussian_noise": lambda: A.GaussNoise(std_range=(v, v), per_channel=True, p=1.0),
        "shot_noise": lambda: A.ShotNoise(scale_range=(v, v), p=1.0),
        "iso_noise": lambda: A.ISONoise(color_shift=(v[0], v[0]), intensity=(v[1], v[1]), p=1.0),
        "gaussian_blur": lambda: A.GaussianBlur(blur_limit=0, sigma_limit=(v, v), p=1.0),
        "motion_blur": lambda: A.MotionBlur(blur_limit=(v, v), p=1.0),
        "jpeg_compression": lambda: A.ImageCompression(compression_type="jpeg", quality_range=(v, v), p=1.0),
        "brightness": lambda: A.RandomBrightnessContrast(brightness_limit=(v, v), contrast_limit=(0.0, 0.0), p=1.0),
        "contrast": lambda: A.ColorJitter(brightness=(1.0, 1.0), contrast=(v, v), saturation=(1.0, 1.0),
                                          hue=(0.0, 0.0), p=1.0),
        "fog": lambda: A.RandomFog(fog_coef_range=(0.8, 0.8), alpha_coef=v, p=1.0),
        "pixelate": lambda: A.Downscale(scale_range=(v, v), p=1.0, interpolation_pair={
            "downscale": cv2.INTER_AREA, "upscale": cv2.INTER_NEAREST}),
        "elastic_transform": lambda: A.ElasticTransform(alpha=v, sigma=4.0, border_mode=cv2.BORDER_REFLECT_101,
                                                        p=1.0),
    }
    return builders[name]()


def corrupt(images: Tensor, name: str, severity: int, *, seed: int | None = 0) -> Tensor:
    """Apply corruption ``name`` at ``severity`` (1-3) to a batch, reproducibly.

    Images are quantised to ``uint8`` (lossless for images decoded from 8-bit files), corrupted
    one by one with albumentations, and returned in the input's dtype in ``[0, 1]``.

    Seeding: image ``i`` is corrupted with an albumentations seed derived from
    ``(seed, name, severity, i)``, so the result depends only on the seed and the image's
    position: ``corrupt(x[:k]) == corrupt(x)[:k]``. ``seed=None`` draws the seed from torch's
    global RNG (reproducible under ``torch.manual_seed``).

    Args:
        images: ``(B, 3, H, W)`` float in ``[0, 1]`` (or ``uint8``).
        name: one of :data:`CORRUPTIONS`.
        severity: 1, 2 or 3.
        seed: int seed, or ``None`` (see above).

    Returns:
        ``(B, 3, H, W)``, same dtype (float32 for ``uint8`` input) and device, values in ``[0, 1]``.

    Example:
        >>> import torch
        >>> x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        >>> y = corrupt(x, "gaussian_noise", 2, seed=0)
        >>> y.shape, y.dtype, bool(torch.equal(y, corrupt(x, "gaussian_noise", 2, seed=0)))
        (torch.Size([2, 3, 32, 32]), torch.float32, True)
    """
    import numpy as np

    x = _as_float_images(images)
    if x.shape[1] != 3:
        raise VarMixupError(f"images must be RGB (B, 3, H, W) for the corruptions, got {tuple(x.shape)}")
    if check_seed(seed) is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    A = import_albumentations()
    compose = A.Compose([corruption_transform(name, severity)], seed=0)
    base = mix_seed(seed, "corruption", name, severity)
    pixels = (x.detach().to("cpu", torch.float32) * 255.0).round_().clamp_(0, 255).to(torch.uint8)
    hwc = pixels.permute(0, 2, 3, 1).contiguous().numpy()
    out = np.empty_like(hwc)
    for i in range(hwc.shape[0]):
        compose.set_random_seed((base + i) % 2**32)
        out[i] = compose(image=hwc[i])["image"]
    result = torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)
    dtype = images.dtype if images.is_floating_point() else torch.float32
    return result.to(device=images.device, dtype=dtype)


# ---- predictions and attacks ------------------------------------------------------------------


@torch.no_grad()
def predict_logits(model: nn.Module, images: Tensor, *, batch_size: int = 500) -> Tensor:
    """Logits ``(N, K)`` (float32, CPU) of ``model`` (put in eval mode) on ``images`` ``(N, C, H, W)`` in ``[0, 1]``."""
    check_int("batch_size", batch_size)
    x = _as_float_images(images)
    device = module_device(model)
    model.eval()
    return torch.cat([model(x[s:e].to(device)).float().cpu() for s, e in _ranges(x.shape[0], batch_size)])


def _mi_correct(mi: MIPredictor, images: Tensor, labels: Tensor, batch_size: int) -> Tensor:
    device = mi.pool_images.device
    out = [mi.predict(images[s:e].to(device)).cpu() == labels[s:e] for s, e in _ranges(images.shape[0], batch_size)]
    return torch.cat(out)


def _accuracy_from_logits(logits: Tensor, labels: Tensor) -> float:
    return float((logits.argmax(1) == labels).double().mean())


_ATTACKS = ("fgsm", "pgd", "eotpgd", "eotfgsm")


def adversarial_examples(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    attack: str = "pgd",
    eps: float,
    steps: int = 10,
    step_size: float | None = None,
    eot_iter: int = 5,
    batch_size: int = 250,
    seed: int = 0,
    progress: bool = False,
    desc: str | None = None,
) -> Tensor:
    """L-inf adversarial examples from ``torchattacks``, batched and seeded.

    - ``"fgsm"``: ``torchattacks.FGSM(model, eps)``;
    - ``"pgd"``: ``torchattacks.PGD`` with a random start, ``steps`` steps of ``step_size``;
    - ``"eotpgd"``: ``torchattacks.EOTPGD``, the same with the gradient summed over ``eot_iter``
      forward passes per step (for randomised models such as :class:`MIPredictor`);
    - ``"eotfgsm"``: FGSM with the EOT gradient, as ``torchattacks.EOTPGD`` with one step of size
      ``eps`` and no random start (``steps`` and ``step_size`` are ignored).

    ``model`` is any module on pixel-space inputs in ``[0, 1]`` (a classifier, or an
    :class:`MIPredictor` for an adaptive attack); its loss is ``CrossEntropyLoss`` on its output.
    The random start of batch ``i`` uses torch's global RNG seeded from ``(seed, i)``, in a forked
    RNG state, so the result is reproducible and the caller's RNG is left untouched.

    Args:
        model: the attacked module; ``(B, C, H, W) -> (B, K)``.
        images: ``(N, C, H, W)`` in ``[0, 1]``.
        labels: ``(N,)`` true classes.
        attack: ``"fgsm"``, ``"pgd"``, ``"eotpgd"`` or ``"eotfgsm"``.
        eps: L-inf radius, >= 0 (e.g. ``8/255``).
        steps: PGD steps.
        step_size: PGD step; ``None`` uses ``eps / 4``.
        eot_iter: EOT samples per step (``"eotpgd"`` only).
        batch_size: images per attack call.
        seed: seed of the random starts.
        progress, desc: tqdm bar.

    Returns:
        ``(N, C, H, W)`` float32 adversarial images on the CPU, within ``eps`` of ``images``, in ``[0, 1]``.
    """
    import torchattacks

    if attack not in _ATTACKS:
        raise VarMixupError(f"attack must be one of {_ATTACKS}, got {attack!r}")
    check_number("eps", eps, low=0, requirement="be a finite number >= 0 (L-inf radius in [0, 1] pixel units)")
    if eps > 1:
        raise VarMixupError(f"eps must be in pixel units of [0, 1] images, got {eps!r}; did you mean {eps}/255?")
    check_int("steps", steps)
    check_int("eot_iter", eot_iter)
    check_int("batch_size", batch_size)
    check_number("step_size", step_size, low=0, allow_none=True, requirement="be a finite number >= 0 or None (eps / 4)")
    if step_size is None:
        step_size = eps / 4
    x = _as_float_images(images)
    y = _as_labels(labels, x.shape[0])
    device = module_device(model)
    if attack == "fgsm":
        atk = torchattacks.FGSM(model, eps=float(eps))
    elif attack == "pgd":
        atk = torchattacks.PGD(model, eps=float(eps), alpha=float(step_size), steps=steps, random_start=True)
    elif attack == "eotpgd":
        atk = torchattacks.EOTPGD(model, eps=float(eps), alpha=float(step_size), steps=steps, eot_iter=eot_iter,
                                  random_start=True)
    else:
        atk = torchattacks.EOTPGD(model, eps=float(eps), alpha=float(eps), steps=1, eot_iter=eot_iter,
                                  random_start=False)
    atk.set_device(device)
    out = []
    ranges = list(_ranges(x.shape[0], batch_size))
    for i, (s, e) in enumerate(tqdm(ranges, desc=desc or attack, unit="batch", disable=not progress, leave=False)):
        with _seeded_global_rng(mix_seed(seed, "attack", attack, i), device), torch.enable_grad():
            adv = atk(x[s:e].to(device, torch.float32), y[s:e].to(device))
        out.append(adv.detach().float().cpu())
    return torch.cat(out)


# ---- lam selection ----------------------------------------------------------------------------

_LAM_RULE = (
    "for each MI mode, among the lam in the grid whose MI clean accuracy on the held-out images is at least "
    "the plain model's clean accuracy minus max_clean_drop, pick the one with the highest MI accuracy under "
    "oblivious PGD at eps (ties: the larger lam, i.e. the milder mix); if no lam meets the cap, pick the lam "
    "with the highest MI clean accuracy"
)


def select_mi_lam(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    pool: tuple[Tensor, Tensor],
    *,
    modes: Sequence[str] = ("pl", "ol"),
    grid: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    eps: float = 2 / 255,
    steps: int = 10,
    step_size: float | None = None,
    max_clean_drop: float = 0.05,
    num_samples: int = 30,
    batch_size: int = 250,
    mi_batch_size: int = 50,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Choose Mixup Inference's ``lam`` per mode on held-out *training* images (never the test split).

    Rule: for each mode, among the ``lam`` in ``grid`` whose MI clean accuracy is at least the plain
    model's clean accuracy minus ``max_clean_drop``, take the one with the highest MI accuracy under
    oblivious PGD (``steps`` steps of ``step_size``, default ``eps / 4``) at ``eps`` (ties: the
    larger ``lam``); if none meets the cap, take the ``lam`` with the highest MI clean accuracy.
    The adversarial images are made once against the plain model (oblivious threat model), so
    every ``lam`` is scored on the same images; each ``(mode, lam)`` uses MI draws from its own seed.

    Args:
        model: classifier on pixel-space inputs.
        images: ``(N, C, H, W)`` held-out training images in ``[0, 1]``.
        labels: ``(N,)``.
        pool: ``(pool_images (P, C, H, W), pool_labels (P,))`` clean training images for MI (disjoint
            from ``images``).
        modes: subset of ``("pl", "ol")``.
        grid: candidate ``lam`` values in ``(0, 1]``.
        eps, steps, step_size: the PGD attack.
        max_clean_drop: the cap on clean-accuracy loss, in ``[0, 1]``.
        num_samples: MI rounds per input.
        batch_size: attack batch; mi_batch_size: MI inputs per call.
        seed: seed of the attack and the MI draws.
        progress: tqdm bars.

    Returns:
        ``{"rule", "eps", "steps", "max_clean_drop", "num_samples", "n_images", "base_clean_accuracy",
        "base_pgd_accuracy", "pl": {"lam", "constraint_met", "grid": [{"lam", "clean_accuracy",
        "pgd_accuracy"}, ...]}, "ol": {...}}``.
    """
    modes = tuple(modes)
    if not modes or any(m not in ("pl", "ol") for m in modes):
        raise VarMixupError(f"modes must be a non-empty subset of ('pl', 'ol'), got {modes!r}")
    grid_t = tuple(grid)
    if not grid_t or any(not isinstance(v, (int, float)) or not 0 < v <= 1 for v in grid_t):
        raise VarMixupError(f"grid must be a non-empty sequence of lam values in (0, 1], got {grid!r}")
    check_number("max_clean_drop", max_clean_drop, low=0, high=1)
    x = _as_float_images(images)
    y = _as_labels(labels, x.shape[0])
    num_classes = _num_classes(model, x)
    pool_x, pool_y = _check_pool(pool)
    model.eval()
    base_clean = _accuracy_from_logits(predict_logits(model, x, batch_size=batch_size), y)
    adv = adversarial_examples(model, x, y, attack="pgd", eps=eps, steps=steps, step_size=step_size,
                               batch_size=batch_size, seed=mix_seed(seed, "select", "pgd"), progress=progress,
                               desc="lam selection: PGD")
    base_adv = _accuracy_from_logits(predict_logits(model, adv, batch_size=batch_size), y)
    result: dict[str, Any] = {
        "rule": _LAM_RULE, "eps": eps, "eps_key": eps_key(eps), "steps": steps,
        "step_size": eps / 4 if step_size is None else step_size, "max_clean_drop": max_clean_drop,
        "num_samples": num_samples, "n_images": int(x.shape[0]), "grid_values": list(grid_t),
        "base_clean_accuracy": base_clean, "base_pgd_accuracy": base_adv,
    }
    bar = tqdm(total=len(modes) * len(grid_t), desc="lam selection: MI", unit="lam", disable=not progress, leave=False)
    for mode in modes:
        rows = []
        for lam in grid_t:
            mi = MIPredictor(model, (pool_x, pool_y), num_classes=num_classes, mode=mode, num_samples=num_samples,
                             lam=float(lam), seed=mix_seed(seed, "select", mode, float(lam)) % 2**62)
            clean = float(_mi_correct(mi, x, y, mi_batch_size).double().mean())
            robust = float(_mi_correct(mi, adv, y, mi_batch_size).double().mean())
            rows.append({"lam": float(lam), "clean_accuracy": clean, "pgd_accuracy": robust})
            bar.update(1)
        ok = [r for r in rows if r["clean_accuracy"] >= base_clean - max_clean_drop - 1e-12]
        if ok:
            best = max(ok, key=lambda r: (r["pgd_accuracy"], r["lam"]))
        else:
            best = max(rows, key=lambda r: (r["clean_accuracy"], r["lam"]))
        result[mode] = {"lam": best["lam"], "constraint_met": bool(ok), "grid": rows}
    bar.close()
    return result


def _check_pool(pool: Any) -> tuple[Tensor, Tensor]:
    if not (isinstance(pool, (tuple, list)) and len(pool) == 2 and all(isinstance(t, Tensor) for t in pool)):
        raise VarMixupError("pool must be a pair (images (P, C, H, W) in [0, 1], labels (P,)) of clean training images")
    px = _as_float_images(pool[0], "pool images")
    return px, _as_labels(pool[1], px.shape[0], "pool labels")


def _num_classes(model: nn.Module, x: Tensor) -> int:
    with torch.no_grad():
        model.eval()
        out = model(x[:1].to(module_device(model)))
    if not isinstance(out, Tensor) or out.ndim != 2:
        raise VarMixupError(f"model must return logits (B, num_classes), got {getattr(out, 'shape', type(out))}")
    return int(out.shape[1])


# ---- the whole evaluation ---------------------------------------------------------------------


@dataclass
class EvalConfig:
    """Settings of :func:`evaluate_robustness`; the defaults are the issue's protocol.

    Attributes:
        eps: L-inf radii of FGSM and PGD (pixel units of ``[0, 1]``).
        pgd_steps: PGD / EOT-PGD steps; the step size is ``eps / 4``.
        eot_iter: EOT samples per step of the adaptive attack through MI.
        mi_samples: MI rounds per input when measuring accuracy.
        attack_mi_samples: MI rounds per forward pass inside the adaptive attack (``None``: ``mi_samples``).
        mi_lam_pl, mi_lam_ol: MI-PL's and MI-OL's ``lam`` (see :func:`select_mi_lam`).
        corruptions: names from :data:`CORRUPTIONS`.
        severities: subset of ``(1, 2, 3)``.
        ece_bins: bins of the ECE and the reliability diagram.
        batch_size: images per call of the plain model and its attacks.
        mi_batch_size: inputs per MI call (each makes ``mi_samples`` mixes).
        adaptive_batch_size: inputs per adaptive-attack call (gradients through all the mixes).
        adaptive_limit: attack only a fixed random subset (from ``seed``) of this many images adaptively
            (``None``: all); the plain and MI numbers of the other parts still use every image.
        adaptive_modes: the MI modes attacked adaptively, a non-empty subset of ``("pl", "ol")``.
        mi_chunk_size: most mixes per model call inside MI.
        seed: seed of corruptions, attacks and MI draws.
        run_corruptions, run_fgsm, run_pgd, run_adaptive, run_mi: switch parts off.
    """

    eps: tuple[float, ...] = _DEFAULT_EPS
    pgd_steps: int = 10
    eot_iter: int = 5
    mi_samples: int = 30
    attack_mi_samples: int | None = None
    mi_lam_pl: float = 0.5
    mi_lam_ol: float = 0.5
    corruptions: tuple[str, ...] = CORRUPTIONS
    severities: tuple[int, ...] = SEVERITIES
    ece_bins: int = 15
    batch_size: int = 250
    mi_batch_size: int = 50
    adaptive_batch_size: int = 32
    adaptive_limit: int | None = None
    adaptive_modes: tuple[str, ...] = ("pl", "ol")
    mi_chunk_size: int = 1024
    seed: int = 0
    run_corruptions: bool = True
    run_fgsm: bool = True
    run_pgd: bool = True
    run_adaptive: bool = True
    run_mi: bool = True

    def __post_init__(self) -> None:
        self.eps = tuple(float(e) for e in self.eps)
        if not self.eps or any(not math.isfinite(e) or e < 0 or e > 1 for e in self.eps):
            raise VarMixupError(f"eps must be a non-empty list of radii in [0, 1] (e.g. 8/255), got {self.eps!r}")
        self.corruptions = tuple(self.corruptions)
        unknown = [c for c in self.corruptions if c not in _CORRUPTION_LEVELS]
        if unknown:
            raise VarMixupError(f"corruptions {unknown} are unknown; choose from {list(CORRUPTIONS)}")
        self.severities = tuple(self.severities)
        if not self.severities or any(s not in SEVERITIES for s in self.severities):
            raise VarMixupError(f"severities must be a non-empty subset of {SEVERITIES}, got {self.severities!r}")
        for name in ("pgd_steps", "eot_iter", "mi_samples", "ece_bins", "batch_size", "mi_batch_size",
                     "adaptive_batch_size", "mi_chunk_size"):
            check_int(name, getattr(self, name))
        for name in ("attack_mi_samples", "adaptive_limit"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name))
        self.adaptive_modes = tuple(self.adaptive_modes)
        if not self.adaptive_modes or any(m not in ("pl", "ol") for m in self.adaptive_modes) \
                or len(set(self.adaptive_modes)) != len(self.adaptive_modes):
            raise VarMixupError(
                f"adaptive_modes must be a non-empty subset of ('pl', 'ol') without repeats, got {self.adaptive_modes!r}"
            )
        for name in ("mi_lam_pl", "mi_lam_ol"):
            check_number(name, getattr(self, name), low=0, high=1, low_open=True)
        check_seed(self.seed, allow_none=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["eps_keys"] = [eps_key(e) for e in self.eps]
        d["step_size_rule"] = "eps / 4"
        d["attack_mi_samples"] = self.attack_mi_samples or self.mi_samples
        return d


def evaluate_robustness(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    pool: tuple[Tensor, Tensor] | None,
    *,
    config: EvalConfig | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    name: str = "model",
    progress: bool = True,
) -> dict[str, Any]:
    """Clean accuracy, ECE, corruption accuracy and FGSM/PGD accuracy with plain inference, MI-PL and MI-OL.

    Parts (each accuracy is the fraction of the ``N`` images classified right):

    - ``clean``: accuracy, ECE (``config.ece_bins`` bins) with the reliability bins, and MI-PL /
      MI-OL clean accuracy;
    - ``corruptions``: accuracy per corruption and severity (:func:`corrupt`, seeded), the mean over
      severities per corruption, and the overall mean;
    - ``fgsm`` and ``pgd_oblivious``: per eps, adversarial images made against the plain model,
      then classified by the plain model (``none``) and by MI (``mi_pl``, ``mi_ol``) on them;
    - ``pgd_adaptive`` (and ``fgsm_adaptive``): per eps and MI mode, EOT-PGD (``torchattacks.EOTPGD``,
      ``eot_iter`` samples per step; EOT-FGSM: one step of ``eps``) through the :class:`MIPredictor`
      itself (fresh MI draws on every forward pass, as Tramer et al., 2020), scored by an MI with
      independent draws; ``none_on_mi_*_adv`` is the plain model on those images. They run on
      ``adaptive_n`` images (all, or a fixed subset, see ``adaptive_limit``); ``adaptive_clean``
      is the plain clean accuracy on that subset. With a subset, ``fgsm`` and ``pgd_oblivious``
      also hold ``none_on_adaptive_subset``: the plain model on the same attack, restricted to it.

    Cost: the adaptive PGD runs ``pgd_steps * eot_iter`` forward and backward passes of
    ``attack_mi_samples`` mixes per image, per eps and mode (10 * 5 * 30 = 1500 with the defaults);
    use ``adaptive_limit`` and ``attack_mi_samples`` to bound it on a CPU.

    Args:
        model: classifier on pixel-space inputs ``(B, C, H, W)`` in ``[0, 1]`` -> logits ``(B, K)``.
        images: ``(N, C, H, W)`` test images, float in ``[0, 1]`` or ``uint8``.
        labels: ``(N,)``.
        pool: ``(images (P, C, H, W), labels (P,))`` clean *training* images for MI; ``None`` skips MI.
        config: :class:`EvalConfig` (default: the issue's protocol).
        out_dir: if given, writes ``reliability.png`` there.
        name: label used in the figure title and the markdown row.
        progress: tqdm bars.

    Returns:
        A JSON-serialisable dict with the parts above plus ``settings``, ``n_test`` and ``timing_s``.
    """
    cfg = config or EvalConfig()
    x = _as_float_images(images)
    y = _as_labels(labels, x.shape[0])
    run_mi = cfg.run_mi and pool is not None
    pool_xy = _check_pool(pool) if pool is not None else None
    model.eval()
    num_classes = _num_classes(model, x)
    timing: dict[str, float] = {}
    result: dict[str, Any] = {"name": name, "n_test": int(x.shape[0]), "num_classes": num_classes,
                              "settings": cfg.to_dict()}
    lams = {"pl": float(cfg.mi_lam_pl), "ol": float(cfg.mi_lam_ol)}

    def make_mi(mode: str, part: str, samples: int | None = None) -> MIPredictor:
        assert pool_xy is not None
        return MIPredictor(model, pool_xy, num_classes=num_classes, mode=mode, lam=lams[mode],
                           num_samples=samples or cfg.mi_samples, chunk_size=cfg.mi_chunk_size,
                           seed=mix_seed(cfg.seed, "mi", part, mode) % 2**62)

    def scores(adv: Tensor, part: str, logits: Tensor | None = None) -> dict[str, float]:
        logits = predict_logits(model, adv, batch_size=cfg.batch_size) if logits is None else logits
        out = {"none": _accuracy_from_logits(logits, y[: adv.shape[0]])}
        if run_mi:
            for mode in ("pl", "ol"):
                out[f"mi_{mode}"] = float(_mi_correct(make_mi(mode, part), adv, y[: adv.shape[0]],
                                                      cfg.mi_batch_size).double().mean())
        return out

    # Clean accuracy and calibration.
    t0 = time.perf_counter()
    logits = predict_logits(model, x, batch_size=cfg.batch_size)
    probs = logits.softmax(1)
    conf, pred = probs.max(1)
    correct = pred == y
    bins = calibration_bins(conf, correct, n_bins=cfg.ece_bins)
    clean = scores(x, "clean", logits)
    result["clean"] = {
        "accuracy": clean["none"],
        "ece": expected_calibration_error(conf, correct, n_bins=cfg.ece_bins),
        "mean_confidence": float(conf.double().mean()),
        "mi_pl_accuracy": clean.get("mi_pl"),
        "mi_ol_accuracy": clean.get("mi_ol"),
        "reliability": {k: [round(float(v), 6) for v in t] for k, t in bins.items()},
    }
    if out_dir is not None:
        png = reliability_diagram(conf, correct, Path(out_dir) / "reliability.png", n_bins=cfg.ece_bins, title=name)
        result["clean"]["reliability_png"] = str(png)
    timing["clean"] = time.perf_counter() - t0

    # Common corruptions.
    if cfg.run_corruptions:
        t0 = time.perf_counter()
        per: dict[str, dict[str, float]] = {}
        jobs = [(c, s) for c in cfg.corruptions for s in cfg.severities]
        for c, s in tqdm(jobs, desc="corruptions", unit="set", disable=not progress, leave=False):
            xc = corrupt(x, c, s, seed=cfg.seed)
            per.setdefault(c, {})[str(s)] = _accuracy_from_logits(predict_logits(model, xc, batch_size=cfg.batch_size), y)
        for c in per:
            per[c]["mean"] = sum(per[c][str(s)] for s in cfg.severities) / len(cfg.severities)
        result["corruptions"] = {"accuracy": per, "mean": sum(v["mean"] for v in per.values()) / len(per),
                                 "severities": list(cfg.severities)}
        timing["corruptions"] = time.perf_counter() - t0

    # The adaptive attack's images (all, or a fixed subset), also scored by the oblivious attacks.
    keep = _fixed_subset(x.shape[0], cfg.adaptive_limit, cfg.seed, "adaptive-subset")
    subset = len(keep) < x.shape[0]

    # Oblivious attacks: against the plain model, then defended (or not) by MI.
    for attack, key, on in (("fgsm", "fgsm", cfg.run_fgsm), ("pgd", "pgd_oblivious", cfg.run_pgd)):
        if not on:
            continue
        t0 = time.perf_counter()
        result[key] = {}
        for eps in cfg.eps:
            adv = adversarial_examples(model, x, y, attack=attack, eps=eps, steps=cfg.pgd_steps,
                                       batch_size=cfg.batch_size, seed=mix_seed(cfg.seed, key, eps_key(eps)),
                                       progress=progress, desc=f"{key} {eps_key(eps)}")
            adv_logits = predict_logits(model, adv, batch_size=cfg.batch_size)
            entry = scores(adv, f"{key}:{eps_key(eps)}", adv_logits)
            if subset:
                entry["none_on_adaptive_subset"] = _accuracy_from_logits(adv_logits[keep], y[keep])
            result[key][eps_key(eps)] = entry
        timing[key] = time.perf_counter() - t0

    # Adaptive attacks: EOT-FGSM and EOT-PGD through MI itself.
    if cfg.run_adaptive and run_mi:
        xa, ya = x[keep], y[keep]
        result["adaptive_n"] = len(keep)
        result["adaptive_clean"] = {"none": _accuracy_from_logits(logits[keep], ya)}
        parts = [("fgsm_adaptive", "eotfgsm")] if cfg.run_fgsm else []
        parts += [("pgd_adaptive", "eotpgd")] if cfg.run_pgd else []
        for key, attack in parts:
            t0 = time.perf_counter()
            result[key] = {}
            for eps in cfg.eps:
                entry: dict[str, float] = {}
                for mode in cfg.adaptive_modes:
                    tag = f"{key}:{eps_key(eps)}"
                    attacked = make_mi(mode, f"{tag}:attacker", cfg.attack_mi_samples)
                    adv = adversarial_examples(attacked, xa, ya, attack=attack, eps=eps, steps=cfg.pgd_steps,
                                               eot_iter=cfg.eot_iter, batch_size=cfg.adaptive_batch_size,
                                               seed=mix_seed(cfg.seed, key, mode, eps_key(eps)),
                                               progress=progress, desc=f"{key} MI-{mode.upper()} {eps_key(eps)}")
                    judge = make_mi(mode, f"{tag}:judge")
                    entry[f"mi_{mode}"] = float(_mi_correct(judge, adv, ya, cfg.mi_batch_size).double().mean())
                    entry[f"none_on_mi_{mode}_adv"] = _accuracy_from_logits(
                        predict_logits(model, adv, batch_size=cfg.batch_size), ya)
                result[key][eps_key(eps)] = entry
            timing[key] = time.perf_counter() - t0
    result["timing_s"] = {k: round(v, 2) for k, v in timing.items()}
    return result


# ---- markdown ---------------------------------------------------------------------------------


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * float(v):.1f}"


def markdown_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """A markdown table with one row per result of :func:`evaluate_robustness` (keyed by row name).

    Columns: clean accuracy, ECE, mean corruption accuracy, MI clean accuracy (PL / OL), and per
    eps: FGSM and oblivious PGD as ``none / MI-PL / MI-OL``, adaptive EOT-FGSM and EOT-PGD through MI
    as ``MI-PL / MI-OL`` (with ``(n=...)`` when it ran on a subset, see ``EvalConfig.adaptive_limit``).
    All numbers are percentages.
    """
    if not isinstance(results, Mapping) or not results:
        raise VarMixupError("results must be a non-empty mapping of name -> evaluate_robustness result")
    eps_keys: list[str] = []
    for r in results.values():
        for k in r.get("settings", {}).get("eps_keys", []):
            if k not in eps_keys:
                eps_keys.append(k)
    head = ["method", "clean", "ECE", "corr. mean", "MI clean PL / OL"]
    head += [f"FGSM {k} none / PL / OL" for k in eps_keys]
    head += [f"PGD obl. {k} none / PL / OL" for k in eps_keys]
    head += [f"FGSM adapt. {k} PL / OL" for k in eps_keys]
    head += [f"PGD adapt. {k} PL / OL" for k in eps_keys]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for name, r in results.items():
        clean = r.get("clean", {})
        cells = [str(name), _pct(clean.get("accuracy")), _pct(clean.get("ece")),
                 _pct(r.get("corruptions", {}).get("mean")),
                 f"{_pct(clean.get('mi_pl_accuracy'))} / {_pct(clean.get('mi_ol_accuracy'))}"]
        for part in ("fgsm", "pgd_oblivious"):
            for k in eps_keys:
                e = r.get(part, {}).get(k, {})
                cells.append(" / ".join(_pct(e.get(m)) for m in ("none", "mi_pl", "mi_ol")))
        n_adapt, n_test = r.get("adaptive_n"), r.get("n_test")
        subset = f" (n={n_adapt})" if n_adapt is not None and n_test is not None and n_adapt < n_test else ""
        for part in ("fgsm_adaptive", "pgd_adaptive"):
            for k in eps_keys:
                e = r.get(part, {}).get(k, {})
                cells.append(f"{_pct(e.get('mi_pl'))} / {_pct(e.get('mi_ol'))}" + (subset if e else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---- from a checkpoint and a dataset ----------------------------------------------------------


def _decode(dataset: Any, indices: Sequence[int], desc: str, progress: bool) -> tuple[Tensor, Tensor]:
    from torch.utils.data import Subset

    from .data import load_tensor_dataset

    x, y = load_tensor_dataset(Subset(dataset, list(indices)), desc=desc, progress=progress)
    return to_float_images(x), y.long()


def _fixed_subset(n: int, limit: int | None, seed: int, salt: str) -> list[int]:
    if limit is None or limit >= n:
        return list(range(n))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(mix_seed(seed, salt) % 2**62))
    return sorted(perm[:limit].tolist())


def evaluate_checkpoint(
    checkpoint: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    *,
    config: EvalConfig | None = None,
    limit_test: int | None = 1000,
    pool_size: int = 5000,
    select_lam: bool = False,
    lam_grid: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    select_limit: int | None = 1000,
    select_mi_samples: int | None = None,
    max_clean_drop: float = 0.05,
    select_eps: float = 2 / 255,
    out_dir: str | os.PathLike[str] | None = None,
    name: str | None = None,
    device: str | torch.device = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """The ``varmixup-aug evaluate`` command as a function: load, (select lam,) evaluate, write files.

    Data: the test images are a fixed subset of ``limit_test`` images of the test split, drawn
    with ``config.seed`` (the same for every checkpoint). The MI pool is ``pool_size`` images of the
    train split outside the checkpoint's held-out split. With ``select_lam``, MI's ``lam`` is chosen
    by :func:`select_mi_lam` on ``select_limit`` images of the held-out split stored in the
    checkpoint (training images never trained on), scored under oblivious PGD at ``select_eps``
    with ``config.pgd_steps`` steps, then used for the evaluation.

    Writes into ``out_dir`` (when given): ``eval.json`` (every number), ``reliability.png`` and
    ``row.md`` (the markdown table with this one row).

    Returns:
        The :func:`evaluate_robustness` dict plus ``checkpoint`` (metadata) and ``lam_selection``.
    """
    from .data import open_image_dataset
    from .train_classifier import load_classifier

    cfg = config or EvalConfig()
    if limit_test is not None:
        check_int("limit_test", limit_test)
    check_int("pool_size", pool_size)
    dev = resolve_device(device)
    model, meta = load_classifier(checkpoint, device=dev)
    name = name or str(meta.get("method", "model"))
    test_ds = open_image_dataset(data_dir, "test")
    train_ds = open_image_dataset(data_dir, "train")
    test_idx = _fixed_subset(len(test_ds), limit_test, cfg.seed, "test-subset")
    images, labels = _decode(test_ds, test_idx, "decoding test", progress)

    holdout = meta.get("holdout") or {}
    held = sorted(int(i) for i in holdout.get("indices", []))
    if held and holdout.get("train_size") != len(train_ds):
        raise VarMixupError(
            f"checkpoint's held-out split indexes a train split of {holdout.get('train_size')} images, but data_dir "
            f"{data_dir} has {len(train_ds)}; pass the --data-dir the model was trained on"
        )
    held_set = set(held)
    candidates = [i for i in range(len(train_ds)) if i not in held_set]
    pick = _fixed_subset(len(candidates), pool_size, cfg.seed, "mi-pool")
    pool = _decode(train_ds, [candidates[i] for i in pick], "decoding MI pool", progress)

    selection = None
    if select_lam:
        if not held:
            raise VarMixupError(
                f"select_lam needs the held-out split stored by train-classifier, but {checkpoint} has none; "
                "pass --mi-lam-pl/--mi-lam-ol instead"
            )
        sub = _fixed_subset(len(held), select_limit, cfg.seed, "lam-subset")
        hx, hy = _decode(train_ds, [held[i] for i in sub], "decoding held-out", progress)
        selection = select_mi_lam(
            model, hx, hy, pool, grid=lam_grid, eps=select_eps,
            steps=cfg.pgd_steps, max_clean_drop=max_clean_drop,
            num_samples=select_mi_samples or cfg.mi_samples, batch_size=cfg.batch_size,
            mi_batch_size=cfg.mi_batch_size, seed=cfg.seed, progress=progress,
        )
        cfg = EvalConfig(**{**{f.name: getattr(cfg, f.name) for f in fields(cfg)},
                            "mi_lam_pl": selection["pl"]["lam"], "mi_lam_ol": selection["ol"]["lam"]})
    result = evaluate_robustness(model, images, labels, pool, config=cfg, out_dir=out_dir, name=name,
                                 progress=progress)
    result["checkpoint"] = {
        "path": str(checkpoint), "method": meta.get("method"), "epoch": meta.get("epoch"),
        "global_step": meta.get("global_step"), "finished": meta.get("finished"),
        "model": meta.get("model"),
    }
    result["data"] = {"data_dir": str(data_dir), "test_size": len(test_ds), "limit_test": limit_test,
                      "pool_size": int(pool[0].shape[0]), "device": str(dev)}
    result["lam_selection"] = selection
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(json.dumps(result, indent=2))
        (out / "row.md").write_text(markdown_table({name: result}))
    return result
