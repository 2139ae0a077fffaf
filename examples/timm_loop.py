"""Train a timm model with VarMixup, written the way timm's ``train.py`` uses its ``Mixup``.

The three lines that matter are the ones timm users already have::

    mixup_fn = VarMixup(vae, num_classes=10, alpha=1.0, input_normalization=(mean, std))   # was timm Mixup(...)
    input, target = mixup_fn(input, target)         # inside the loop, on the device, after .to(device)
    loss = SoftTargetCrossEntropy()(model(input), target)

Like timm's loader, the data pipeline normalises with the model's mean and std;
``input_normalization`` makes VarMixup un-normalise, mix through the VAE in [0, 1] pixel space
and normalise again. Validation uses plain cross-entropy on clean images, as in timm.

Examples (from the repository root)::

    python examples/timm_loop.py --synthetic --max-steps 50
    python examples/timm_loop.py --data-dir ../shared/data/cifar10-jpg.tar.gz --model resnet18 --epochs 2
    python examples/timm_loop.py --data-dir path/to/imagenet_folder --image-size 256 \\
        --diffusers-vae stabilityai/sd-vae-ft-mse --device cuda --amp

``--data-dir`` is anything ``varmixup_aug.harness.open_image_dataset`` opens: an ImageFolder root
with ``train/`` and ``test/`` (or ``val/``), a plain ImageFolder (5% held out for validation), a
``.tar.gz`` of either (unpacked once into ``$VARMIXUP_AUG_CACHE``, default ``~/.cache/varmixup_aug``),
or a torchvision name. The shipped VAE (``--vae cifar10``, the default) reads 32x32 RGB images;
``--diffusers-vae`` (needs ``pip install "varmixup-aug[diffusers]"``) takes any size divisible by 8.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import timm
import torch
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from varmixup_aug import ConvVAE, VarMixup, list_pretrained, load_pretrained_vae, load_vae
from varmixup_aug.adapters import AutoencoderKLAdapter
from varmixup_aug.harness import open_image_dataset

from _synthetic import synthetic_dataset  # a sibling module: Python puts a script's folder on its import path


MixupFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data-dir", help="ImageFolder root with train/ and test/, a .tar.gz of one, or a "
                     "torchvision name")
    src.add_argument("--synthetic", action="store_true", help="small learnable random images, no files")
    p.add_argument("--limit", type=int, default=None, help="train on a fixed random subset of this many images")
    p.add_argument("--limit-val", type=int, default=1000, help="validate on at most this many test images")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=10, help="classes of --synthetic data")
    p.add_argument("--model", default="resnet18", help="any timm model name (random init)")
    vae = p.add_mutually_exclusive_group()
    vae.add_argument("--vae", default="cifar10", help=f"a shipped VAE {list_pretrained()} or a .safetensors file")
    vae.add_argument("--diffusers-vae", default=None, help="a diffusers AutoencoderKL: hub id or local folder")
    p.add_argument("--diffusers-subfolder", default=None, help="e.g. 'vae' for a full pipeline repository")
    p.add_argument("--alpha", type=float, default=1.0, help="lam ~ Beta(alpha, alpha)")
    p.add_argument("--mixup-prob", type=float, default=1.0, help="fraction of samples mixed (timm's --mixup-prob)")
    p.add_argument("--residual", action="store_true", help="residual VarMixup (keeps detail the VAE loses)")
    p.add_argument("--smoothing", type=float, default=0.0, help="label smoothing (timm's --smoothing)")
    p.add_argument("--mixup-off-epoch", type=int, default=None,
                   help="turn mixing off from this epoch on (timm's --mixup-off-epoch)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast for the model and the VAE")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--out", type=Path, default=None, help="write summary.json here")
    args = p.parse_args(argv)
    if args.epochs < 1 or (args.max_steps is not None and args.max_steps < 1):
        p.error("--epochs and --max-steps must be >= 1")
    return args


# ----------------------------------------------------------------------------- data


class Normalized(Dataset):
    """Applies ``(x - mean) / std`` to the images of a dataset of ``(image, label)``."""

    def __init__(self, dataset: Dataset, mean: Iterable[float], std: Iterable[float]) -> None:
        self.dataset = dataset
        self.mean = torch.tensor(list(mean)).view(-1, 1, 1)
        self.std = torch.tensor(list(std)).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Tensor, Any]:
        x, y = self.dataset[i]
        return (x - self.mean) / self.std, y


def build_datasets(args: argparse.Namespace, mean: Iterable[float], std: Iterable[float]
                   ) -> tuple[Dataset, Dataset, int]:
    """``(train, val, num_classes)``; images normalised with the model's ``mean``/``std``, as timm's loader."""
    if args.synthetic:
        n = args.limit or 512
        synthetic_train = synthetic_dataset(n, args.num_classes, args.image_size, seed=args.seed)
        synthetic_val = synthetic_dataset(min(args.limit_val, 256), args.num_classes, args.image_size, seed=args.seed,
                                          split=1)
        return Normalized(synthetic_train, mean, std), Normalized(synthetic_val, mean, std), args.num_classes

    from torchvision.transforms import v2

    size = args.image_size
    to_tensor = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    train_tf = v2.Compose([v2.RandomResizedCrop(size, scale=(0.6, 1.0), antialias=True), v2.RandomHorizontalFlip(),
                           *to_tensor])
    val_tf = v2.Compose([v2.Resize(size, antialias=True), v2.CenterCrop(size), *to_tensor])
    train = open_image_dataset(args.data_dir, "train", transform=train_tf)
    val = open_image_dataset(args.data_dir, "test", transform=val_tf)
    num_classes = len(train.classes)  # type: ignore[union-attr]  # a held-out Subset carries .classes too
    g = torch.Generator().manual_seed(args.seed)  # fixed subsets
    if args.limit is not None and args.limit < len(train):
        train = Subset(train, sorted(torch.randperm(len(train), generator=g)[: args.limit].tolist()))
    if args.limit_val is not None and args.limit_val < len(val):
        val = Subset(val, sorted(torch.randperm(len(val), generator=g)[: args.limit_val].tolist()))
    return train, val, num_classes


def build_vae(args: argparse.Namespace, device: torch.device) -> ConvVAE | AutoencoderKLAdapter:
    if args.diffusers_vae is not None:  # diffusers is imported only here, by from_pretrained
        adapter = AutoencoderKLAdapter.from_pretrained(args.diffusers_vae, subfolder=args.diffusers_subfolder)
        return adapter.to(device).eval()
    vae = load_pretrained_vae(args.vae) if args.vae in list_pretrained() else load_vae(args.vae)
    return vae.to(device).eval()


# ----------------------------------------------------------------------------- the loop, as in timm's train.py


def train_one_epoch(
    epoch: int,
    model: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    *,
    device: torch.device,
    mixup_fn: MixupFn | None = None,
    lr_scheduler: CosineLRScheduler | None = None,
    amp_dtype: torch.dtype | None = None,
    num_updates: int = 0,
    max_updates: int | None = None,
    log_every: int = 10,
) -> tuple[list[float], int]:
    """One epoch; returns the per-step losses and the updated step count."""
    model.train()
    losses: list[float] = []
    for batch_idx, (input, target) in enumerate(loader):
        if max_updates is not None and num_updates >= max_updates:
            break
        input, target = input.to(device), target.to(device)
        if mixup_fn is not None:
            input, target = mixup_fn(input, target)  # soft targets (B, num_classes)
        with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext():
            output = model(input)
            loss = loss_fn(output, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        num_updates += 1
        if lr_scheduler is not None:
            lr_scheduler.step_update(num_updates=num_updates)
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"loss is {value} at epoch {epoch} step {batch_idx}")
        losses.append(value)
        if log_every and num_updates % log_every == 0:
            print(f"epoch {epoch} step {num_updates} loss {value:.4f} lr {optimizer.param_groups[0]['lr']:.4g}",
                  flush=True)
    return losses, num_updates


@torch.no_grad()
def validate(model: nn.Module, loader: Iterable[tuple[Tensor, Tensor]], *, device: torch.device) -> dict[str, float]:
    """Clean cross-entropy and top-1 accuracy (%), as timm's ``validate``."""
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    total, loss_sum, correct = 0, 0.0, 0
    for input, target in loader:
        input, target = input.to(device), target.to(device)
        output = model(input)
        loss_sum += float(loss_fn(output, target))
        correct += int((output.argmax(1) == target).sum())
        total += target.shape[0]
    return {"loss": loss_sum / max(total, 1), "top1": 100.0 * correct / max(total, 1), "images": total}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    amp_dtype = torch.bfloat16 if args.amp else None
    model = timm.create_model(args.model, pretrained=False, num_classes=args.num_classes)
    data_config = timm.data.resolve_model_data_config(model)
    mean, std = data_config["mean"], data_config["std"]
    train_set, val_set, num_classes = build_datasets(args, mean, std)
    if num_classes != args.num_classes:
        model.reset_classifier(num_classes)  # type: ignore[operator]  # timm's models have it; typed nn.Module
    model = model.to(device)
    vae = build_vae(args, device)

    loader_train = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                              drop_last=True, pin_memory=device.type == "cuda",
                              persistent_workers=args.workers > 0)
    loader_eval = DataLoader(val_set, batch_size=2 * args.batch_size, num_workers=args.workers)
    if len(loader_train) == 0:
        n_train = len(train_set)  # type: ignore[arg-type]  # map-style; torch's Dataset declares no __len__
        raise SystemExit(f"{n_train} training images give no full batch of {args.batch_size}")

    # timm: mixup_fn = Mixup(mixup_alpha=..., prob=..., label_smoothing=..., num_classes=...)
    mixup_fn = VarMixup(vae, num_classes=num_classes, alpha=args.alpha, prob=args.mixup_prob,
                        residual=args.residual, label_smoothing=args.smoothing, mixup_off_epoch=args.mixup_off_epoch,
                        input_normalization=(mean, std), autocast_dtype=amp_dtype, seed=args.seed)
    train_loss_fn = SoftTargetCrossEntropy()  # timm: used whenever mixup is active
    optimizer = create_optimizer_v2(model, opt="sgd", lr=args.lr, weight_decay=args.weight_decay, momentum=0.9)
    updates_per_epoch = len(loader_train)
    lr_scheduler = CosineLRScheduler(optimizer, t_initial=args.epochs * updates_per_epoch, t_in_epochs=False)

    start = time.perf_counter()
    all_losses: list[float] = []
    metrics: dict[str, float] = {}
    num_updates = 0
    for epoch in range(args.epochs):
        mixup_fn.set_epoch(epoch)  # fresh draws per epoch; unmixed from --mixup-off-epoch on
        losses, num_updates = train_one_epoch(
            epoch, model, loader_train, optimizer, train_loss_fn, device=device, mixup_fn=mixup_fn,
            lr_scheduler=lr_scheduler, amp_dtype=amp_dtype, num_updates=num_updates,
            max_updates=args.max_steps, log_every=args.log_every)
        all_losses += losses
        line = f"epoch {epoch}: train loss {sum(losses) / max(len(losses), 1):.4f}"
        metrics = validate(model, loader_eval, device=device)
        line += f", val loss {metrics['loss']:.4f}, val top1 {metrics['top1']:.2f}% on {metrics['images']} images"
        print(line, flush=True)
        if args.max_steps is not None and num_updates >= args.max_steps:
            break
    summary = {"model": args.model, "steps": num_updates, "seconds": time.perf_counter() - start,
               "losses": all_losses, "val": metrics, "mixup": repr(mixup_fn)}
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
