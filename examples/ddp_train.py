"""Distributed (DDP) classifier training with VarMixup batches.

Each process trains one replica of a small CNN on its shard of the data
(``DistributedSampler``, reshuffled every epoch with ``set_epoch``). Batches are mixed in
the latent space of a VAE: on the CPU by ``VarMixupCollate`` in the DataLoader, on a GPU by
``VarMixupLoader`` in the main process (the workers only collate). Every rank and every
DataLoader worker draws its own ``lam``/pairs from one ``--seed``. The loss is
``nn.CrossEntropyLoss`` on the soft targets. Rank 0 shows a progress bar, logs the losses
and writes the classifier as ``<out>/classifier.safetensors`` (no pickle) plus
``<out>/metrics.json`` with every rank's losses.

CPU, gloo backend, 2 processes (runs anywhere, no data or checkpoint needed)::

    torchrun --nproc_per_node=2 examples/ddp_train.py --synthetic --tiny-vae --max-steps 20
    python examples/ddp_train.py --spawn 2 --synthetic --tiny-vae --max-steps 20

CPU on real data, with the latent cache (rank 0 encodes once, the others read the file)::

    torchrun --nproc_per_node=2 examples/ddp_train.py --data-dir ../shared/data/cifar10-jpg.tar.gz \\
        --limit 2000 --tiny-vae --latent-cache runs/latents --epochs 1

Multi-GPU, NCCL backend, one process per GPU (rank r uses cuda:LOCAL_RANK)::

    torchrun --nproc_per_node=8 examples/ddp_train.py --device cuda --data-dir ../shared/data/cifar10-jpg.tar.gz \\
        --pretrained cifar10 --epochs 30 --batch-size 128 --workers 8

Several nodes: add ``--nnodes=N --node_rank=I --master_addr=HOST --master_port=PORT`` to
torchrun; ``--latent-cache`` must then be on a filesystem every node shares.

``--batch-size`` is per process; the global batch is ``batch_size * world_size``.
Run from the repository root with the package installed (``pip install -e .``) or with
``PYTHONPATH=.``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import save_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

import varmixup_aug
from varmixup_aug.harness import open_image_dataset


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = p.add_argument_group("data")
    src = data.add_mutually_exclusive_group(required=True)
    src.add_argument("--data-dir", help="ImageFolder dir, a .tar.gz of one, or a torchvision name (cifar10, ...)")
    src.add_argument("--synthetic", action="store_true", help="random images and labels, no files needed")
    data.add_argument("--limit", type=int, default=None,
                      help="use a fixed random subset of this many training images (synthetic: dataset size)")
    data.add_argument("--image-size", type=int, default=32,
                      help="image size with --tiny-vae (a loaded VAE sets its own)")
    data.add_argument("--num-classes", type=int, default=10, help="classes of the --synthetic data")

    vae = p.add_argument_group("VAE")
    vsrc = vae.add_mutually_exclusive_group(required=True)
    vsrc.add_argument("--vae", type=Path, help="a VAE checkpoint written by varmixup_aug.save_vae")
    vsrc.add_argument("--pretrained", help="a shipped VAE, see varmixup_aug.list_pretrained()")
    vsrc.add_argument("--tiny-vae", action="store_true", help="an untrained tiny ConvVAE, for smoke runs")
    vae.add_argument("--latent-cache", type=Path, default=None,
                     help="encode the training set once (on rank 0) and cache the posteriors in this folder")

    mix = p.add_argument_group("VarMixup")
    mix.add_argument("--alpha", type=float, default=1.0, help="Beta(alpha, alpha) for lam")
    mix.add_argument("--crop-flip", action="store_true", help="random crop + flip of the mixed batches")

    tr = p.add_argument_group("training")
    tr.add_argument("--epochs", type=int, default=1)
    tr.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    tr.add_argument("--batch-size", type=int, default=32, help="per process")
    tr.add_argument("--lr", type=float, default=0.05)
    tr.add_argument("--width", type=int, default=32, help="channel width of the CNN")
    tr.add_argument("--workers", type=int, default=0, help="DataLoader workers per process")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--log-every", type=int, default=10)
    tr.add_argument("--out", type=Path, default=Path("runs/ddp_train"), help="checkpoint and metrics folder")

    run = p.add_argument_group("launch")
    run.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                     help="cpu: gloo backend; cuda: nccl backend, rank r on cuda:LOCAL_RANK")
    run.add_argument("--spawn", type=int, default=0, metavar="N",
                     help="start N processes with torch.multiprocessing.spawn instead of torchrun")
    args = p.parse_args(argv)
    if args.epochs < 1 or (args.max_steps is not None and args.max_steps < 1):
        p.error("--epochs and --max-steps must be >= 1")
    if args.spawn < 0:
        p.error("--spawn must be >= 0")
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be >= 1")
    return args


def build_classifier(channels: int, num_classes: int, width: int = 32) -> nn.Module:
    """The small CNN trained here (also used to reload the checkpoint)."""
    w = width
    return nn.Sequential(
        nn.Conv2d(channels, w, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, num_classes),
    )


def load_classifier(path: str | os.PathLike[str]) -> nn.Module:
    """Rebuild the classifier from a checkpoint written by this script."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {})["ddp_train"])
    model = build_classifier(meta["channels"], meta["num_classes"], meta["width"])
    model.load_state_dict(load_file(str(path)))
    return model


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log(rank: int, msg: str) -> None:
    if rank == 0:
        tqdm.write(msg, file=sys.stderr)


