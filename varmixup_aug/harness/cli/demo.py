"""``varmixup-aug demo``: both halves of the library on real data, in about five minutes on a CPU.

Loads the shipped VAE, builds a VarMixup DataLoader over the training split, writes the
picture grids, trains a small classifier for a fixed number of seeded steps and prints its clean
test accuracy. Then it wraps a classifier (the committed mixup-trained model when present, else the
one just trained) in ``MIPredictor`` and prints clean and PGD accuracy with and without MI-OL on a
fixed subset of the test split.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from varmixup_aug import VarMixupError
from .. import atomic_write_json
from ._flags import (add_run_flags, add_vae_flags, float_list, nonnegative_int, positive_float, positive_int,
                     start_run, vae_from_flags)

DEFAULT_STEPS = 300  # the earlier 3-minute demo made 255 steps on a quiet 2-core CPU: about 3.5 minutes
MI_MODEL = "results/cifar10-fast/mixup"  # the reproduction's mixup-trained FastCifarNet, relative to the repository


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="VarMixup end to end: pictures, a short training run, test accuracy, "
                       "Mixup Inference under PGD", description=__doc__)
    p.add_argument("--data-dir", default=None,
                   help="ImageFolder dir or .tar.gz of one (e.g. ../shared/data/cifar10-jpg.tar.gz); "
                   "default: download CIFAR-10 with torchvision")
    add_vae_flags(p)
    p.add_argument("--max-steps", type=positive_int, default=DEFAULT_STEPS,
                   help="training steps (the stop rule: the result does not depend on the machine's load)")
    p.add_argument("--minutes", type=positive_float, default=None,
                   help="optional cap on the training time (then the result depends on the machine's speed)")
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--lr", type=positive_float, default=0.05)
    p.add_argument("--alpha", type=positive_float, default=1.0)
    p.add_argument("--residual", action="store_true", help="use the residual VarMixup form")
    p.add_argument("--num-workers", type=nonnegative_int, default=2)
    p.add_argument("--eval-limit", type=positive_int, default=None, help="evaluate on a fixed subset of the test split")
    p.add_argument("--mi-model", default=MI_MODEL,
                   help="classifier checkpoint (run folder or file) for the Mixup Inference part, or 'trained' "
                   f"for the model the demo trains; default {MI_MODEL}, the trained model if it is missing")
    p.add_argument("--mi-images", type=positive_int, default=200, help="fixed subset of test images for MI")
    p.add_argument("--mi-pool", type=positive_int, default=1000, help="clean train images in the MI pool")
    p.add_argument("--mi-samples", type=positive_int, default=30, help="MI-OL mixes per image")
    p.add_argument("--mi-lam", type=positive_float, default=0.5, help="MI-OL lam (the MI paper's 0.5)")
    p.add_argument("--eps", default="2/255", help="L-inf radius of the PGD-10 attack")
    p.add_argument("--no-mi", action="store_true", help="skip the Mixup Inference part")
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

    mi_model = None if args.no_mi else _mi_model(args, num_classes, device)  # bad flags fail before training
    vae = vae_from_flags(args)
    print(f"VAE: {getattr(vae, 'trained_on', 'unknown')}, {sum(p.numel() for p in vae.parameters()):,} parameters")
    grid, recon = write_pictures(vae, source, out_dir)  # from real test pairs
    print(f"wrote {grid} and {recon}")

    model = SmallCNN(num_classes).to(device).to(memory_format=torch.channels_last)
    start = time.monotonic()
    steps, losses = _train(args, model, _varmixup_loader(args, train_set, vae, num_classes, device), device, progress)
    train_s = time.monotonic() - start
    correct, total = _test(args, model, test_set, device, progress)
    result: dict[str, Any] = {
        "steps": steps, "images_seen": steps * args.batch_size,
        "final_loss": sum(losses[-20:]) / max(1, len(losses[-20:])), "test_images": total,
        "test_accuracy": correct / total, "device": str(device), "train_seconds": round(train_s, 1)}
    print(f"trained {steps} steps ({steps * args.batch_size} VarMixup images, {train_s:.0f} s); "
          f"clean test accuracy {100 * correct / total:.2f}% on {total} test images")
    if not args.no_mi:
        name = mi_model[1] if mi_model else f"the SmallCNN trained above ({steps} VarMixup steps)"
        result["mixup_inference"] = _mixup_inference(args, mi_model[0] if mi_model else model.eval(), name, source,
                                                     num_classes, device, progress)
    atomic_write_json(out_dir / "demo_result.json", result)
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
    classes = getattr(train_set, "classes", None)
    if not classes:  # a dataset without .classes: the labels of its first 100 items
        classes = sorted({int(train_set[i][1]) for i in range(min(100, len(train_set)))})
    return train_set, test_set, len(classes)


def _varmixup_loader(args: argparse.Namespace, train_set: Any, vae: Any, num_classes: int, device: torch.device
                     ) -> Any:
    """On the CPU the workers run the VAE inside the collate; on a GPU the workers collate and the VAE runs on
    the GPU in this process."""
    from varmixup_aug import VarMixup, VarMixupCollate, VarMixupLoader

    mix_args = dict(num_classes=num_classes, alpha=args.alpha, residual=args.residual, seed=args.seed)
    loader_args = dict(batch_size=args.batch_size, shuffle=True, num_workers=args.num_workers, drop_last=True,
                       persistent_workers=args.num_workers > 0)
    if device.type == "cuda":
        base = DataLoader(train_set, pin_memory=True, **loader_args)
        return VarMixupLoader(base, VarMixup(vae.to(device), **mix_args), device=device)
    return DataLoader(train_set, collate_fn=VarMixupCollate(vae, **mix_args), **loader_args)


def _train(args: argparse.Namespace, model: torch.nn.Module, loader: Any, device: torch.device, progress: bool
           ) -> tuple[int, list[float]]:
    """Train for ``--max-steps`` steps (fewer if the optional ``--minutes`` cap runs out first); return the steps
    and their losses."""
    steps_budget = args.max_steps
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    loss_fn = torch.nn.CrossEntropyLoss()
    deadline = time.monotonic() + args.minutes * 60 if args.minutes else float("inf")
    losses: list[float] = []
    bar = tqdm(total=steps_budget, desc="training (VarMixup)", unit="step", disable=not progress)
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


def _mixup_inference(args: argparse.Namespace, model: torch.nn.Module, name: str, source: str, num_classes: int,
                     device: torch.device, progress: bool) -> dict[str, Any]:
    """Clean and PGD-10 accuracy of a classifier, plain and through ``MIPredictor`` (MI-OL), on a fixed test subset.

    The attack is the MI paper's oblivious protocol: PGD-10 on the plain model, then MI on its adversarial
    images. Adaptive attacks through MI (in ``varmixup-aug evidence``) take most of MI's gain away.
    """
    from varmixup_aug import MIPredictor
    from .. import load_tensor_dataset, open_image_dataset

    eps = _one_eps(args.eps)
    x, y = load_tensor_dataset(open_image_dataset(source, "test"), limit=args.mi_images, progress=False)
    pool_x, pool_y = load_tensor_dataset(open_image_dataset(source, "train"), limit=args.mi_pool, progress=False)
    x, pool = x.float() / 255, (pool_x.float() / 255, pool_y)
    mi = MIPredictor(model, pool, num_classes=num_classes, mode="ol", lam=args.mi_lam, num_samples=args.mi_samples,
                     seed=args.seed)
    start = time.monotonic()
    adv = _attack(model, x, y, eps, args.seed, progress)
    rows = {"clean": x, f"PGD-10 {args.eps}": adv} if adv is not None else {"clean": x}
    acc = {what: {"plain": _accuracy(model, images, y, device),
                  "mi_ol": _accuracy(mi, images, y, device, desc=f"MI-OL, {what}" if progress else None)}
           for what, images in rows.items()}
    seconds = time.monotonic() - start
    print(f"Mixup Inference (MI-OL, lam {args.mi_lam}, {args.mi_samples} mixes, pool of {pool_y.numel()} train "
          f"images) on {y.numel()} test images, model: {name}; PGD-10 attacks the plain model (the MI paper's "
          f"oblivious protocol); {seconds:.0f} s")
    for what, a in acc.items():
        print(f"  {what:<16} plain {100 * a['plain']:5.1f}%   MI-OL {100 * a['mi_ol']:5.1f}%")
    return {"model": name, "images": y.numel(), "eps": eps, "lam": args.mi_lam, "mi_samples": args.mi_samples,
            "pool": pool_y.numel(), "accuracy": acc, "seconds": round(seconds, 1)}


def _one_eps(text: str) -> float:
    values = float_list(text, "--eps")
    if len(values) != 1 or not 0 <= values[0] <= 1:
        raise VarMixupError(f"--eps must be one L-inf radius in [0, 1] such as 2/255, got {text!r}")
    return values[0]


def _mi_model(args: argparse.Namespace, num_classes: int, device: torch.device) -> tuple[torch.nn.Module, str] | None:
    """The ``--mi-model`` checkpoint and its name; ``None`` (the demo's own model) for ``trained`` or a missing
    default. Also checks ``--eps``, so that bad flags fail before training."""
    from .. import load_classifier, read_classifier_metadata

    _one_eps(args.eps)
    if not 0 < args.mi_lam <= 1:
        raise VarMixupError(f"--mi-lam must be in (0, 1] (the MI paper uses 0.5), got {args.mi_lam}")
    path = Path(args.mi_model)
    if args.mi_model == "trained":
        return None
    if args.mi_model == MI_MODEL and not path.exists():
        print(f"{MI_MODEL} not found (it is in the repository: run the demo from its root); "
              "Mixup Inference will wrap the model trained here")
        return None
    meta = read_classifier_metadata(path)
    classes = meta.get("model", {}).get("num_classes")
    if classes != num_classes:
        raise VarMixupError(f"--mi-model {path} predicts {classes} classes but the data has {num_classes}; "
                            "pass --mi-model trained to use the model the demo trains")
    with torch.random.fork_rng(devices=[]):  # building the model must not move the training's seeded RNG
        model = load_classifier(path, device=device)
    return model, f"{meta.get('method')} {meta.get('architecture')} ({path})"


def _attack(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int, progress: bool
            ) -> torch.Tensor | None:
    try:
        import torchattacks  # noqa: F401
    except ImportError:
        print("torchattacks is not installed (pip install \".[eval]\"): skipping the PGD rows")
        return None
    from .. import adversarial_examples

    return adversarial_examples(model, x, y, attack="pgd", eps=eps, steps=10, seed=seed, progress=progress,
                                desc="PGD-10")


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, *,
              desc: str | None = None, batch_size: int = 50) -> float:
    correct = 0
    with torch.inference_mode():
        for s in tqdm(range(0, x.shape[0], batch_size), desc=desc, disable=desc is None, leave=False):
            pred = model(x[s:s + batch_size].to(device)).argmax(1).cpu()
            correct += int((pred == y[s:s + batch_size]).sum())
    return correct / y.numel()
