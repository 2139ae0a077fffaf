"""The ``varmixup-aug`` command line: one sub-command per module in this package."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from varmixup_aug import VarMixupError

_COMMANDS = ["demo", "train_vae", "pictures"]
_COMMANDS += ["train_classifier", "evaluate", "train_fast", "evidence"]


def build_parser() -> argparse.ArgumentParser:
    """The ``varmixup-aug`` parser with every sub-command (parsing runs nothing)."""
    import importlib

    parser = argparse.ArgumentParser(prog="varmixup-aug", description="VarMixup and Mixup Inference tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in _COMMANDS:
        importlib.import_module(f".{name}", __name__).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except VarMixupError as exc:
        print(f"varmixup-aug {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a folder that went away: one line, not a traceback
        print(f"varmixup-aug {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
