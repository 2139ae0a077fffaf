"""Benchmarks of real use: a training step and a training epoch with VarMixup against torchvision MixUp.

    python benchmarks/real_use.py                 # full run (quiet machine; about 15 min on 2 CPU cores)
    python benchmarks/real_use.py --quick         # a smoke run (used by the test suite)

1. **Training step**, one process, side by side: a step with a batch mixed by torchvision's
   ``v2.MixUp`` against a step with a VarMixup batch decoded from cached latents
   (``VarMixupCollate`` on ``Posterior`` items, the shipped CIFAR-10 VAE), for three classifiers:
   a CIFAR ResNet-18 (torchvision's, 3x3 stem and no max-pool: 11.2 M parameters), the fast network
   of the reproduction (``FastCifarNet``) and the small CNN of the demo (the worst case: its step is
   cheapest, so the decode weighs most).
2. **Training epoch** with ``num_workers=2``, images per second: the same DataLoader shape for all,
   torchvision MixUp in the workers' collate against VarMixup decoding either in the workers' collate
   or in the main process (``VarMixupLoader`` over batches of cached latents).

Every comparison is interleaved: each contender runs once per round, in turn, and the ratio is the
median over rounds of the ratio within a round, so drift of a shared machine hits all contenders alike.
Prints a table and writes ``benchmarks/results-real-use.json``. Ratios are the numbers to compare;
absolute times drift on shared machines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from _common import Items, TorchvisionMixupCollate, cifar_resnet18, interleaved, timed
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate

HERE = Path(__file__).resolve().parent


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
    """Per classifier: seconds per training step with each batch source, and the ratio, interleaved."""
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

        def tv() -> None:
            _train_step(model, opt, *tv_mixup(*default_collate(image_items)))

        def vm() -> None:
            _train_step(model, opt, *vm_collate(latent_items))

        tv(), vm()  # warm-up
        repeats = 1 if name == "cifar_resnet18" else 4
        r = interleaved({"torchvision_mixup": timed(tv, repeats), "varmixup_cached": timed(vm, repeats)},
                        rounds=args.rounds)
        rows[name] = {"torchvision_mixup_step_s": r["torchvision_mixup_s"],
                      "varmixup_cached_step_s": r["varmixup_cached_s"], "ratio": r["ratio_varmixup_cached"], "rounds": r["rounds"],
                      "per_round_s": r["per_round_s"],
                      "parameters": sum(p.numel() for p in model.parameters())}
    return rows


def epoch_throughput(vae: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Images per second over one epoch (after a warm-up epoch), three ways of feeding the same step:

    - ``torchvision_mixup``: ``v2.MixUp`` in the workers' collate;
    - ``varmixup_cached``: ``VarMixupCollate`` in the workers' collate (the decode runs in the workers);
    - ``varmixup_cached_main``: the workers only batch the cached latents, and ``VarMixupLoader`` decodes
      in the main process with all its threads (the on-device path, here on the CPU).
    """
    from varmixup_aug import VarMixup, VarMixupCollate, VarMixupLoader

    image_items, latent_items = items(vae, args.epoch_images, seed=1)
    sources: dict[str, tuple[Dataset, Callable[..., Any], Callable[[Any], Any]]] = {
        "torchvision_mixup": (Items(image_items), TorchvisionMixupCollate(), lambda loader: loader),
        "varmixup_cached": (Items(latent_items), VarMixupCollate(vae, num_classes=10, seed=0), lambda loader: loader),
        "varmixup_cached_main": (Items(latent_items), default_collate,
                                 lambda loader: VarMixupLoader(loader, VarMixup(vae, num_classes=10, seed=0))),
    }
    rows: dict[str, Any] = {}
    for name, make in classifiers().items():
        if name.startswith("small"):
            continue
        contenders = {}
        for source, (dataset, collate, wrap) in sources.items():
            torch.manual_seed(0)
            model = make().to(memory_format=torch.channels_last).train()
            opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
            loader = wrap(DataLoader(dataset, batch_size=args.batch, shuffle=True, num_workers=2, collate_fn=collate,
                                     drop_last=True, persistent_workers=True,
                                     generator=torch.Generator().manual_seed(0)))
            for x, t in loader:  # warm-up epoch: workers start, caches fill
                _train_step(model, opt, x, t)
            contenders[source] = _epoch_timer(model, opt, loader)
        r = interleaved(contenders, rounds=args.epoch_rounds)
        images = args.epoch_images // args.batch * args.batch
        rows[name] = {f"{source}_images_per_s": images / r[f"{source}_s"] for source in sources}
        rows[name].update({f"throughput_ratio_{source}": 1 / r[f"ratio_{source}"] for source in list(sources)[1:]})
        rows[name]["rounds"], rows[name]["per_round_s"] = r["rounds"], r["per_round_s"]
    return rows


def _epoch_timer(model: nn.Module, opt: torch.optim.Optimizer, loader: Any) -> Callable[[], float]:
    def run() -> float:
        start = time.perf_counter()
        for x, t in loader:
            _train_step(model, opt, x, t)
        return time.perf_counter() - start

    return run


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes and short timings (smoke test)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--epoch-images", type=int, default=2560)
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds of the step timing")
    p.add_argument("--epoch-rounds", type=int, default=3, help="interleaved epochs per source")
    p.add_argument("--out", default=str(HERE / "results-real-use.json"))
    args = p.parse_args()
    if args.quick:
        args.batch, args.epoch_images, args.rounds, args.epoch_rounds = 8, 32, 2, 1
    from varmixup_aug import load_pretrained_vae

    vae = load_pretrained_vae("cifar10")
    steps = step_ratios(vae, args)
    epochs = epoch_throughput(vae, args)
    print(f"Training step, batch {args.batch}: VarMixup from cached latents vs torchvision MixUp "
          f"(medians of {args.rounds} interleaved rounds)")
    print(f"{'classifier':<24} {'tv MixUp (ms)':>14} {'VarMixup (ms)':>14} {'ratio':>7}")
    for name, r in steps.items():
        print(f"{name:<24} {1e3 * r['torchvision_mixup_step_s']:>14.1f} {1e3 * r['varmixup_cached_step_s']:>14.1f} "
              f"{r['ratio']:>7.3f}")
    print(f"\nTraining epoch, {args.epoch_images} images, num_workers=2 (images/s, medians of {args.epoch_rounds} "
          "interleaved epochs): VarMixup decoding in the workers' collate, or in the main process (VarMixupLoader)")
    print(f"{'classifier':<24} {'tv MixUp':>10} {'VM workers':>11} {'ratio':>7} {'VM main':>9} {'ratio':>7}")
    for name, r in epochs.items():
        print(f"{name:<24} {r['torchvision_mixup_images_per_s']:>10.0f} {r['varmixup_cached_images_per_s']:>11.0f} "
              f"{r['throughput_ratio_varmixup_cached']:>7.3f} {r['varmixup_cached_main_images_per_s']:>9.0f} "
              f"{r['throughput_ratio_varmixup_cached_main']:>7.3f}")
    out = Path(args.out).resolve()
    settings = {**vars(args), "out": str(out.relative_to(HERE.parent)) if out.is_relative_to(HERE.parent) else out.name}
    result = {"settings": {**settings, "torch": torch.__version__, "threads": torch.get_num_threads(),
                           "machine": platform.machine(), "cpus": os.cpu_count(),
                           "python": sys.version.split()[0]},
              "training_step": steps, "training_epoch": epochs}
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, out)  # atomic: a killed run leaves the previous results intact
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