def build_dataset(args: argparse.Namespace, image_size: int, rank: int) -> tuple[Dataset, int]:
    """The training set (items ``(image, int label)``) and its number of classes; the same on every rank."""
    if args.synthetic:
        g = torch.Generator().manual_seed(args.seed)  # identical data on every rank
        n = args.limit or 512
        images = torch.rand(n, 3, image_size, image_size, generator=g)
        labels = torch.randint(0, args.num_classes, (n,), generator=g)
        return TensorDataset(images, labels), args.num_classes

    from torchvision.transforms import v2

    transform = v2.Compose([v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size), v2.PILToTensor()])
    # Rank 0 first: it downloads or unpacks the data once, the others then open it.
    if rank == 0:
        dataset = open_image_dataset(args.data_dir, "train", transform=transform)
    dist.barrier()
    if rank != 0:
        dataset = open_image_dataset(args.data_dir, "train", transform=transform)
    classes = getattr(dataset, "classes", None)
    if classes:
        num_classes = len(classes)
    else:
        targets = getattr(dataset, "targets", None)
        if targets is None:
            raise SystemExit("cannot tell the number of classes of this dataset")
        num_classes = int(max(targets)) + 1
    if args.limit is not None and args.limit < len(dataset):
        # A fixed shuffle (not the rank's RNG), so every rank picks the same subset.
        perm = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[: args.limit]
        dataset = Subset(dataset, sorted(perm.tolist()))
    return dataset, num_classes


def load_vae(args: argparse.Namespace) -> Any:
    if args.vae is not None:
        return varmixup_aug.load_vae(args.vae)
    if args.pretrained is not None:
        return varmixup_aug.load_pretrained_vae(args.pretrained)
    return None  # --tiny-vae: built once the data's channels are known


def train(args: argparse.Namespace) -> None:
    """One process of the job; reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT from the environment."""
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda but CUDA is not available")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    dist.init_process_group(backend, init_method="env://", timeout=timedelta(minutes=30),
                            device_id=device if device.type == "cuda" else None)
    try:
        _train(args, rank, world, device)
    except varmixup_aug.VarMixupError as exc:  # bad data, VAE or settings: a message, not a traceback
        raise SystemExit(f"rank {rank}: error: {exc}") from exc
    finally:
        dist.destroy_process_group()


