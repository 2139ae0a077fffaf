"""``varmixup-aug pictures``: mixup grids and reconstructions from real test images."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("pictures", help="write VarMixup and reconstruction PNGs",
                       description="Rows of (A, B, input mixup, VarMixup, VarMixup residual) at lam = 0, .25, .5, "
                       ".75, 1 for real test pairs, and reconstructions beside their originals.")
    p.add_argument("--data-dir", required=True, help="ImageFolder dir, a .tar.gz of one, or a torchvision name")
    p.add_argument("--vae", default=None, help="a VAE checkpoint; default: the shipped one")
    p.add_argument("--pretrained", default="cifar10")
    p.add_argument("--pairs", type=int, default=6)
    p.add_argument("--offset", type=int, default=0, help="first test image to use (of a fixed shuffle)")
    p.add_argument("--out-dir", default="outputs/pictures")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ... import load_pretrained_vae, load_vae
    from .. import write_pictures

    vae = load_vae(args.vae) if args.vae else load_pretrained_vae(args.pretrained)
    a, b = write_pictures(vae, args.data_dir, args.out_dir, pairs=args.pairs, offset=args.offset)
    print(f"wrote {a} and {b}")
    return 0
