"""Tensors and devices: images to float, where a module lives, which device to use."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._errors import VarMixupError

__all__ = ["to_float_image"]


def to_float_image(image: Any) -> Tensor:
    """One image (tensor, PIL, or HWC numpy array) to a float ``(C, H, W)`` tensor.

    ``uint8`` data is scaled to [0, 1]; float data is kept as it is.
    """
    import numpy as np
    from PIL import Image

    if isinstance(image, Image.Image):
        from torchvision.transforms.v2.functional import pil_to_tensor

        return pil_to_tensor(image).float().div_(255.0)
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3:
            raise VarMixupError(f"numpy images must be HWC or HW, got shape {image.shape}")
        t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
        return t.float().div_(255.0) if t.dtype == torch.uint8 else t.float()
    if isinstance(image, Tensor):
        if image.dtype == torch.uint8:
            return image.float().div_(255.0)
        if not image.is_floating_point():
            raise VarMixupError(f"image tensors must be float or uint8, got {image.dtype}")
        return image
    raise VarMixupError(f"images must be tensors, PIL images or numpy arrays, got {type(image).__name__}")
