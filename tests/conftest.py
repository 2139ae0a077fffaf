"""Shared fixtures: tiny VAEs, and the real CIFAR-10 archive from ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import Tensor

REPO = Path(__file__).resolve().parents[1]
CIFAR_ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz"


class IdentityVAE(torch.nn.Module):
    """encode(x) = (x, -inf): the posterior is a point mass at the image, decode is identity."""

    def __init__(self, channels: int = 3, image_size: int = 8) -> None:
        super().__init__()
        self.channels, self.image_size, self.input_range = channels, image_size, (0.0, 1.0)
        self.dummy = torch.nn.Parameter(torch.zeros(()), requires_grad=False)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x.clone(), torch.full_like(x, -float("inf"))

    def decode(self, z: Tensor) -> Tensor:
        return z.clone()


class CountingVAE(torch.nn.Module):
    """Wraps a VAE and counts encoder and decoder calls."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.encode_calls = 0
        self.decode_calls = 0
        for name in ("channels", "image_size", "input_range"):
            setattr(self, name, getattr(inner, name))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self.encode_calls += 1
        return self.inner.encode(x)

    def decode(self, z: Tensor) -> Tensor:
        self.decode_calls += 1
        return self.inner.decode(z)


@pytest.fixture
def identity_vae() -> IdentityVAE:
    return IdentityVAE()


@pytest.fixture
def tiny_vae():
    from varmixup_aug import ConvVAE, VAEConfig

    torch.manual_seed(0)
    return ConvVAE(VAEConfig(image_size=8, latent_dim=4, widths=(4, 8))).eval()


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real CIFAR-10 from ../shared/data, unpacked once per session into a temp folder."""
    if not CIFAR_ARCHIVE.is_file():
        pytest.skip(f"real CIFAR-10 archive not found at ../shared/data/{CIFAR_ARCHIVE.name}")
    from varmixup_aug.harness.data import _unpack_archive

    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("VARMIXUP_AUG_CACHE")
    os.environ["VARMIXUP_AUG_CACHE"] = str(cache)
    try:
        return _unpack_archive(CIFAR_ARCHIVE)
    finally:
        if old is None:
            os.environ.pop("VARMIXUP_AUG_CACHE")
        else:
            os.environ["VARMIXUP_AUG_CACHE"] = old


@pytest.fixture(scope="session")
def cifar_test_images(cifar_root: Path) -> tuple[Tensor, Tensor]:
    """A fixed set of 256 real CIFAR-10 test images, uint8 (256, 3, 32, 32), and labels."""
    from varmixup_aug.harness import load_tensor_dataset, open_image_dataset

    return load_tensor_dataset(open_image_dataset(cifar_root, "test"), limit=256, progress=False)
