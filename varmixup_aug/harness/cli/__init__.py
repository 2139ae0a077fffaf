"""The ``varmixup-aug`` command line: one sub-command per module in this package."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from varmixup_aug import VarMixupError

_COMMANDS = ["demo", "train_vae", "pictures"]
_COMMANDS += ["train_classifier", "evaluate", "train_fast", "evidence"]


def main(argv: Sequence[str] | None = None) -> int:
    import importlib

    modules = [importlib.import_module(f".{name}", __name__) for name in _COMMANDS]

    parser = argparse.ArgumentParser(prog="varmixup-aug", description="VarMixup and Mixup Inference tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in modules:
        module.add_parser(sub)
    args = parser.parse_args(argv)
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
