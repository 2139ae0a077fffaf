"""The clean labelled images Mixup Inference mixes with: loaded once, checked, and indexed by class."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ._checks import check_label_range
from ._errors import VarMixupError
from ._tensors import numpy_images
from ._validate import check_image_values, float_images, image_stats, read_host

__all__ = ["PIXEL_MESSAGE", "PoolIndex"]

# MI's pool and input are pixel images in [0, 1], checked with the package's one tolerance (RANGE_TOLERANCE).
PIXEL_MESSAGE = "{name} must lie in pixel space [0, 1], got values in [{min:.3g}, {max:.3g}]; "


@dataclass(frozen=True)
class PoolIndex:
    """Where each class's images are in a pool sorted by class; all small CPU tensors.

    Attributes:
        labels: ``(P,)`` sorted labels. order: ``(P,)`` position of each sorted image in the given pool.
        counts, offsets: ``(K,)`` images of each class and the index of its first image.
        nonempty: the classes with at least one image, ascending.
    """

    labels: Tensor
    order: Tensor
    counts: Tensor
    offsets: Tensor
    nonempty: Tensor

    @classmethod
    def load(cls, pool: Any, num_classes: int, *, batch_size: int) -> tuple[Tensor, PoolIndex]:
        """Load and check ``pool`` (a map-style Dataset or an ``(images, labels)`` pair); return its images
        ``(P, C, H, W)`` sorted by class (stable) and their index."""
        images, labels = _load(pool, batch_size)
        images = _check(images, labels, num_classes)
        labels = labels.long().cpu()
        order = torch.argsort(labels, stable=True)
        counts = torch.bincount(labels, minlength=num_classes)
        index = cls(labels[order], order, counts, torch.cumsum(counts, 0) - counts, torch.nonzero(counts > 0).flatten())
        return images[order.to(images.device)], index

    def check_classes(self, mode: str) -> None:
        """MI-PL needs every class; MI-OL needs two non-empty classes and warns about empty ones."""
        num_classes = self.counts.numel()
        missing = torch.nonzero(self.counts == 0).flatten().tolist()
        if not missing:
            return
        if mode in ("pl", "combined"):
            raise VarMixupError(
                f"pool has no images of classes {missing}; mode={mode!r} draws from the predicted class, so "
                f"every class 0..{num_classes - 1} needs at least one pool image; add them or use mode='ol'"
            )
        if num_classes - len(missing) < 2:
            raise VarMixupError(
                f"pool holds images of fewer than 2 classes (missing {missing}); mode='ol' draws from a class other "
                "than the predicted one, so it needs at least 2 non-empty classes"
            )
        warnings.warn(
            f"MIPredictor: pool has no images of classes {missing}; MI-OL draws among the other non-empty classes",
            UserWarning, stacklevel=3,
        )

    def pick(self, cls: Tensor, u: Tensor) -> Tensor:
        """A uniform image of class ``cls`` for uniforms ``u`` in [0, 1): ``offset + floor(u * count)``."""
        counts = self.counts[cls]
        j = torch.minimum((u * counts).floor().long(), counts - 1)
        return self.offsets[cls] + j

    def pick_other(self, y: Tensor, u_cls: Tensor, u_img: Tensor) -> Tensor:
        """For each ``y`` ``(B,)``: a uniform class among the other non-empty ones, then a uniform image of it."""
        ne = self.nonempty
        own = (self.counts[y] > 0).long()[:, None]  # is y itself a candidate to skip
        k = ne.numel() - own
        r = torch.minimum((u_cls * k).floor().long(), k - 1)
        r = r + ((r >= torch.searchsorted(ne, y)[:, None]).long() * own)  # skip y's slot
        return self.pick(ne[r], u_img)


def _load(pool: Any, batch_size: int) -> tuple[Tensor, Tensor]:
    """``(images (P, C, H, W), labels (P,))`` from a tensor or numpy pair or a map-style dataset."""
    if _is_pair(pool):
        images, labels = pool
        if not isinstance(images, Tensor):
            images = numpy_images(images, name="pool images", batched=True)
        return images, labels if isinstance(labels, Tensor) else torch.as_tensor(labels)
    if not (isinstance(pool, Dataset) or (hasattr(pool, "__getitem__") and hasattr(pool, "__len__"))):
        raise VarMixupError(
            f"pool must be a map-style Dataset of (image (C, H, W), label) or an (images, labels) tensor pair, "
            f"got {type(pool).__name__}"
        )
    try:
        size = len(pool)
    except TypeError:
        size = None
    if size == 0:
        raise VarMixupError("pool is empty; MI needs clean labelled images to mix with")
    images, labels = [], []
    try:
        for batch in DataLoader(pool, batch_size=batch_size, shuffle=False, num_workers=0):
            if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
                raise VarMixupError(
                    f"pool items must be (image, label) pairs, got a batch of {type(batch).__name__}"
                )
            img, lab = batch
            if not isinstance(img, Tensor):
                raise TypeError(f"images batched to {type(img).__name__}, not a tensor")
            images.append(img)
            labels.append(torch.as_tensor(lab))
    except (TypeError, RuntimeError) as exc:
        raise VarMixupError(
            "pool items could not be batched: each must be (image tensor (C, H, W) of one common shape, int label); "
            f"add a ToTensor/ToDtype transform to the dataset ({exc})"
        ) from exc
    if not images:
        raise VarMixupError("pool is empty; MI needs clean labelled images to mix with")
    return torch.cat(images), torch.cat(labels)


def _is_pair(pool: Any) -> bool:
    """An ``(images, labels)`` pair: a 2-sequence whose first element is a batch of images (tensor or numpy),
    not a 2-item dataset of ``(image, label)`` items."""
    if not (isinstance(pool, (tuple, list)) and len(pool) == 2):
        return False
    first = pool[0]
    return isinstance(first, Tensor) or (type(first).__module__ == "numpy" and getattr(first, "ndim", 0) >= 2)


def _check(images: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """The pool images as float (uint8 read as x / 255), checked like every image batch; the labels checked."""
    if isinstance(images, Tensor) and images.ndim == 4 and images.shape[0] == 0:
        raise VarMixupError("pool is empty; MI needs clean labelled images to mix with")
    images = float_images(images, name="pool images", dims="(P, C, H, W)")
    check_image_values("pool images", tuple(read_host(image_stats(images))), (0.0, 1.0),  # type: ignore[arg-type]
                       message=PIXEL_MESSAGE + "pass unnormalised images and give the model's normalisation as "
                       "normalize=(mean, std)")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise VarMixupError(
            f"pool labels must have shape (P,) = ({images.shape[0]},), got {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise VarMixupError(f"pool labels must be integer class indices, got {labels.dtype}")
    check_label_range("pool labels", labels, num_classes)
    return images
