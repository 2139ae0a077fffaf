"""``examples/timm_loop.py``: VarMixup as ``mixup_fn`` in a timm training loop with ``SoftTargetCrossEntropy``."""

from __future__ import annotations

import json
import math
from types import ModuleType

import pytest
import torch
from torch import Tensor
from torch.utils.data import DataLoader

timm = pytest.importorskip("timm")
import timm.loss  # noqa: E402
import timm.optim  # noqa: E402

from _examples import load_example  # noqa: E402
from varmixup_aug import VarMixup, load_pretrained_vae  # noqa: E402

NUM_CLASSES = 10


@pytest.fixture(scope="module")
def example() -> ModuleType:
    return load_example("timm_loop")


@pytest.fixture(scope="module")
def vae() -> torch.nn.Module:
    return load_pretrained_vae("cifar10")


class Recording:
    """Wraps a ``mixup_fn`` and keeps what it returned."""

    def __init__(self, mixup_fn: VarMixup) -> None:
        self.mixup_fn = mixup_fn
        self.images: list[Tensor] = []
        self.targets: list[Tensor] = []

    def __call__(self, input: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        input, target = self.mixup_fn(input, target)
        self.images.append(input.detach())
        self.targets.append(target.detach())
        return input, target


def make_model(name: str) -> tuple[torch.nn.Module, tuple[float, ...], tuple[float, ...]]:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES)
    config = timm.data.resolve_model_data_config(model)
    return model, tuple(config["mean"]), tuple(config["std"])


def train(example: ModuleType, model: torch.nn.Module, loader: DataLoader, mixup_fn: Recording, epochs: int,
          opt: str = "sgd", lr: float = 0.05) -> list[float]:
    optimizer = timm.optim.create_optimizer_v2(model, opt=opt, lr=lr, weight_decay=5e-4)
    losses: list[float] = []
    for epoch in range(epochs):
        step_losses, _ = example.train_one_epoch(
            epoch, model, loader, optimizer, timm.loss.SoftTargetCrossEntropy(), device=torch.device("cpu"),
            mixup_fn=mixup_fn, log_every=0)
        losses += step_losses
    return losses


def check_batches(recording: Recording, mean: tuple[float, ...], std: tuple[float, ...], batch: int) -> None:
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    for images, targets in zip(recording.images, recording.targets):
        assert targets.shape == (batch, NUM_CLASSES)
        torch.testing.assert_close(targets.sum(1), torch.ones(batch))
        pixels = images * s + m  # back from the model's normalisation
        assert images.shape == (batch, 3, 32, 32) and pixels.min() > -1e-4 and pixels.max() < 1 + 1e-4
    assert any(bool(((t > 0) & (t < 1)).any()) for t in recording.targets)  # labels were mixed


class TestTimmLoop:
    def test_learns_with_varmixup_as_mixup_fn(self, example, vae):
        model, mean, std = make_model("test_resnet")
        train_set = example.Normalized(example.synthetic_dataset(128, NUM_CLASSES, 32, seed=0), mean, std)
        val_set = example.Normalized(example.synthetic_dataset(128, NUM_CLASSES, 32, seed=0, split=1), mean, std)
        loader = DataLoader(train_set, batch_size=32, shuffle=True, drop_last=True,
                            generator=torch.Generator().manual_seed(0))
        recording = Recording(VarMixup(vae, num_classes=NUM_CLASSES, input_normalization=(mean, std), seed=0))
        val_loader = DataLoader(val_set, batch_size=64)
        before = example.validate(model, val_loader, device=torch.device("cpu"))

        losses = train(example, model, loader, recording, epochs=5)

        after = example.validate(model, val_loader, device=torch.device("cpu"))
        assert len(losses) == 20 and all(math.isfinite(v) for v in losses)
        assert sum(losses[-5:]) < sum(losses[:5])
        assert after["loss"] < before["loss"] and after["top1"] > 30.0
        check_batches(recording, mean, std, 32)

    def test_real_cifar10_images(self, example, vae, cifar_root):
        from torchvision.datasets import ImageFolder
        from torchvision.transforms import v2

        model, mean, std = make_model("resnet18")
        to_tensor = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
        augment = v2.Compose([v2.RandomCrop(32, padding=2), v2.RandomHorizontalFlip(), *to_tensor])
        chosen = torch.randperm(50_000, generator=torch.Generator().manual_seed(0))[:64].tolist()
        train_set = torch.utils.data.Subset(ImageFolder(str(cifar_root / "train"), transform=augment), chosen)
        clean_set = torch.utils.data.Subset(ImageFolder(str(cifar_root / "train"), transform=v2.Compose(to_tensor)),
                                            chosen)
        loader = DataLoader(train_set, batch_size=32, shuffle=True, drop_last=True, num_workers=2,
                            persistent_workers=True, generator=torch.Generator().manual_seed(0))
        recording = Recording(VarMixup(vae, num_classes=NUM_CLASSES, input_normalization=(mean, std), seed=0))
        clean_x, clean_y = next(iter(DataLoader(clean_set, batch_size=64)))

        def clean_loss() -> float:  # batch statistics (train mode): no running-stat lag after a few steps
            with torch.no_grad():
                return float(torch.nn.functional.cross_entropy(model.train()(clean_x), clean_y))

        before = clean_loss()
        losses = train(example, model, loader, recording, epochs=8, opt="adamw", lr=1e-3)

        assert len(losses) == 16 and all(math.isfinite(v) for v in losses)
        assert sum(losses[-4:]) < sum(losses[:4])
        assert clean_loss() < before
        check_batches(recording, mean, std, 32)

    def test_script_end_to_end(self, example, tmp_path):
        summary = example.main(["--synthetic", "--model", "test_resnet", "--limit", "64", "--limit-val", "32",
                                "--batch-size", "16", "--max-steps", "3", "--workers", "2", "--log-every", "0",
                                "--out", str(tmp_path)])
        written = json.loads((tmp_path / "summary.json").read_text())
        assert summary["steps"] == written["steps"] == 3
        assert len(written["losses"]) == 3 and all(math.isfinite(v) for v in written["losses"])
        assert written["val"]["images"] == 32

    def test_mixup_off_epoch_from_the_command_line(self, example, tmp_path):
        summary = example.main(["--synthetic", "--model", "test_resnet", "--limit", "32", "--limit-val", "16",
                                "--batch-size", "16", "--epochs", "2", "--mixup-off-epoch", "1", "--workers", "0",
                                "--log-every", "0", "--out", str(tmp_path)])
        assert summary["steps"] == 4
        assert "mixup_off_epoch=1" in json.loads((tmp_path / "summary.json").read_text())["mixup"]
