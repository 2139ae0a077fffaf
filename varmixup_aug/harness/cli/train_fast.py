"""``varmixup-aug train-fast``: the fast CIFAR network and schedule, five training methods."""

from __future__ import annotations

import argparse
from typing import Any

from .. import ADV_ATTACKS, FAST_METHODS, PRECISIONS, VAE_METHODS
from ._flags import (add_out_flags, add_run_flags, add_vae_flags, int_list, nonnegative_int, positive_float,
                     positive_int, positive_int_list, start_run, vae_from_flags, vae_label)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "train-fast",
        help="train the fast CIFAR network (airbench94's shape) with one of five methods",
        description="Train FastCifarNet with the fast schedule (bf16 autocast with fp32 weights where the CPU has "
        "bf16 units, else fp32; see --precision; channels_last, batch crop+flip on uint8 "
        "images held in memory, label smoothing 0.2 unless --label-smoothing says otherwise, lookahead "
        "averaging) under --method erm|mixup|varmixup|varmixup-residual|vae-recon|adv-train (fast FGSM adversarial "
        "training, Wong et al. 2020). "
        "A fixed held-out part of the train split is never "
        "trained on (evidence uses it to choose MI's lam). Writes OUT/checkpoint.safetensors (fp16 weights and "
        "JSON metadata, loadable with load_classifier), OUT/train_report.json and, while training, the "
        "resumable OUT/train_state.safetensors.",
    )
    p.add_argument("--method", required=True, choices=list(FAST_METHODS))
    p.add_argument("--data-dir", required=True,
                   help="ImageFolder dir or a .tar.gz of one, e.g. ../shared/data/cifar10-jpg.tar.gz")
    p.add_argument("--out", required=True, help="run folder, e.g. results/cifar10-fast/erm")
    add_vae_flags(p, used_by="the VAE methods")
    p.add_argument("--epochs", type=positive_int, default=12)
    p.add_argument("--batch-size", type=positive_int, default=1024, help="at most the number of training images")
    p.add_argument("--alpha", type=positive_float, default=1.0, help="Beta(alpha, alpha) of the mixing methods")
    p.add_argument("--label-smoothing", type=float, default=0.2,
                   help="0.2 is airbench's recipe; 0 trains on one-hot (or mixed one-hot) targets, as the papers do")
    p.add_argument("--adv-eps", type=positive_float, default=8 / 255,
                   help="adv-train: L-inf radius in pixel units (default 8/255)")
    p.add_argument("--adv-attack", choices=tuple(ADV_ATTACKS), default="fgsm-rs",
                   help="adv-train's single step: fgsm-rs (Wong et al. 2020) or n-fgsm (de Jorge et al. 2022, a start "
                        "in twice the ball, not clipped to it; avoids catastrophic overfitting)")
    p.add_argument("--adv-step-fraction", type=positive_float, default=None,
                   help="adv-train: the step as a multiple of --adv-eps (default: the attack's own, fgsm-rs 1.25, "
                        "n-fgsm 1.0)")
    p.add_argument("--holdout", type=nonnegative_int, default=1000,
                   help="train-split images held out (never trained on)")
    p.add_argument("--holdout-seed", type=int, default=0)
    p.add_argument("--limit-train", type=positive_int, default=None, help="train on a fixed subset of this many images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--widths", type=positive_int_list, default="64,256,256", help="widths of the three conv groups")
    p.add_argument("--max-steps", type=positive_int, default=None,
                   help="stop after this many steps (the schedule spans --epochs)")
    p.add_argument("--checkpoint-every", type=positive_int, default=25, help="steps between training-state saves")
    p.add_argument("--precision", choices=list(PRECISIONS), default="auto",
                   help="auto: bf16 autocast (fp32 weights, optimiser and loss; the VAE decodes in bf16 too) where "
                   "the CPU has bf16 units (amx_bf16, avx512_bf16), else fp32. Recorded in the report and checkpoint")
    add_out_flags(p, what="training run")
    add_run_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from varmixup_aug import VarMixupError
    from .. import (FastTrainConfig, claim_run, load_tensor_dataset, load_train_split, open_image_dataset,
                    train_fast_classifier)

    progress = start_run(args)
    cfg = FastTrainConfig(out=args.out, method=args.method, epochs=args.epochs, batch_size=args.batch_size,
                          alpha=args.alpha, label_smoothing=args.label_smoothing, adv_attack=args.adv_attack,
                          adv_eps=args.adv_eps, adv_step_fraction=args.adv_step_fraction, seed=args.seed,
                          max_steps=args.max_steps, checkpoint_every=args.checkpoint_every, precision=args.precision,
                          widths=int_list(args.widths, "--widths", "64,256,256"))
    with claim_run(args.out, resume=args.resume, overwrite=args.overwrite, what=f"train-fast --method {args.method}",
                   run_files=("checkpoint.safetensors", "train_state.safetensors", "train_report.json")) as claim:
        vae = None
        if args.method in VAE_METHODS:
            vae = vae_from_flags(args)
        split = load_train_split(args.data_dir, holdout=args.holdout, holdout_seed=args.holdout_seed,
                                 limit_train=args.limit_train, progress=progress)
        train_x, train_y = split["train"]
        if train_x.shape[0] < args.batch_size:
            raise VarMixupError(
                f"--batch-size {args.batch_size} is larger than the {train_x.shape[0]} training images of --data-dir "
                f"{args.data_dir} (after --holdout {args.holdout}); pass --batch-size {train_x.shape[0]} or less"
            )
        test_x, test_y = load_tensor_dataset(open_image_dataset(args.data_dir, "test"), progress=progress)
        info = {"holdout": split["holdout_info"], "data_dir": str(args.data_dir), "classes": split["classes"],
                "vae": vae_label(args) if vae is not None else None}
        claim.set_old_run_aside()
        report = train_fast_classifier(cfg, train_x, train_y, num_classes=len(split["classes"]), vae=vae,
                                       test_images=test_x, test_labels=test_y, data_info=info, resume=args.resume,
                                       allow_changed_settings=args.allow_changed_settings, progress=progress,
                                       on_checkpoint=claim.commit)
    print(f"{args.method} ({report['precision']}): {report['steps']} steps ({report['epochs_completed']:.2f} epochs) "
          f"in "
          f"{report['wall_time_s']:.0f} s; test accuracy {100 * report['test_accuracy']:.2f}% on "
          f"{report['test_images']} images")
    print(f"wrote {report['checkpoint']}")
    return 0
