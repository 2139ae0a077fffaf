"""Shared fixtures and helpers: tiny VAEs, small images and tasks, a tiny trained classifier, an ImageFolder,
and the real CIFAR-10 archive from ../shared/data."""

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


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one thread avoids the cost of thread hand-offs on a busy 2-core machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


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


@pytest.fixture(scope="session")
def erm_model() -> tuple[torch.nn.Module, tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """A tiny PreActResNet trained with ERM for a few seconds; (model, train set, test set)."""
    from varmixup_aug.harness import PreActResNet

    train, test = easy_task(512, 0), easy_task(64, 1)
    torch.manual_seed(0)
    model = PreActResNet(num_classes=4, widths=(8, 16), blocks_per_stage=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(60):
        idx = torch.randint(0, 512, (64,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(train[0][idx]), train[1][idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), train, test


def accuracy(model: torch.nn.Module, x: Tensor, y: Tensor) -> float:
    from varmixup_aug.harness import predict_logits

    return float((predict_logits(model, x).argmax(1) == y).float().mean())


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ImageFolder (train/ and test/, 10 classes of coloured noise, 32x32 PNG) and a tiny VAE."""
    from PIL import Image

    from varmixup_aug import ConvVAE, VAEConfig, save_vae

    root = tmp_path_factory.mktemp("data")
    g = torch.Generator().manual_seed(0)
    colours = torch.rand(10, 3, 1, 1, generator=g)
    for split, n in (("train", 10), ("test", 4)):
        for c in range(10):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                x = (0.2 + 0.6 * colours[c] + 0.08 * torch.randn(3, 32, 32, generator=g)).clamp(0, 1)
                Image.fromarray((x * 255).round().byte().permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    torch.manual_seed(0)
    save_vae(ConvVAE(VAEConfig(image_size=32, latent_dim=4, widths=(4, 8))).eval(), root / "vae.safetensors")
    return root


def train_args(root: Path, out: Path, method: str, *extra: str) -> list[str]:
    """``train-classifier`` arguments for a few steps on :func:`image_folder`."""
    vae = ["--vae", str(root / "vae.safetensors")] if method.startswith("varmixup") else []
    return ["train-classifier", "--method", method, "--data-dir", str(root), "--out", str(out), *vae,
            "--holdout", "20", "--batch-size", "16", "--widths", "4,8", "--epochs", "2", "--checkpoint-every", "2",
            "--no-progress", *extra]