def _train(args: argparse.Namespace, rank: int, world: int, device: torch.device) -> None:
    torch.manual_seed(args.seed)  # same model, tiny VAE and data on every rank
    vae = load_vae(args)
    image_size = vae.image_size if vae is not None else args.image_size
    train_set, num_classes = build_dataset(args, image_size, rank)
    channels = int(train_set[0][0].shape[0])  # (C, H, W) tensors in both branches of build_dataset
    if vae is None:
        torch.manual_seed(args.seed)
        vae = varmixup_aug.ConvVAE(varmixup_aug.VAEConfig(
            image_size=image_size, channels=channels, latent_dim=8, widths=(8, 16))).eval()
    elif getattr(vae, "channels", channels) != channels:
        raise SystemExit(f"the VAE reads {vae.channels}-channel images but the data has {channels} channels")
    vae = vae.to(device)
    n_items = len(train_set)  # type: ignore[arg-type]  # a map-style dataset; torch's Dataset declares no __len__
    _log(rank, f"world_size={world} backend={dist.get_backend()} device={device} "
               f"train_items={n_items} classes={num_classes} image={channels}x{image_size}x{image_size}")

    if args.latent_cache is not None:
        # Rank 0 encodes and writes the cache while the other ranks wait at a barrier and read it.
        train_set = varmixup_aug.VarMixupDataset(train_set, vae, cache_path=args.latent_cache, device=device,
                                                 progress=rank == 0)
        _log(rank, f"latents: {train_set!r}")

    sampler: DistributedSampler[int] = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True,
                                                          seed=args.seed)
    if device.type == "cuda":
        # Workers only collate on the CPU; the VAE runs on this rank's GPU in the main process.
        loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                            pin_memory=True, drop_last=True, persistent_workers=args.workers > 0)
        mixer = varmixup_aug.VarMixup(vae, num_classes=num_classes, alpha=args.alpha, seed=args.seed)
        batches: Any = varmixup_aug.VarMixupLoader(loader, mixer, device=device)
    else:
        collate = varmixup_aug.VarMixupCollate(vae, num_classes=num_classes, alpha=args.alpha, seed=args.seed)
        loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                            collate_fn=collate, drop_last=True, persistent_workers=args.workers > 0)
        batches = loader
    if len(loader) == 0:
        raise SystemExit(f"{n_items} items over {world} ranks give no full batch of {args.batch_size}; "
                         "lower --batch-size or raise --limit")
    total = args.epochs * len(loader)
    if args.max_steps is not None:
        total = min(total, args.max_steps)
    augment = varmixup_aug.BatchRandomCropFlip(padding=max(1, image_size // 8), seed=args.seed) \
        if args.crop_flip else None

    model = DDP(build_classifier(channels, num_classes, args.width).to(device),
                device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    criterion = nn.CrossEntropyLoss()

    losses: list[float] = []
    step = 0
    bar = tqdm(total=total, desc=f"train x{world}", unit="step", disable=rank != 0, dynamic_ncols=True)
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)  # a new shuffle (and shard) every epoch
        model.train()
        for images, targets in batches:
            if step >= total:
                break
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            if augment is not None:
                images = augment(images)
            loss = criterion(model(images), targets)  # soft targets (B, num_classes)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # DDP all-reduces the gradients here
            optimizer.step()
            scheduler.step()
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(f"rank {rank}: loss is {value} at step {step}")
            losses.append(value)
            step += 1
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{value:.4f}")
            if step % args.log_every == 0 or step == total:
                _log(rank, f"step {step}/{total} epoch {epoch} loss {value:.4f} lr {scheduler.get_last_lr()[0]:.4g}")
        if step >= total:
            break
    bar.close()

    per_rank: list[Any] = [None] * world
    dist.all_gather_object(per_rank, losses)
    if rank == 0:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / "classifier.safetensors"
        meta = {"channels": channels, "num_classes": num_classes, "width": args.width, "image_size": image_size,
                "steps": step, "world_size": world}
        state = {k: v.detach().cpu().contiguous() for k, v in model.module.state_dict().items()}
        tmp = path.with_name(path.name + ".tmp")
        save_file(state, str(tmp), metadata={"ddp_train": json.dumps(meta)})
        os.replace(tmp, path)
        metrics = {**meta, "backend": dist.get_backend(), "losses": {str(r): v for r, v in enumerate(per_rank)},
                   "checkpoint": str(path)}
        (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        finite = all(math.isfinite(v) for r in per_rank for v in r)
        _log(rank, f"done: {step} steps on {world} ranks, all losses finite: {finite}; "
                   f"last loss per rank {[round(r[-1], 4) for r in per_rank]}; saved {path}")
    dist.barrier()


def _spawned(local_rank: int, world: int, port: int, args: argparse.Namespace) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(local_rank),
                      LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    train(args)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.spawn:
        mp.spawn(_spawned, args=(args.spawn, _free_port(), args), nprocs=args.spawn, join=True)
    elif "RANK" in os.environ:  # torchrun
        train(args)
    else:  # plain `python examples/ddp_train.py`: one process
        _spawned(0, 1, _free_port(), args)


if __name__ == "__main__":
    main()
