"""What the evaluation modules share: checked images and labels, logits, accuracies, fixed subsets."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from varmixup_aug import MIPredictor, VarMixupError
from varmixup_aug._checks import check_int
from varmixup_aug._random import derive_seed
from varmixup_aug._tensors import module_device
from varmixup_aug._validate import check_image_values, float_images, image_stats, read_host

__all__ = [
    "accuracy_from_logits",
    "as_float_images",
    "as_labels",
    "batch_ranges",
    "check_pool",
    "eps_key",
    "fixed_subset",
    "infer_num_classes",
    "mi_correct",
    "predict_logits",
    "stratified_subset",
]

def batch_ranges(n: int, batch_size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, batch_size):
        yield start, min(n, start + batch_size)


def as_float_images(images: Any, name: str = "images") -> Tensor:
    """Images ``(N, C, H, W)`` as float in [0, 1] (uint8 read as x / 255), checked by the core's one validator."""
    x = float_images(images, name=name, dims="(N, C, H, W)", kind="float in [0, 1]")
    check_image_values(name, tuple(read_host(image_stats(x))), (0.0, 1.0),  # type: ignore[arg-type]
                       message="{name} must lie in pixel space [0, 1], got values in [{min:.3g}, {max:.3g}]; pass "
                       "unnormalised images and put the normalisation inside the model")
    return x


def as_labels(labels: Any, n: int, name: str = "labels") -> Tensor:
    if (not isinstance(labels, Tensor) or labels.shape != (n,) or labels.is_floating_point()
            or labels.dtype == torch.bool):
        got = f"{tuple(labels.shape)} {labels.dtype}" if isinstance(labels, Tensor) else type(labels).__name__
        raise VarMixupError(f"{name} must be an integer tensor of shape (N,) = ({n},), got {got}")
    return labels.long()


def check_pool(pool: Any) -> tuple[Tensor, Tensor]:
    if not (isinstance(pool, (tuple, list)) and len(pool) == 2 and all(isinstance(t, Tensor) for t in pool)):
        raise VarMixupError("pool must be a pair (images (P, C, H, W) in [0, 1], labels (P,)) of clean training images")
    px = as_float_images(pool[0], "pool images")
    return px, as_labels(pool[1], px.shape[0], "pool labels")


def eps_key(eps: float) -> str:
    """``2/255`` for ``eps = 2/255``; other values as ``%g``. Used as JSON keys."""
    r = eps * 255.0
    if abs(r - round(r)) < 1e-6:
        return f"{int(round(r))}/255"
    return f"{eps:.6g}"


@torch.no_grad()
def predict_logits(model: nn.Module, images: Tensor, *, batch_size: int = 500) -> Tensor:
    """Logits ``(N, K)`` (float32, CPU) of ``model`` (put in eval mode) on ``images`` ``(N, C, H, W)`` in ``[0, 1]``."""
    check_int("batch_size", batch_size)
    x = as_float_images(images)
    device = module_device(model)
    model.eval()
    return torch.cat([model(x[s:e].to(device)).float().cpu() for s, e in batch_ranges(x.shape[0], batch_size)])


def mi_correct(mi: MIPredictor, images: Tensor, labels: Tensor, batch_size: int) -> Tensor:
    device = mi.pool_images.device
    out = [mi.predict(images[s:e].to(device)).cpu() == labels[s:e]
           for s, e in batch_ranges(images.shape[0], batch_size)]
    return torch.cat(out)


def accuracy_from_logits(logits: Tensor, labels: Tensor) -> float:
    return float((logits.argmax(1) == labels).double().mean())


def infer_num_classes(model: nn.Module, x: Tensor) -> int:
    with torch.no_grad():
        model.eval()
        out = model(x[:1].to(module_device(model)))
    if not isinstance(out, Tensor) or out.ndim != 2:
        raise VarMixupError(f"model must return logits (B, num_classes), got {getattr(out, 'shape', type(out))}")
    return int(out.shape[1])


def stratified_subset(labels: Tensor, limit: int | None, seed: int, salt: str) -> list[int]:
    """``limit`` indices with (nearly) the same number from every class, in a seeded random order.

    Each class gives ``limit // K`` images (the first ``limit % K`` classes one more), drawn at random
    within the class; the list is then shuffled, so any prefix of it (a partial run) is about
    class-balanced too. ``limit`` of ``None`` or at least ``len(labels)``: every index, shuffled.

    Example:
        >>> import torch
        >>> idx = stratified_subset(torch.arange(40) % 4, 8, 0, "doc")
        >>> sorted((torch.arange(40) % 4)[idx].tolist())
        [0, 0, 1, 1, 2, 2, 3, 3]
    """
    labels = torch.as_tensor(labels).long()
    g = torch.Generator().manual_seed(derive_seed(seed, salt))
    if limit is None or limit >= labels.numel():
        return torch.randperm(labels.numel(), generator=g).tolist()
    classes = torch.unique(labels).tolist()
    per, extra = divmod(check_int("limit", limit), len(classes))
    taken: list[Tensor] = []
    for i, c in enumerate(classes):
        members = torch.nonzero(labels == c).flatten()
        want = per + (1 if i < extra else 0)
        if want > members.numel():
            raise VarMixupError(f"class {c} has {members.numel()} images, fewer than the {want} a stratified subset of "
                                f"{limit} needs; lower the number of images")
        taken.append(members[torch.randperm(members.numel(), generator=g)[:want]])
    chosen = torch.cat(taken)
    return chosen[torch.randperm(chosen.numel(), generator=g)].tolist()


def fixed_subset(n: int, limit: int | None, seed: int, salt: str) -> list[int]:
    if limit is None or limit >= n:
        return list(range(n))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, salt)))
    return sorted(perm[:limit].tolist())
