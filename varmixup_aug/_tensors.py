"""Tensors and devices: images to float, where a module lives, which device to use."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._errors import VarMixupError

__all__ = ["module_device", "module_device_dtype", "numpy_images", "resolve_device", "to_float_image",
           "to_float_images"]

_CHANNEL_COUNTS = (1, 3, 4)  # grey, RGB, RGBA: what a channel axis of an image holds


def module_device_dtype(module: Any) -> tuple[torch.device | None, torch.dtype | None]:
    """Device and floating dtype of the first parameter (else buffer) of ``module``; None where unknown.

    Works on anything with ``parameters()``/``buffers()``, e.g. a VAE that is not an ``nn.Module``.
    """
    for attr in ("parameters", "buffers"):
        tensors = getattr(module, attr, None)
        if callable(tensors):
            for t in tensors():
                return t.device, (t.dtype if t.is_floating_point() else None)
    return None, None


def module_device(module: Any) -> torch.device:
    """Device of ``module``'s first parameter or buffer; the CPU if it has none."""
    return module_device_dtype(module)[0] or torch.device("cpu")


def resolve_device(device: str | torch.device | None, *, name: str = "device") -> torch.device:
    """``"auto"``/None picks CUDA when available, else the CPU; a CUDA (or MPS, XPU) device must be available."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise VarMixupError(
            f"{name} must be a torch device such as 'cpu', 'cuda' or 'cuda:1' (or 'auto'), got {device!r}"
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise VarMixupError(f"device={device!r} but CUDA is not available; use device=None or 'cpu' (--device cpu)")
    backend = getattr(torch, dev.type, None) if dev.type in ("mps", "xpu") else None
    if backend is not None and not backend.is_available():
        raise VarMixupError(f"{name}={device!r} but {dev.type} is not available here; use {name}='cpu' or 'auto'")
    return dev


def to_float_images(images: Tensor) -> Tensor:
    """A tensor of images as floating point: ``uint8`` is scaled to [0, 1], float is returned as it is."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if not images.is_floating_point():
        raise VarMixupError(f"image tensors must be float or uint8, got {images.dtype}")
    return images


def numpy_images(arr: Any, *, name: str = "numpy images", batched: bool = False) -> Tensor:
    """A numpy image ``(H, W, C)`` or ``(H, W)`` (with ``batched``: ``(N, H, W, C)``) as a channel-first tensor,
    dtype kept. numpy images are channel-last (PIL, OpenCV, albumentations); an array whose last axis cannot be
    channels while its first image axis could is refused as channel-first rather than read wrongly."""
    import numpy as np

    arr = np.asarray(arr)
    lead = 1 if batched else 0
    if arr.ndim == 2 + lead:
        arr = arr[..., None]
    layout = "(N, H, W, C)" if batched else "(H, W, C) or (H, W)"
    if arr.ndim != 3 + lead:
        raise VarMixupError(f"{name} must be channel-last {layout}, got shape {arr.shape}")
    if arr.shape[-1] not in _CHANNEL_COUNTS and arr.shape[lead] in _CHANNEL_COUNTS:
        order = "(0, 2, 3, 1)" if batched else "(1, 2, 0)"
        raise VarMixupError(
            f"{name} must be channel-last {layout} like PIL and albumentations give them, got shape {arr.shape}, "
            f"which looks channel-first (C, H, W); pass arr.transpose{order} or a torch tensor (C, H, W)"
        )
    t = torch.from_numpy(np.ascontiguousarray(arr))
    return t.permute(0, 3, 1, 2) if batched else t.permute(2, 0, 1)


def to_float_image(image: Any) -> Tensor:
    """One image (tensor, PIL, or HWC numpy array) to a float ``(C, H, W)`` tensor.

    ``uint8`` data is scaled to [0, 1]; float data is kept as it is.
    """
    import numpy as np
    from PIL import Image

    if isinstance(image, Image.Image):
        from torchvision.transforms.v2.functional import pil_to_tensor

        return to_float_images(pil_to_tensor(image))
    if isinstance(image, np.ndarray):
        t = numpy_images(image)
        return t.float().div_(255.0) if t.dtype == torch.uint8 else t.float()
    if isinstance(image, Tensor):
        return to_float_images(image)
    raise VarMixupError(f"images must be tensors, PIL images or numpy arrays, got {type(image).__name__}")
