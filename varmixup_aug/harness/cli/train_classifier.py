"""``varmixup-aug train-classifier``: one model and schedule, four training methods."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .. import METHODS, atomic_write_json
from ._flags import (add_out_flags, add_run_flags, add_vae_flags, finite_float, int_list, nonnegative_int,
                     positive_float, positive_int, positive_int_list, start_run, vae_from_flags, vae_label)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "train-classifier",
        help="train a small pre-activation ResNet with ERM, mixup, VarMixup or residual VarMixup",
        description="Train the same PreActResNet with the same schedule and per-image crop+flip under "
        "--method erm|mixup|varmixup|varmixup-residual. A fixed held-out part of the train split (the same "
        "for every method and --seed) is never trained on; evaluate --select-lam uses it to choose MI's lam. "
        "Writes OUT/checkpoint.safetensors (model, optimiser and RNG state, JSON metadata; resumable), "
        "OUT/holdout.json and OUT/train_report.json.",
    )
    p.add_argument("--method", required=True, choices=list(METHODS))
    p.add_argument("--data-dir", required=True,
                   help="ImageFolder dir or a .tar.gz of one, e.g. ../shared/data/cifar10-jpg.tar.gz")
    p.add_argument("--out", required=True, help="run folder, e.g. runs/classifiers/erm")
    add_vae_flags(p, used_by="varmixup*")
    p.add_argument("--epochs", type=positive_int, default=2,
                   help="planned epochs; the lr schedule spans them (2 fits 30 min per method on 2 slow CPU cores)")
    p.add_argument("--max-steps", type=positive_int, default=None, help="stop after this many steps in total")
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--lr", type=positive_float, default=0.1, help="peak learning rate (SGD, Nesterov momentum 0.9)")
    p.add_argument("--weight-decay", type=finite_float, default=5e-4)
    p.add_argument("--schedule", choices=["cosine", "onecycle"], default="cosine")
    p.add_argument("--warmup-epochs", type=finite_float, default=0.5, help="linear warm-up of the cosine schedule")
    p.add_argument("--alpha", type=positive_float, default=1.0, help="Beta(alpha, alpha) of mixup and VarMixup")
    p.add_argument("--holdout", type=nonnegative_int, default=2000,
                   help="train-split images held out (never trained on)")
    p.add_argument("--holdout-seed", type=int, default=0,
                   help="seed of the held-out split (keep it equal across methods)")
    p.add_argument("--limit-train", type=positive_int, default=None,
                   help="train on a fixed subset of this many of the remaining images")
    p.add_argument("--seed", type=int, default=0, help="seed of init, shuffling, augmentation and mixing")
    add_out_flags(p, what="run (OUT/checkpoint.safetensors, OUT/train_report.json, OUT/holdout.json)")
    p.add_argument("--checkpoint-every", type=positive_int, default=200, help="steps between checkpoints")
    p.add_argument("--widths", type=positive_int_list, default="32,64,128", help="channel widths of the ResNet stages")
    p.add_argument("--blocks-per-stage", type=positive_int, default=1)
    p.add_argument("--num-workers", type=nonnegative_int, default=0,
                   help="DataLoader workers for augmentation and mixing (exact --resume needs 0)")
    add_run_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from varmixup_aug import VarMixupError
    from .. import TrainClassifierConfig, claim_run, load_train_split, train_classifier

    progress = start_run(args)
    cfg = TrainClassifierConfig(
        out=args.out, method=args.method, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, schedule=args.schedule, warmup_epochs=args.warmup_epochs, alpha=args.alpha,
        seed=args.seed, max_steps=args.max_steps, checkpoint_every=args.checkpoint_every,
        num_workers=args.num_workers, widths=int_list(args.widths, "--widths", "32,64,128"),
        blocks_per_stage=args.blocks_per_stage,
        device=args.device,
    )
    if args.vae and not args.method.startswith("varmixup"):
        raise VarMixupError(f"--vae is only used by --method varmixup and varmixup-residual, not {args.method}")
    with claim_run(args.out, resume=args.resume, overwrite=args.overwrite,
                   what=f"train-classifier --method {args.method}",
                   run_files=("checkpoint.safetensors", "train_report.json", "holdout.json")) as claim:
        vae = None
        if args.method.startswith("varmixup"):
            vae = vae_from_flags(args)
        split = load_train_split(args.data_dir, holdout=args.holdout, holdout_seed=args.holdout_seed,
                                 limit_train=args.limit_train, num_workers=args.num_workers, progress=progress)
        info = {"holdout": split["holdout_info"], "data_dir": split["data_dir"], "classes": split["classes"],
                "limit_train": args.limit_train,
                "vae": vae_label(args) if vae is not None else None}
        train_x, train_y = split["train"]
        held_x, held_y = split["holdout"]
        if train_x.shape[0] < args.batch_size:
            raise VarMixupError(
                f"--batch-size {args.batch_size} is larger than the {train_x.shape[0]} training images of --data-dir "
                f"{args.data_dir} (after --holdout {args.holdout}); pass --batch-size {train_x.shape[0]} or less"
            )
        claim.set_old_run_aside()
        report = train_classifier(cfg, train_x, train_y, num_classes=len(split["classes"]), vae=vae,
                                  holdout_images=held_x, holdout_labels=held_y, data_info=info, resume=args.resume,
                                  allow_changed_settings=args.allow_changed_settings, progress=progress,
                                  on_checkpoint=claim.commit)
        atomic_write_json(Path(args.out) / "holdout.json", split["holdout_info"], indent=None)
    step = report["s_per_step"]
    held = report.get("holdout_accuracy")
    print(f"{args.method}: {report['steps']} steps ({report['epochs_completed']:.2f} epochs) in "
          f"{report['wall_time_s']:.0f} s" + (f", {step:.3f} s/step" if step else "")
          + (f"; held-out accuracy {100 * held:.2f}% on {report['holdout_images']} images" if held is not None else ""))
    print(f"wrote {report['checkpoint']}")
    return 0
