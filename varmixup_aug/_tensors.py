"""Tensors and devices: images to float, where a module lives, which device to use."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._errors import VarMixupError

__all__ = ["module_device", "module_device_dtype", "resolve_device", "to_float_image", "to_float_images"]


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


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None picks CUDA when available, else the CPU; a CUDA device must be available."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise VarMixupError(f"device={device!r} but CUDA is not available; use device=None or 'cpu' (--device cpu)")
    return dev


def to_float_images(images: Tensor) -> Tensor:
    """A tensor of images as floating point: ``uint8`` is scaled to [0, 1], float is returned as it is."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if not images.is_floating_point():
        raise VarMixupError(f"image tensors must be float or uint8, got {images.dtype}")
    return images


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
        arr = image
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3:
            raise VarMixupError(f"numpy images must be HWC or HW, got shape {image.shape}")
        t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
        return t.float().div_(255.0) if t.dtype == torch.uint8 else t.float()
    if isinstance(image, Tensor):
        return to_float_images(image)
    raise VarMixupError(f"images must be tensors, PIL images or numpy arrays, got {type(image).__name__}")
