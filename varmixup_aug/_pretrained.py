"""VAEs shipped with the package (files under the top-level ``pretrained_vae/`` folder)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from ._checkpoint import load_vae, read_vae_metadata
from ._errors import VarMixupError
from ._vae import ConvVAE

__all__ = ["list_pretrained", "load_pretrained_vae", "pretrained_path"]

# name -> file in pretrained_vae/ and its sha256. Update the hash whenever the file changes.
_REGISTRY: dict[str, dict[str, str]] = {
    "cifar10": {
        "file": "cifar10.safetensors",
        "sha256": "b35a5cd82abfed741184bad7444370eb4b768cef6cfb0c8130622b2f040d9c05",
        "description": "ConvVAE for 32x32 RGB images in [0, 1], trained on the CIFAR-10 train split",
    },
}


def _pretrained_dir() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "pretrained_vae", here.parent / "pretrained_vae"):  # wheel, source tree
        if candidate.is_dir():
            return candidate
    raise VarMixupError("the pretrained_vae folder is missing from this installation; reinstall varmixup-aug")


def list_pretrained() -> dict[str, str]:
    """Names of the shipped VAEs and what they are, e.g. ``{"cifar10": "ConvVAE for ..."}``."""
    return {name: entry["description"] for name, entry in _REGISTRY.items()}


def pretrained_path(name: str) -> Path:
    """Path of the shipped checkpoint ``name``."""
    if name not in _REGISTRY:
        raise VarMixupError(f"unknown pretrained VAE {name!r}; available: {sorted(_REGISTRY)}")
    path = _pretrained_dir() / _REGISTRY[name]["file"]
    if not path.is_file():
        raise VarMixupError(f"pretrained VAE file {path} is missing; reinstall varmixup-aug")
    return path


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_pretrained_vae(
    name: str = "cifar10",
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    path: str | Path | None = None,
) -> ConvVAE:
    """Load a shipped VAE by name, after checking the file's sha256 against the recorded value.

    Works offline: the files are installed with the package.

    Args:
        name: one of :func:`list_pretrained`.
        device, dtype: as in :func:`load_vae`.
        path: check and load this file instead of the installed one (e.g. a copy).

    Raises:
        VarMixupError: unknown name, missing file, or a sha256 mismatch (a corrupted or
            replaced file).
    """
    file = Path(path) if path is not None else pretrained_path(name)
    expected = _REGISTRY[name]["sha256"] if name in _REGISTRY else None
    if expected is None:
        raise VarMixupError(f"unknown pretrained VAE {name!r}; available: {sorted(_REGISTRY)}")
    if not file.is_file():
        raise VarMixupError(f"{file}: checkpoint file does not exist")
    actual = file_sha256(file)
    if actual != expected:
        raise VarMixupError(
            f"{file}: sha256 {actual} does not match the recorded {expected} for pretrained VAE {name!r}; "
            "the file is corrupted or was replaced, reinstall varmixup-aug"
        )
    return load_vae(file, device=device, dtype=dtype)


def pretrained_metadata(name: str = "cifar10") -> dict[str, Any]:
    """The JSON header (config, training report) of a shipped VAE."""
    return read_vae_metadata(pretrained_path(name))
