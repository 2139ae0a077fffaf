"""Test builders shared by every test file: the repository root, tiny VAEs, small images and tasks, and the
``train-classifier`` arguments for a tiny run. Fixtures built on them live in ``conftest.py``; test files import
these with ``from _helpers import ...`` (``tests/`` is on pytest's ``pythonpath``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from varmixup_aug import ConvVAE

REPO = Path(__file__).resolve().parents[1]
CIFAR_ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz"


def tiny_conv_vae(*, image_size: int = 8, latent_dim: int = 4, widths: tuple[int, ...] = (4, 8), seed: int = 0,
                  **config: Any) -> ConvVAE:
    """A seeded :class:`~varmixup_aug.ConvVAE` in eval mode: 8x8 images, 4 latents, widths (4, 8) by default."""
    from varmixup_aug import ConvVAE, VAEConfig

    torch.manual_seed(seed)
    return ConvVAE(VAEConfig(image_size=image_size, latent_dim=latent_dim, widths=widths, **config)).eval()


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
    """Wraps a VAE and counts encoder and decoder calls (one call per batch)."""

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


def smooth_images(n: int = 4, seed: int = 0) -> Tensor:
    """``(n, 3, 32, 32)`` smooth random images in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 8, 8, generator=g)
    return torch.nn.functional.interpolate(low, size=32, mode="bilinear", align_corners=False).clamp(0, 1)


def easy_task(n: int, seed: int, k: int = 4, size: int = 16) -> tuple[Tensor, Tensor]:
    """Class c is a fixed +-1 pattern of amplitude 0.03 around grey, plus N(0, 0.03^2) noise.

    Easy to learn (the pattern is spread over every pixel) but an L-inf change of 8/255 ~ 0.031 per
    pixel can erase it, so an undefended model must lose accuracy under PGD at 8/255.
    """
    g = torch.Generator().manual_seed(seed)
    protos = torch.randint(0, 2, (k, 3, size, size), generator=torch.Generator().manual_seed(123)).float() * 2 - 1
    y = torch.arange(n) % k
    x = 0.5 + 0.03 * protos[y] + 0.03 * torch.randn(n, 3, size, size, generator=g)
    return x.clamp(0, 1), y


def accuracy(model: torch.nn.Module, x: Tensor, y: Tensor) -> float:
    from varmixup_aug.harness import predict_logits

    return float((predict_logits(model, x).argmax(1) == y).float().mean())


def train_args(root: Path, out: Path, method: str, *extra: str) -> list[str]:
    """``train-classifier`` arguments for a few steps on :func:`image_folder`."""
    vae = ["--vae", str(root / "vae.safetensors")] if method.startswith("varmixup") else []
    return ["train-classifier", "--method", method, "--data-dir", str(root), "--out", str(out), *vae,
            "--holdout", "20", "--batch-size", "16", "--widths", "4,8", "--epochs", "2", "--checkpoint-every", "2",
            "--no-progress", *extra]
