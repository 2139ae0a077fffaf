"""The ``--threads``, ``--out`` and ``--overwrite`` options of the measuring examples, and their JSON report."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from varmixup_aug.harness import atomic_write_json


def add_report_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--out", default=None, help="JSON to write (refused if it exists, unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true")


def apply_report_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse an existing ``--out`` before any work, and set the thread count."""
    if args.out and Path(args.out).exists() and not args.overwrite:
        parser.error(f"--out {args.out} exists; pass --overwrite to replace it")
    if args.threads:
        torch.set_num_threads(args.threads)


def write_report(args: argparse.Namespace, report: dict[str, Any]) -> None:
    """Write ``report`` to ``--out`` atomically (nothing when no ``--out`` was given)."""
    if args.out:
        atomic_write_json(args.out, report, indent=1)
