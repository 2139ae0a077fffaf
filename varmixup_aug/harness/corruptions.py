"""Common corruptions: 11 albumentations transforms at 3 severities, deterministic under a seed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from varmixup_aug import VarMixupError
from varmixup_aug._checks import check_seed
from varmixup_aug._random import mix_seed
from .data import import_albumentations
from .scoring import as_float_images

__all__ = ["CORRUPTIONS", "SEVERITIES", "corrupt", "corruption_transform"]

SEVERITIES = (1, 2, 3)


# Parameters per severity 1, 2, 3; fixed values (no ranges), so only the inherently random parts
# (noise samples, blur direction, fog particles, elastic field) vary, and those follow the seed.
_CORRUPTION_LEVELS: dict[str, tuple[Any, ...]] = {
    "gaussian_noise": (0.04, 0.07, 0.10),  # noise std, fraction of the pixel range
    "shot_noise": (0.005, 0.015, 0.03),  # ShotNoise scale (1 / photon count)
    "iso_noise": ((0.01, 0.2), (0.03, 0.35), (0.05, 0.5)),  # (colour shift, intensity)
    "gaussian_blur": (0.5, 0.75, 1.0),  # sigma in pixels
    "motion_blur": (3, 5, 7),  # kernel size in pixels, random direction
    "jpeg_compression": (60, 35, 20),  # JPEG quality
    "brightness": (0.1, 0.2, 0.3),  # added to every pixel, fraction of the range
    "contrast": (0.6, 0.4, 0.2),  # contrast factor (blend towards the mean grey)
    "fog": (0.05, 0.1, 0.15),  # RandomFog alpha_coef at fog_coef 0.8
    "pixelate": (0.5, 0.375, 0.25),  # downscale factor (area down, nearest up)
    "elastic_transform": (10.0, 20.0, 30.0),  # ElasticTransform alpha at sigma 4
}


CORRUPTIONS: tuple[str, ...] = tuple(_CORRUPTION_LEVELS)


def corruption_transform(name: str, severity: int) -> Any:
    """The albumentations transform (``p=1``) of corruption ``name`` at ``severity`` 1, 2 or 3.

    The corruptions (parameters per severity in ``_CORRUPTION_LEVELS``): ``gaussian_noise``,
    ``shot_noise``, ``iso_noise``, ``gaussian_blur``, ``motion_blur``, ``jpeg_compression``,
    ``brightness``, ``contrast``, ``fog``, ``pixelate``, ``elastic_transform``. They act on
    ``uint8`` HWC RGB images.
    """
    if name not in _CORRUPTION_LEVELS:
        raise VarMixupError(f"corruption must be one of {list(CORRUPTIONS)}, got {name!r}")
    if severity not in SEVERITIES:
        raise VarMixupError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    A = import_albumentations()
    import cv2

    v = _CORRUPTION_LEVELS[name][severity - 1]
    builders: dict[str, Callable[[], Any]] = {
        "gaussian_noise": lambda: A.GaussNoise(std_range=(v, v), per_channel=True, p=1.0),
        "shot_noise": lambda: A.ShotNoise(scale_range=(v, v), p=1.0),
        "iso_noise": lambda: A.ISONoise(color_shift=(v[0], v[0]), intensity=(v[1], v[1]), p=1.0),
        "gaussian_blur": lambda: A.GaussianBlur(blur_limit=0, sigma_limit=(v, v), p=1.0),
        "motion_blur": lambda: A.MotionBlur(blur_limit=(v, v), p=1.0),
        "jpeg_compression": lambda: A.ImageCompression(compression_type="jpeg", quality_range=(v, v), p=1.0),
        "brightness": lambda: A.RandomBrightnessContrast(brightness_limit=(v, v), contrast_limit=(0.0, 0.0), p=1.0),
        "contrast": lambda: A.ColorJitter(brightness=(1.0, 1.0), contrast=(v, v), saturation=(1.0, 1.0),
                                          hue=(0.0, 0.0), p=1.0),
        "fog": lambda: A.RandomFog(fog_coef_range=(0.8, 0.8), alpha_coef=v, p=1.0),
        "pixelate": lambda: A.Downscale(scale_range=(v, v), p=1.0, interpolation_pair={
            "downscale": cv2.INTER_AREA, "upscale": cv2.INTER_NEAREST}),
        "elastic_transform": lambda: A.ElasticTransform(alpha=v, sigma=4.0, border_mode=cv2.BORDER_REFLECT_101,
                                                        p=1.0),
    }
    return builders[name]()


def corrupt(images: Tensor, name: str, severity: int, *, seed: int | None = 0) -> Tensor:
    """Apply corruption ``name`` at ``severity`` (1-3) to a batch, reproducibly.

    Images are quantised to ``uint8`` (lossless for images decoded from 8-bit files), corrupted
    one by one with albumentations, and returned in the input's dtype in ``[0, 1]``.

    Seeding: image ``i`` is corrupted with an albumentations seed derived from
    ``(seed, name, severity, i)``, so the result depends only on the seed and the image's
    position: ``corrupt(x[:k]) == corrupt(x)[:k]``. ``seed=None`` draws the seed from torch's
    global RNG (reproducible under ``torch.manual_seed``).

    Args:
        images: ``(B, 3, H, W)`` float in ``[0, 1]`` (or ``uint8``).
        name: one of :data:`CORRUPTIONS`.
        severity: 1, 2 or 3.
        seed: int seed, or ``None`` (see above).

    Returns:
        ``(B, 3, H, W)``, same dtype (float32 for ``uint8`` input) and device, values in ``[0, 1]``.

    Example:
        >>> import torch
        >>> x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        >>> y = corrupt(x, "gaussian_noise", 2, seed=0)
        >>> y.shape, y.dtype, bool(torch.equal(y, corrupt(x, "gaussian_noise", 2, seed=0)))
        (torch.Size([2, 3, 32, 32]), torch.float32, True)
    """
    import numpy as np

    x = as_float_images(images)
    if x.shape[1] != 3:
        raise VarMixupError(f"images must be RGB (B, 3, H, W) for the corruptions, got {tuple(x.shape)}")
    if check_seed(seed) is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    A = import_albumentations()
    compose = A.Compose([corruption_transform(name, severity)], seed=0)
    base = mix_seed(seed, "corruption", name, severity)
    pixels = (x.detach().to("cpu", torch.float32) * 255.0).round_().clamp_(0, 255).to(torch.uint8)
    hwc = pixels.permute(0, 2, 3, 1).contiguous().numpy()
    out = np.empty_like(hwc)
    for i in range(hwc.shape[0]):
        compose.set_random_seed((base + i) % 2**32)
        out[i] = compose(image=hwc[i])["image"]
    result = torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)
    dtype = images.dtype if images.is_floating_point() else torch.float32
    return result.to(device=images.device, dtype=dtype)
