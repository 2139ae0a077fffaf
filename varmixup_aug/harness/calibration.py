"""Calibration: expected calibration error, reliability bins, the reliability diagram and temperature scaling."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from varmixup_aug import VarMixupError
from varmixup_aug._checks import check_int
from varmixup_aug._io import atomic_path

__all__ = ["bootstrap_ece", "calibration_bins", "expected_calibration_error", "fit_temperature", "reliability_diagram"]


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


def _nll(logits: Tensor, labels: Tensor, inverse_t: float) -> float:
    return float(torch.nn.functional.cross_entropy(logits * inverse_t, labels))


def fit_temperature(logits: Tensor, labels: Tensor, *, low: float = 0.05, high: float = 20.0,
                    iterations: int = 80) -> float:
    """The temperature ``T`` that minimises the NLL of ``softmax(logits / T)`` (Guo et al., 2017).

    The NLL is convex in ``1 / T``, so a golden-section search over ``log(1 / T)`` in
    ``[1 / high, 1 / low]`` finds the minimum; deterministic, no optimiser state.

    Args:
        logits: ``(N, K)`` logits of held-out images (never the test images).
        labels: ``(N,)`` int labels.
        low, high: the range searched for ``T``.
        iterations: golden-section steps (80 narrow the bracket by a factor of about 1e-17).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> labels = torch.randint(0, 4, (2000,), generator=g)
        >>> logits = torch.randn(2000, 4, generator=g) + 3 * torch.nn.functional.one_hot(labels, 4)
        >>> t = fit_temperature(logits, labels)
        >>> round(t, 2)  # these logits are too flat for their accuracy: T < 1 sharpens them
        0.3
        >>> round(fit_temperature(logits * 3, labels) / t, 3)  # logits 3x as sharp need a T 3x as large
        3.0
    """
    if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] == 0:
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise VarMixupError(f"logits must be a non-empty (N, K) tensor, got {got}")
    if not isinstance(labels, Tensor) or labels.shape != (logits.shape[0],):
        raise VarMixupError(f"labels must be a tensor of {logits.shape[0]} labels, got "
                            f"{tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__}")
    if not 0 < low < high:
        raise VarMixupError(f"need 0 < low < high for the temperature range, got low={low!r}, high={high!r}")
    z, y = logits.detach().double().cpu(), labels.detach().long().cpu()
    a, b = math.log(1 / high), math.log(1 / low)
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(check_int("iterations", iterations)):
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        if _nll(z, y, math.exp(c)) <= _nll(z, y, math.exp(d)):
            b = d
        else:
            a = c
    return 1 / math.exp((a + b) / 2)


def bootstrap_ece(confidences: Tensor, correct: Tensor, draws: Tensor, *, n_bins: int = 15) -> Tensor:
    """The ECE of every bootstrap resample at once.

    Args:
        confidences, correct: ``(N,)`` as in :func:`calibration_bins`.
        draws: ``(S, N)`` image indices, one resample per row
            (:func:`~varmixup_aug.harness.significance.bootstrap_indices`).

    Returns:
        ``(S,)`` float64: the ECE of each resample, equal to :func:`expected_calibration_error` on it.
    """
    conf, corr = _check_conf_correct(confidences, correct, n_bins)
    if draws.ndim != 2 or draws.dtype not in (torch.int32, torch.int64):
        raise VarMixupError(f"draws must be (S, N) integer indices, got {tuple(draws.shape)} {draws.dtype}")
    index = (torch.ceil(conf * n_bins).long() - 1).clamp(0, n_bins - 1)
    rows = draws.shape[0]
    flat = (index[draws] + n_bins * torch.arange(rows).unsqueeze(1)).flatten()
    size = rows * n_bins
    count = torch.bincount(flat, minlength=size).double().view(rows, n_bins)
    gap = (torch.bincount(flat, weights=corr[draws].flatten(), minlength=size)
           - torch.bincount(flat, weights=conf[draws].flatten(), minlength=size)).view(rows, n_bins)
    return gap.abs().sum(1) / count.sum(1)


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
    with atomic_path(path) as tmp:
        fig.savefig(str(tmp), format="png")
    return path
