"""Flags several commands share, and parsing comma-separated values (``--widths 32,64,128``, ``--eps 2/255``)."""

from __future__ import annotations

import argparse
from typing import Any

from ... import VarMixupError

__all__ = ["add_run_flags", "float_list", "int_list", "start_run"]


def add_run_flags(parser: Any, *, threads: bool = True) -> None:
    """``--device``, ``--threads`` (optional) and ``--no-progress``."""
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    if threads:
        parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true")


def start_run(args: argparse.Namespace) -> bool:
    """Apply ``--threads``; return whether to show progress bars."""
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    return not args.no_progress


def int_list(text: str, flag: str, example: str) -> tuple[int, ...]:
    """``"32,64,128"`` -> ``(32, 64, 128)``; ``example`` shows a valid value in the error."""
    try:
        return tuple(int(item) for item in text.split(","))
    except ValueError as exc:
        raise VarMixupError(f"{flag} must be comma-separated ints like {example}, got {text!r}") from exc


def float_list(text: str, flag: str) -> tuple[float, ...]:
    """``"2/255,0.5"`` -> ``(2 / 255, 0.5)``: numbers or fractions."""
    out = []
    for item in text.split(","):
        item = item.strip()
        try:
            if "/" in item:
                num, den = item.split("/")
                out.append(float(num) / float(den))
            else:
                out.append(float(item))
        except ValueError as exc:
            raise VarMixupError(f"{flag} must be comma-separated numbers like 2/255,4/255 or 0.5, got {text!r}") from exc
    return tuple(out)
