"""Shared fixtures: tiny VAEs, a tiny trained classifier, an ImageFolder, and the real CIFAR-10 archive from
../shared/data. The builders they use (and that test files import) live in ``_helpers.py``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from torch import Tensor

from _helpers import CIFAR_ARCHIVE, IdentityVAE, easy_task, tiny_conv_vae

if TYPE_CHECKING:
    from varmixup_aug import ConvVAE


@pytest.fixture
def identity_vae() -> IdentityVAE:
    return IdentityVAE()


@pytest.fixture
def tiny_vae() -> ConvVAE:
    return tiny_conv_vae()


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


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ImageFolder (train/ and test/, 10 classes of coloured noise, 32x32 PNG) and a tiny VAE."""
    from PIL import Image

    from varmixup_aug import save_vae

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
    save_vae(tiny_conv_vae(image_size=32), root / "vae.safetensors")
    return root
