"""VAE checkpoints: one ``.safetensors`` file with a JSON config in its metadata. No pickle."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ._errors import VarMixupError
from ._io import read_header, read_tensors, write_safetensors
from ._vae import ConvVAE, VAEConfig

__all__ = ["save_vae", "load_vae", "read_vae_metadata", "FORMAT_NAME", "FORMAT_VERSION"]

FORMAT_NAME = "varmixup-aug-vae"
FORMAT_VERSION = 1
_METADATA_KEY = "varmixup_aug"
_ARCHITECTURES = {"ConvVAE": ConvVAE}


def save_vae(
    vae: ConvVAE,
    path: str | os.PathLike[str],
    *,
    trained_on: str = "unknown",
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``vae`` to ``path`` as safetensors with a JSON config in the metadata.

    Args:
        vae: a :class:`ConvVAE`.
        path: destination file, conventionally ending in ``.safetensors``.
        trained_on: free text naming the training data, stored in the metadata.
        extra: more JSON-serialisable metadata (e.g. the training report).

    The file is written to a temporary name and renamed, so a crash never leaves a
    half-written checkpoint at ``path``.
    """
    if not isinstance(vae, ConvVAE):
        raise VarMixupError(
            f"save_vae expects a ConvVAE, got {type(vae).__name__}; save other modules with their own format"
        )
    path = Path(path)
    header = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "architecture": type(vae).__name__,
        "config": vae.config.to_dict(),
        "input_range": list(vae.config.input_range),
        "trained_on": trained_on,
        "extra": extra or {},
    }
    return write_safetensors(path, vae.state_dict(), _METADATA_KEY, header, sort_keys=True)


def read_vae_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the JSON header stored in a VAE checkpoint, without loading tensors.

    Args:
        path: a ``.safetensors`` checkpoint written by :func:`save_vae`.

    Raises:
        VarMixupError: the file is missing, not safetensors, or of another format or version.
    """
    path = Path(path)
    header = read_header(path, _METADATA_KEY, writer="save_vae")
    if header.get("format") != FORMAT_NAME:
        raise VarMixupError(f"{path}: unknown checkpoint format {header.get('format')!r}, expected {FORMAT_NAME!r}")
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise VarMixupError(
            f"{path}: unsupported format_version {version!r}; this varmixup-aug reads version {FORMAT_VERSION}"
            " (upgrade the package to read newer files)"
        )
    return header


def load_vae(
    path: str | os.PathLike[str],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> ConvVAE:
    """Load a VAE written by :func:`save_vae`, or a shipped one by name.

    Args:
        path: the ``.safetensors`` checkpoint, or the name of a shipped VAE (one of
            :func:`list_pretrained`, e.g. ``"cifar10"``), which :func:`load_pretrained_vae` loads after
            checking its sha256. An existing file of that name wins over a shipped VAE's name.
        device: where to put the model (default: CPU).
        dtype: floating dtype of the parameters (default: as stored).

    Returns:
        The VAE in eval mode with ``requires_grad`` off.

    Raises:
        VarMixupError: ``path`` is neither an existing file nor a shipped VAE's name; the file is
            missing, truncated, not safetensors, of another format or version, or its tensors do not
            match the architecture in its config.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise VarMixupError(f"load_vae expects a checkpoint path or a shipped VAE's name, got {type(path).__name__}")
    if not Path(path).exists():
        from ._pretrained import list_pretrained, load_pretrained_vae  # it reads its files through this module

        names = sorted(list_pretrained())
        if path in names:
            return load_pretrained_vae(str(path), device=device, dtype=dtype)
        if isinstance(path, str) and not Path(path).suffix and os.sep not in path and "/" not in path:
            raise VarMixupError(f"load_vae: {path!r} is neither a checkpoint file nor a shipped VAE's name; "
                                f"pass the path of a file written by save_vae, or one of {names}")
    return _load_file(Path(path), device, dtype)


def _load_file(path: Path, device: torch.device | str | None, dtype: torch.dtype | None) -> ConvVAE:
    header = read_vae_metadata(path)
    vae = _build_vae(path, header)
    vae.load_state_dict(_read_state(path, vae.state_dict(), header["architecture"]))
    vae.trained_on = header.get("trained_on", "unknown")  # type: ignore[attr-defined]
    vae.checkpoint_metadata = header  # type: ignore[assignment]  # nn.Module types attributes as Tensor | Module
    vae.eval().requires_grad_(False)
    return vae.to(device=device, dtype=dtype)


def _build_vae(path: Path, header: dict[str, Any]) -> ConvVAE:
    arch = header.get("architecture")
    if arch not in _ARCHITECTURES:
        raise VarMixupError(f"{path}: unknown architecture {arch!r}; known: {sorted(_ARCHITECTURES)}")
    try:
        config = VAEConfig.from_dict(header["config"])
    except (KeyError, TypeError, VarMixupError) as exc:
        raise VarMixupError(f"{path}: invalid VAE config in metadata ({exc})") from exc
    return _ARCHITECTURES[arch](config)


def _read_state(path: Path, expected: dict[str, Any], arch: str) -> dict[str, Any]:
    """The file's tensors, checked against the names and shapes of the architecture's state dict."""
    try:
        state = read_tensors(path)
    except Exception as exc:  # safetensors raises its own error types
        raise VarMixupError(f"{path}: cannot read tensors, the file may be truncated or corrupt ({exc})") from exc
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise VarMixupError(
            f"{path}: tensors do not match the {arch} config: missing {missing[:5]}, unexpected {extra[:5]}"
        )
    for k in expected:
        if state[k].shape != expected[k].shape:
            raise VarMixupError(
                f"{path}: tensor {k!r} has shape {tuple(state[k].shape)}, expected {tuple(expected[k].shape)}")
    return state
