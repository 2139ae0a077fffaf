"""``varmixup-aug demo``: the whole path on real data, in a few minutes on a CPU.

Loads the shipped VAE, builds a VarMixup DataLoader over the training split, writes the
picture grids, trains a small classifier for a bounded time and prints clean test accuracy.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from ... import VarMixupError
from ._flags import add_run_flags, add_vae_flags, finite_float, positive_float, positive_int, start_run, vae_from_flags


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="VarMixup end to end: pictures, a short training run, test accuracy",
                       description=__doc__)
    p.add_argument("--data-dir", default=None,
                   help="ImageFolder dir or .tar.gz of one (e.g. ../shared/data/cifar10-jpg.tar.gz); "
                   "default: download CIFAR-10 with torchvision")
    add_vae_flags(p)
    p.add_argument("--minutes", type=positive_float, default=3.0, help="training time budget")
    p.add_argument("--max-steps", type=positive_int, default=None, help="stop after this many steps")
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--lr", type=positive_float, default=0.05)
    p.add_argument("--alpha", type=positive_float, default=1.0)
    p.add_argument("--residual", action="store_true", help="use the residual VarMixup form")
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--eval-limit", type=positive_int, default=None, help="evaluate on a fixed subset of the test split")
    p.add_argument("--out-dir", default="outputs/demo")
    p.add_argument("--seed", type=int, default=0)
    add_run_flags(p, threads=False)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .. import SmallCNN, resolve_device, write_pictures

    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    progress = start_run(args)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    source = args.data_dir or "cifar10"
    train_set, test_set, num_classes = _datasets(source)
    if len(train_set) < args.batch_size:
        print(f"the train split has {len(train_set)} images, fewer than --batch-size {args.batch_size}; "
              f"using batches of {len(train_set)}")
        args.batch_size = len(train_set)

    vae = vae_from_flags(args)
    print(f"VAE: {getattr(vae, 'trained_on', 'unknown')}, {sum(p.numel() for p in vae.parameters()):,} parameters")
    grid, recon = write_pictures(vae, source, out_dir)  # from real test pairs
    print(f"wrote {grid} and {recon}")

    model = SmallCNN(num_classes).to(device).to(memory_format=torch.channels_last)
    steps, losses = _train(args, model, _varmixup_loader(args, train_set, vae, num_classes, device), device, progress)
    correct, total = _test(args, model, test_set, device, progress)
    result = {"steps": steps, "images_seen": steps * args.batch_size,
              "final_loss": sum(losses[-20:]) / max(1, len(losses[-20:])), "test_images": total,
              "test_accuracy": correct / total, "device": str(device)}
    (out_dir / "demo_result.json").write_text(json.dumps(result, indent=2))
    print(f"trained {steps} steps ({steps * args.batch_size} VarMixup images); "
          f"clean test accuracy {100 * correct / total:.2f}% on {total} test images")
    return 0


def _datasets(source: str) -> tuple[Any, Any, int]:
    """Train split with crop and flip, test split, number of classes; images as float tensors in [0, 1]."""
    from torchvision.transforms import v2

    from .. import open_image_dataset

    train_tf = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(), v2.ToImage(),
                           v2.ToDtype(torch.float32, scale=True)])
    test_tf = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    train_set = open_image_dataset(source, "train", transform=train_tf)
    test_set = open_image_dataset(source, "test", transform=test_tf)
    classes = getattr(train_set, "classes", None) or sorted({int(y) for _, y in Subset(train_set, range(100))})
    return train_set, test_set, len(classes)


def _varmixup_loader(args: argparse.Namespace, train_set: Any, vae: Any, num_classes: int, device: torch.device
                     ) -> Any:
    """On the CPU the workers run the VAE inside the collate; on a GPU the workers collate and the VAE runs on
    the GPU in this process."""
    from ... import VarMixup, VarMixupCollate, VarMixupLoader

    mix_args = dict(num_classes=num_classes, alpha=args.alpha, residual=args.residual, seed=args.seed)
    loader_args = dict(batch_size=args.batch_size, shuffle=True, num_workers=args.num_workers, drop_last=True,
                       persistent_workers=args.num_workers > 0)
    if device.type == "cuda":
        base = DataLoader(train_set, pin_memory=True, **loader_args)
        return VarMixupLoader(base, VarMixup(vae.to(device), **mix_args), device=device)
    return DataLoader(train_set, collate_fn=VarMixupCollate(vae, **mix_args), **loader_args)


def _train(args: argparse.Namespace, model: torch.nn.Module, loader: Any, device: torch.device, progress: bool
           ) -> tuple[int, list[float]]:
    """Train until ``--max-steps`` or ``--minutes`` runs out; return the steps and their losses."""
    steps_budget = args.max_steps or 10**9
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    loss_fn = torch.nn.CrossEntropyLoss()
    deadline = time.monotonic() + args.minutes * 60
    losses: list[float] = []
    bar = tqdm(total=min(steps_budget, 10**6) if args.max_steps else None, desc="training (VarMixup)",
               unit="step", disable=not progress)
    model.train()
    while True:  # epochs, until the budget runs out (at least one step)
        steps_before = len(losses)
        for x, t in loader:
            x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            loss = loss_fn(model(x), t.to(device, non_blocking=True))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if len(losses) >= steps_budget or time.monotonic() > deadline:
                bar.close()
                return len(losses), losses
        if len(losses) == steps_before:  # an epoch without batches would loop forever
            bar.close()
            raise VarMixupError("the training loader yields no batches (train split smaller than --batch-size?)")


def _test(args: argparse.Namespace, model: torch.nn.Module, test_set: Any, device: torch.device, progress: bool
          ) -> tuple[int, int]:
    """Correct predictions and images on the test split (or a fixed ``--eval-limit`` subset of it)."""
    if args.eval_limit:
        idx = torch.randperm(len(test_set), generator=torch.Generator().manual_seed(0))[: args.eval_limit]
        test_set = Subset(test_set, sorted(idx.tolist()))
    model.eval()
    correct = total = 0
    with torch.inference_mode():
        for x, y in tqdm(DataLoader(test_set, batch_size=500, num_workers=args.num_workers), desc="testing",
                         disable=not progress, leave=False):
            pred = model(x.to(device).contiguous(memory_format=torch.channels_last)).argmax(1).cpu()
            correct += int((pred == y).sum())
            total += y.numel()
    return correct, total
