"""Benchmarks of real use: a training step and a training epoch with VarMixup against torchvision MixUp.

    python benchmarks/real_use.py                 # full run (quiet machine; about 15 min on 2 CPU cores)
    python benchmarks/real_use.py --quick         # a smoke run (used by the test suite)

1. **Training step**, one process, side by side: a step with a batch mixed by torchvision's
   ``v2.MixUp`` against a step with a VarMixup batch decoded from cached latents
   (``VarMixupCollate`` on ``Posterior`` items, the shipped CIFAR-10 VAE), for three classifiers:
   a CIFAR ResNet-18 (torchvision's, 3x3 stem and no max-pool: 11.2 M parameters), the fast network
   of the reproduction (``FastCifarNet``) and the small CNN of the demo (the worst case: its step is
   cheapest, so the decode weighs most).
2. **Training epoch** with ``num_workers=2``: the same DataLoader shape for both, mixing in the
   workers' collate while the main process steps (VarMixup decodes there), images per second.

Prints a table and writes ``benchmarks/results-real-use.json``. Ratios are the numbers to compare;
absolute times drift on shared machines.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import median_time  # noqa: E402  (one timing helper for both benchmark scripts)


def cifar_resnet18(num_classes: int = 10) -> nn.Module:
    """torchvision's ResNet-18 with the CIFAR stem: a 3x3 stride-1 first conv and no max-pool."""
    from torchvision.models import resnet18

    model = resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def classifiers() -> dict[str, Callable[[], nn.Module]]:
    from varmixup_aug.harness import FastCifarNet, SmallCNN

    return {"cifar_resnet18": cifar_resnet18, "fast_cifar_net": FastCifarNet, "small_cnn (worst case)": SmallCNN}


def items(vae: Any, n: int, seed: int) -> tuple[list[Any], list[Any]]:
    """``n`` random images as ``(image, label)`` items, and the same as ``(Posterior, label)`` cached latents."""
    from varmixup_aug import Posterior

    g = torch.Generator().manual_seed(seed)
    images, labels = torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)
    with torch.no_grad():
        mu, logvar = vae.encode(images)
    return ([(images[i], int(labels[i])) for i in range(n)],
            [(Posterior(mu[i], logvar[i]), int(labels[i])) for i in range(n)])


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, target: torch.Tensor) -> None:
    loss = torch.sum(-target * torch.log_softmax(model(x.contiguous(memory_format=torch.channels_last)), 1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def step_ratios(vae: Any, args: argparse.Namespace) -> dict[str, Any]:
    from torchvision.transforms import v2

    from varmixup_aug import VarMixupCollate

    image_items, latent_items = items(vae, args.batch, seed=0)
    tv_mixup = v2.MixUp(alpha=1.0, num_classes=10)
    vm_collate = VarMixupCollate(vae, num_classes=10, seed=0)
    rows = {}
    for name, make in classifiers().items():
        torch.manual_seed(0)
        model = make().to(memory_format=torch.channels_last).train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        tv = median_time(lambda: _train_step(model, opt, *tv_mixup(*default_collate(image_items))),
                         min_run_time=args.min_run_time)
        vm = median_time(lambda: _train_step(model, opt, *vm_collate(latent_items)), min_run_time=args.min_run_time)
        rows[name] = {"torchvision_mixup_step_s": tv, "varmixup_cached_step_s": vm, "ratio": vm / tv,
                      "parameters": sum(p.numel() for p in model.parameters())}
    return rows


class _Items(Dataset):
    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        return self.items[i]


class _TorchvisionMixupCollate:
    def __init__(self) -> None:
        from torchvision.transforms import v2

        self.mixup = v2.MixUp(alpha=1.0, num_classes=10)

    def __call__(self, batch: list[Any]) -> Any:
        return self.mixup(*default_collate(batch))


def epoch_throughput(vae: Any, args: argparse.Namespace) -> dict[str, Any]:
    from varmixup_aug import VarMixupCollate

    image_items, latent_items = items(vae, args.epoch_images, seed=1)
    sources = {
        "torchvision_mixup": (_Items(image_items), _TorchvisionMixupCollate()),
        "varmixup_cached": (_Items(latent_items), VarMixupCollate(vae, num_classes=10, seed=0)),
    }
    rows: dict[str, Any] = {}
    for name, make in classifiers().items():
        if name.startswith("small"):
            continue
        rows[name] = {}
        for source, (dataset, collate) in sources.items():
            torch.manual_seed(0)
            model = make().to(memory_format=torch.channels_last).train()
            opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
            loader = DataLoader(dataset, batch_size=args.batch, shuffle=True, num_workers=2, collate_fn=collate,
                                drop_last=True, persistent_workers=True,
                                generator=torch.Generator().manual_seed(0))
            for x, t in loader:  # warm-up epoch: workers start, caches fill
                _train_step(model, opt, x, t)
            start = time.perf_counter()
            seen = 0
            for x, t in loader:
                _train_step(model, opt, x, t)
                seen += x.shape[0]
            rows[name][source] = seen / (time.perf_counter() - start)
        rows[name]["ratio_varmixup_to_torchvision"] = rows[name]["varmixup_cached"] / rows[name]["torchvision_mixup"]
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes and short timings (smoke test)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--epoch-images", type=int, default=2560)
    p.add_argument("--min-run-time", type=float, default=5.0)
    p.add_argument("--out", default=str(HERE / "results-real-use.json"))
    args = p.parse_args()
    if args.quick:
        args.batch, args.epoch_images, args.min_run_time = 8, 32, 0.05
    from varmixup_aug import load_pretrained_vae

    vae = load_pretrained_vae("cifar10")
    steps = step_ratios(vae, args)
    epochs = epoch_throughput(vae, args)
    print(f"Training step, batch {args.batch}: VarMixup from cached latents vs torchvision MixUp (side by side)")
    print(f"{'classifier':<24} {'tv MixUp (ms)':>14} {'VarMixup (ms)':>14} {'ratio':>7}")
    for name, r in steps.items():
        print(f"{name:<24} {1e3 * r['torchvision_mixup_step_s']:>14.1f} {1e3 * r['varmixup_cached_step_s']:>14.1f} "
              f"{r['ratio']:>7.3f}")
    print(f"\nTraining epoch, {args.epoch_images} images, num_workers=2, mixing in the workers (images/s)")
    print(f"{'classifier':<24} {'tv MixUp':>10} {'VarMixup':>10} {'ratio':>7}")
    for name, r in epochs.items():
        print(f"{name:<24} {r['torchvision_mixup']:>10.0f} {r['varmixup_cached']:>10.0f} "
              f"{r['ratio_varmixup_to_torchvision']:>7.3f}")
    result = {"settings": {**vars(args), "torch": torch.__version__, "threads": torch.get_num_threads(),
                           "machine": platform.machine(), "python": sys.version.split()[0]},
              "training_step": steps, "training_epoch": epochs}
    Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
