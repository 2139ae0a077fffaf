"""One validator for image batches and labels: the op, the collate, the dataset, MI's pool and input and the
harness check them here, with one value-range tolerance and at most one host read per check.

Structure (type, shape, dtype) is checked on every call and costs nothing. Values (finiteness, range, label
range) need their numbers on the host: on the CPU that is free and runs on every call; on a device it is a
host-device sync, so the hot paths run it through a :class:`CheckSchedule` (the first batch, then every
``CHECK_EVERY``-th), and setting the environment variable ``VARMIXUP_AUG_CHECK_EVERY_BATCH=1`` checks every
batch. One check reads all its numbers with one host read.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ._errors import VarMixupError
from ._tensors import to_float_images

__all__ = [
    "CHECK_EVERY",
    "RANGE_TOLERANCE",
    "CheckSchedule",
    "check_image_values",
    "check_label_values",
    "float_images",
    "image_stats",
    "label_kind",
    "label_stats",
    "needs_sync",
    "read_host",
    "to_host",
]

RANGE_TOLERANCE = 0.01  # images may overshoot their range by 1% of its span (round-off, resampling); no more
CHECK_EVERY = 100  # on a device, value checks run on the first batch and then on every CHECK_EVERY-th
DEBUG_ENV = "VARMIXUP_AUG_CHECK_EVERY_BATCH"
SOFT_LABEL_TOLERANCE = 1e-3


def needs_sync(t: Tensor) -> bool:
    """Whether reading a value of ``t`` on the host stalls a device: any tensor that is not on the CPU."""
    return t.device.type != "cpu"


def to_host(t: Tensor) -> Tensor:
    """``t`` on the CPU: the one device-to-host copy a hot path makes (MI's predicted classes), kept in one
    place so that the sync test can count it."""
    return t.to("cpu")


def read_host(parts: Sequence[Tensor]) -> list[float]:
    """The values of several scalars or small tensors, read with one host read (one sync on a device)."""
    if not parts:
        return []
    dtype = torch.float32 if parts[0].device.type == "mps" else torch.float64
    return torch.cat([p.detach().reshape(-1).to(dtype) for p in parts]).tolist()


class CheckSchedule:
    """When the value checks of a stream of batches run: always for CPU tensors (no sync), for device tensors on
    the first batch and then on every ``CHECK_EVERY``-th (batches 0, 100, 200, ...), or on every batch with
    ``VARMIXUP_AUG_CHECK_EVERY_BATCH=1``. Each copy (e.g. in a DataLoader worker) counts its own batches."""

    def __init__(self) -> None:
        self.batches = 0

    def due(self, t: Tensor) -> bool:
        """Whether this batch (whose data lives where ``t`` does) gets its values checked; counts device batches."""
        if not needs_sync(t) or os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            return True
        n, self.batches = self.batches, self.batches + 1
        return n % CHECK_EVERY == 0


def float_images(images: Any, *, name: str = "images", dims: str = "(B, C, H, W)", uint8: bool = True,
                 uint8_hint: str = "", kind: str = "floating point") -> Tensor:
    """A 4-d, non-empty floating-point batch; ``uint8`` is read as ``x / 255`` where the caller only reads the
    images (``uint8=True``) and refused with ``uint8_hint`` where its output keeps the input's dtype."""
    if not isinstance(images, Tensor):
        raise VarMixupError(f"{name} must be a tensor {dims}, got {type(images).__name__}")
    if images.ndim != 4:
        raise VarMixupError(f"{name} must have shape {dims}, got {tuple(images.shape)}")
    if images.shape[0] < 1:
        raise VarMixupError(f"{name} must have shape {dims} with {dims[1]} >= 1, got {tuple(images.shape)} (an "
                            "empty batch)")
    if images.dtype == torch.uint8 and uint8:
        return to_float_images(images)
    if not images.is_floating_point():
        accepted = kind if not uint8 else f"{kind} or uint8 (read as x / 255)"
        hint = f"; {uint8_hint}" if uint8_hint and images.dtype == torch.uint8 else ""
        raise VarMixupError(f"{name} must be {accepted}, got {images.dtype}{hint}")
    return images


def image_stats(images: Tensor, *, per_channel: bool = False) -> list[Tensor]:
    """The minimum and maximum (per channel with ``per_channel``); NaN propagates, Inf shows as the bound."""
    if per_channel:
        return [images.amin(dim=(0, 2, 3)), images.amax(dim=(0, 2, 3))]
    return [images.amin().reshape(1), images.amax().reshape(1)]


def check_image_values(name: str, low_high: tuple[float, float], value_range: tuple[float, float], *,
                       message: str, nan_message: str | None = None) -> None:
    """Refuse NaN/Inf, and values outside ``value_range`` by more than ``RANGE_TOLERANCE`` of its span.

    ``low_high`` is the batch's (min, max) as read by :func:`read_host`; ``message`` is formatted with
    ``name``, ``min``, ``max``, ``low``, ``high`` and ``tolerance``."""
    x_min, x_max = low_high
    if not (abs(x_min) < float("inf") and abs(x_max) < float("inf")):  # NaN compares False too
        raise VarMixupError(nan_message or f"{name} {'contain' if name.endswith('s') else 'contains'} NaN or Inf")
    low, high = value_range
    slack = RANGE_TOLERANCE * (high - low)
    if x_min < low - slack or x_max > high + slack:
        raise VarMixupError(message.format(name=name, min=x_min, max=x_max, low=low, high=high,
                                           tolerance=f"{RANGE_TOLERANCE:.0%}"))


def label_kind(labels: Tensor, batch: int, num_classes: int, *, name: str = "labels") -> str:
    """``"index"`` for ``(B,)`` integer class indices, ``"soft"`` for ``(B, num_classes)`` rows (float soft
    labels, or integer one-hot rows); anything else is refused with what came and the fix. No host sync."""
    if labels.dtype == torch.bool or labels.is_complex():
        raise VarMixupError(f"{name} must be integer class indices or float soft labels, got {labels.dtype}")
    if labels.shape == (batch, num_classes) and labels.ndim == 2:
        return "soft"
    if labels.is_floating_point():
        hint = ("; class indices must be an integer tensor (e.g. labels.long() if they are whole numbers)"
                if labels.shape == (batch,) else "")
        raise VarMixupError(
            f"soft {name} must have shape (B, num_classes) = ({batch}, {num_classes}), got {tuple(labels.shape)}{hint}"
        )
    if labels.shape != (batch,):
        hint = (f"; one-hot or soft rows need num_classes = {labels.shape[1]} columns, got num_classes={num_classes}"
                if labels.ndim == 2 and labels.shape[0] == batch else "")
        raise VarMixupError(f"{name} must have shape (B,) = ({batch},), got {tuple(labels.shape)}{hint}")
    return "index"


def label_stats(labels: Tensor, kind: str) -> list[Tensor]:
    """What :func:`check_label_values` reads: min and max, and for soft rows the largest row-sum error."""
    if labels.numel() == 0:
        return []
    stats = [labels.amin().reshape(1), labels.amax().reshape(1)]
    if kind == "soft":
        stats.append((labels.sum(1, dtype=torch.float64) - 1).abs().amax().reshape(1))
    return stats


def check_label_values(name: str, values: Sequence[float], kind: str, num_classes: int,
                       labels: Tensor | None = None) -> None:
    """Class indices in ``[0, num_classes)``; soft rows finite, >= 0, summing to 1 within 1e-3 (``labels``,
    if given, names the worst row)."""
    if not values:
        return
    low, high = values[0], values[1]
    if kind == "index":
        if low < 0 or high >= num_classes:
            raise VarMixupError(
                f"{name} must lie in [0, num_classes) = [0, {num_classes}), got values in [{int(low)}, {int(high)}]; "
                "check num_classes"
            )
        return
    if not (abs(low) < float("inf") and abs(high) < float("inf")):
        raise VarMixupError(f"{name} contain NaN or Inf")
    if low < 0:
        raise VarMixupError(f"soft {name} must be >= 0, got a minimum of {low:.4g}")
    if values[2] > SOFT_LABEL_TOLERANCE:
        row = ""
        if labels is not None:
            sums = labels.sum(1, dtype=torch.float64)
            worst = int((sums - 1).abs().argmax())
            row = f" row {worst} summing to {float(sums[worst]):.4g}"
        raise VarMixupError(
            f"soft {name} must be probabilities: every row must sum to 1 (within {SOFT_LABEL_TOLERANCE:g}), got"
            f"{row or ' a row off by ' + format(values[2], '.4g')}; multi-hot rows are not mixup targets, divide each "
            "row by its sum if that is what you mean"
        )
