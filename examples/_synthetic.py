"""Small learnable random images for the examples' ``--synthetic`` runs (no files needed)."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset


def synthetic_dataset(n: int, num_classes: int, image_size: int, *, seed: int, split: int = 0) -> TensorDataset:
    """``n`` images ``(3, S, S)`` in [0, 1], labels ``i % num_classes``: a colour per class (fixed by
    ``seed``) plus noise (new per ``split``)."""
    colours = torch.rand(num_classes, 3, 1, 1, generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1 + split)
    labels = torch.arange(n) % num_classes
    noise = 0.15 * torch.randn(n, 3, image_size, image_size, generator=g)
    return TensorDataset((colours[labels] + noise).clamp(0, 1), labels)
