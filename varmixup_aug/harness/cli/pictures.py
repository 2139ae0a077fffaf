"""``varmixup-aug pictures``: mixup grids and reconstructions from real test images."""

from __future__ import annotations

import argparse
from typing import Any

from ._flags import add_vae_flags, vae_from_flags


def add_parser(sub: Any) -> None:
    p = sub.add_parser("pictures", help="write VarMixup and reconstruction PNGs",
                       description="Rows of (A, B, input mixup, VarMixup, VarMixup residual) at lam = 0, .25, .5, "
                       ".75, 1 for real test pairs, and reconstructions beside their originals.")
    p.add_argument("--data-dir", required=True, help="ImageFolder dir, a .tar.gz of one, or a torchvision name")
    add_vae_flags(p)
    p.add_argument("--pairs", type=int, default=6)
    p.add_argument("--offset", type=int, default=0, help="first test image to use (of a fixed shuffle)")
    p.add_argument("--out-dir", default="outputs/pictures")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .. import write_pictures

    vae = vae_from_flags(args)
    a, b = write_pictures(vae, args.data_dir, args.out_dir, pairs=args.pairs, offset=args.offset)
    print(f"wrote {a} and {b}")
    return 0
