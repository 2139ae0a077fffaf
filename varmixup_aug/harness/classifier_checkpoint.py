"""Classifier checkpoints: one safetensors file with the weights, optimiser and RNG state, and JSON metadata.

``train-classifier`` writes them; :func:`load_classifier` is the one way to load any of them as a
model that takes pixel-space images in ``[0, 1]``. An architecture is known by its name in
:data:`ARCHITECTURES`, built from the ``model`` entry of the metadata. No pickle.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from varmixup_aug import VarMixupError
from varmixup_aug._io import load_training_state, read_header, read_tensors, save_training_state
from .models import FastCifarNet, PreActResNet

__all__ = [
    "ARCHITECTURES",
    "CHECKPOINT_NAME",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "METADATA_KEY",
    "checkpoint_file",
    "load_classifier",
    "read_classifier_metadata",
    "restore_training_state",
    "save_training_checkpoint",
]

FORMAT_NAME = "varmixup-aug-classifier"
FORMAT_VERSION = 1
METADATA_KEY = "varmixup_aug_classifier"
CHECKPOINT_NAME = "checkpoint.safetensors"
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {"PreActResNet": PreActResNet, "FastCifarNet": FastCifarNet}


def checkpoint_file(path: str | os.PathLike[str]) -> Path:
    """The checkpoint file: ``path`` itself, or ``checkpoint.safetensors`` in the run folder ``path``."""
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT_NAME
    if not p.is_file():
        raise VarMixupError(f"checkpoint {p} does not exist; pass the run folder of train-classifier or its "
                            f"{CHECKPOINT_NAME}")
    return p


def read_classifier_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON metadata of a classifier checkpoint (a file, or a run folder holding ``checkpoint.safetensors``).

    It has ``method``, ``epoch``, ``global_step``, ``args``, ``holdout`` (indices into the train
    split), ``model`` (the constructor arguments) and more.
    """
    p = checkpoint_file(path)
    meta = read_header(p, METADATA_KEY, writer="train-classifier")
    if meta.get("format") != FORMAT_NAME or meta.get("format_version") != FORMAT_VERSION:
        raise VarMixupError(f"{p}: unsupported checkpoint format {meta.get('format')!r} version "
                            f"{meta.get('format_version')!r}; expected {FORMAT_NAME!r} version {FORMAT_VERSION}")
    return meta


def load_classifier(path: str | os.PathLike[str], device: str | torch.device | None = None) -> nn.Module:
    """Load a classifier checkpoint as a model in eval mode that takes images ``(B, C, H, W)`` in ``[0, 1]``.

    Args:
        path: ``checkpoint.safetensors`` or the run folder holding it.
        device: where to put the model (default: CPU).

    The metadata stays available as ``model.checkpoint_metadata`` (see :func:`read_classifier_metadata`).
    """
    p = checkpoint_file(path)
    meta = read_classifier_metadata(p)
    arch = meta.get("architecture")
    if arch not in ARCHITECTURES:
        raise VarMixupError(f"unknown architecture {arch!r} in checkpoint; known: {sorted(ARCHITECTURES)}")
    model = ARCHITECTURES[arch](**meta["model"])
    try:
        model.load_state_dict(read_tensors(p, "model."))
    except RuntimeError as exc:
        raise VarMixupError(f"{p}: weights do not match the architecture in its metadata ({exc})") from exc
    model.checkpoint_metadata = meta  # type: ignore[assignment]
    return model.to(device=device).eval()


def save_training_checkpoint(path: str | os.PathLike[str], model: nn.Module, optimizer: torch.optim.Optimizer | None,
                             meta: dict[str, Any]) -> Path:
    """Write a resumable checkpoint: weights, optimiser and RNG state, and ``meta`` in this format's header."""
    header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **meta}
    return save_training_state(path, model, optimizer, METADATA_KEY, header)


def restore_training_state(path: str | os.PathLike[str], model: nn.Module, optimizer: torch.optim.Optimizer,
                           meta: dict[str, Any]) -> None:
    """Load what :func:`save_training_checkpoint` wrote back into ``model``, ``optimizer`` and torch's RNG."""
    load_training_state(checkpoint_file(path), model, optimizer, METADATA_KEY, meta)
