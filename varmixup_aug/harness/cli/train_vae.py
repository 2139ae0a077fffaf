"""``varmixup-aug train-vae``: train a VAE in the package's checkpoint format."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .. import atomic_write_json
from ._flags import (add_out_flags, add_run_flags, finite_float, int_list, positive_float, positive_int,
                     positive_int_list, nonnegative_int, start_run)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "train-vae",
        help="train a VAE on an image dataset",
        description="Train a ConvVAE on an ImageFolder directory, an archive of one, or a torchvision "
        "dataset name. Writes OUT (.safetensors) and OUT.report.json; a resumable training state is "
        "kept in OUT.train-state.safetensors.",
    )
    p.add_argument("--data-dir", required=True,
                   help="ImageFolder dir (with train/ and test/ or not), a .tar.gz of one, or e.g. 'cifar10'")
    p.add_argument("--out", required=True, help="output checkpoint, e.g. vae.safetensors")
    p.add_argument("--image-size", type=positive_int, default=32)
    p.add_argument("--latent-dim", type=positive_int, default=256)
    p.add_argument("--widths", type=positive_int_list, default="64,128,256",
                   help="comma-separated channel widths per stage")
    p.add_argument("--blocks-per-stage", type=nonnegative_int, default=0)
    p.add_argument("--beta", type=positive_float, default=0.01,
                   help="KL weight; equals 2*sigma^2 of a Gaussian decoder on [0,1] pixels (default 0.01)")
    p.add_argument("--beta-warmup-epochs", type=finite_float, default=1.0, help="linear KL warm-up length")
    p.add_argument("--epochs", type=positive_int, default=6)
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--lr", type=positive_float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    add_out_flags(p, what="training run (OUT, OUT.train-state.safetensors, OUT.report.json)")
    p.add_argument("--max-steps", type=positive_int, default=None, help="stop after this many optimizer steps")
    p.add_argument("--checkpoint-every", type=positive_int, default=200, help="steps between training-state saves")
    p.add_argument("--limit-train", type=positive_int, default=None,
                   help="use a fixed random subset of the train split")
    p.add_argument("--limit-eval", type=positive_int, default=None,
                   help="use a fixed random subset of the held-out split")
    p.add_argument("--num-workers", type=nonnegative_int, default=2,
                   help="workers for decoding the images once (0: decode in this process)")
    add_run_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .. import TrainVAEConfig, claim_run, load_tensor_dataset, open_image_dataset, train_vae

    progress = start_run(args)
    with claim_run(args.out, resume=args.resume, overwrite=args.overwrite, is_file=True, what="train-vae",
                   companions=(".train-state.safetensors", ".report.json")) as claim:
        train_ds = open_image_dataset(args.data_dir, "train")
        test_ds = open_image_dataset(args.data_dir, "test")
        train_x, _ = load_tensor_dataset(train_ds, image_size=args.image_size, limit=args.limit_train,
                                         num_workers=args.num_workers, desc="decoding train", progress=progress)
        eval_x, _ = load_tensor_dataset(test_ds, image_size=args.image_size, limit=args.limit_eval,
                                        num_workers=args.num_workers, desc="decoding held-out", progress=progress)
        cfg = TrainVAEConfig(
            out=args.out, image_size=args.image_size, latent_dim=args.latent_dim,
            widths=int_list(args.widths, "--widths", "64,128,256"), blocks_per_stage=args.blocks_per_stage,
            beta=args.beta, beta_warmup_epochs=args.beta_warmup_epochs, epochs=args.epochs,
            batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device,
            max_steps=args.max_steps, checkpoint_every=args.checkpoint_every,
            trained_on=f"{Path(str(args.data_dir)).name} train split ({train_x.shape[0]} images)",
        )
        claim.set_old_run_aside()
        report = train_vae(cfg, train_x, eval_x, resume=args.resume, allow_changed_settings=args.allow_changed_settings,
                           progress=progress, data_dir=args.data_dir, on_checkpoint=claim.commit)
        report_path = Path(args.out + ".report.json")
        atomic_write_json(report_path, report)
    print(
        f"held-out report on {report['images']} images: MSE {report['mse']:.5f}  PSNR {report['psnr_db']:.2f} dB  "
        f"KL {report['kl_total_nats']:.1f} nats ({report['kl_per_dim_mean_nats']:.3f}/dim)  "
        f"active dims {report['active_dims']}/{report['latent_dim']}  ELBO {report['elbo_bits_per_dim']:.3f} bits/dim"
    )
    print(f"wrote {args.out} and {report_path}")
    return 0
