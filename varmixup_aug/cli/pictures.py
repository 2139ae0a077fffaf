"""``varmixup-aug pictures``: mixup grids and reconstructions from real test images."""

from __future__ import annotations

import argparse
from pathlib import Path
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
    from .. import load_pretrained_vae, load_vae
    from .._data import load_tensor_dataset, open_image_dataset
    from .._pictures import mixup_grid, reconstruction_grid

    vae = load_vae(args.vae) if args.vae else load_pretrained_vae(args.pretrained)
    n = args.offset + max(2 * args.pairs, 32)
    images, _ = load_tensor_dataset(open_image_dataset(args.data_dir, "test"), limit=n, progress=False)
    x = images[args.offset :].float() / 255.0
    out = Path(args.out_dir)
    a = mixup_grid(vae, x[0 : 2 * args.pairs : 2], x[1 : 2 * args.pairs : 2], out / "varmixup_grid.png")
    b = reconstruction_grid(vae, x[:32], out / "reconstructions.png")
    print(f"wrote {a} and {b}")
    return 0
