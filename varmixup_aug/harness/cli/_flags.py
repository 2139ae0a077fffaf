"""Flags several commands share, and parsing comma-separated values (``--widths 32,64,128``, ``--eps 2/255``)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from varmixup_aug import VarMixupError

__all__ = [
    "add_out_flags", "add_run_flags", "add_vae_flags", "finite_float", "float_list", "int_list", "nonnegative_int",
    "one_float", "positive_float", "positive_int", "positive_int_list", "prepare_out_dir", "prepare_out_file",
    "start_run", "vae_from_flags", "vae_label",
]


def add_run_flags(parser: Any, *, threads: bool = True) -> None:
    """``--device``, ``--threads`` (optional) and ``--no-progress``."""
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    if threads:
        parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true")


def add_vae_flags(parser: Any, *, used_by: str = "") -> None:
    """``--vae`` (a checkpoint or a shipped VAE's name) and ``--pretrained`` (the shipped VAE used without it)."""
    used = f" for {used_by}" if used_by else ""
    parser.add_argument("--vae", default=None,
                        help=f"a VAE checkpoint (.safetensors) or a shipped VAE's name{used}; default: --pretrained")
    parser.add_argument("--pretrained", default="cifar10",
                        help="name of the shipped VAE used when --vae is not given (see list_pretrained)")


def vae_from_flags(args: argparse.Namespace) -> Any:
    """The VAE that ``--vae`` names (:func:`varmixup_aug.load_vae`), else the shipped ``--pretrained`` one."""
    from varmixup_aug import load_pretrained_vae, load_vae

    return load_vae(args.vae) if args.vae else load_pretrained_vae(args.pretrained)


def vae_label(args: argparse.Namespace) -> str:
    """What ``--vae`` / ``--pretrained`` chose, as recorded in a run's settings."""
    return args.vae or f"pretrained:{args.pretrained}"


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
            raise VarMixupError(f"{flag} must be comma-separated numbers like 2/255,4/255 or 0.5, got {text!r}"
                                ) from exc
    return tuple(out)


def one_float(text: str, flag: str) -> float:
    """``"2/255"`` -> ``2 / 255``: one number or fraction, as :func:`float_list` reads them."""
    values = float_list(text, flag)
    if len(values) != 1:
        raise VarMixupError(f"{flag} takes one value like 2/255 or 0.5, got {text!r}")
    return values[0]


def positive_int(text: str) -> int:
    """argparse type: an int >= 1 (argparse then exits with code 2 naming the flag)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (>= 1), got {text!r}")
    return value


def finite_float(text: str) -> float:
    """argparse type: a finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def positive_int_list(text: str) -> str:
    """argparse type: comma-separated ints >= 1 such as ``32,64,128`` (kept as text for :func:`int_list`)."""
    try:
        values = [int(item) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated positive ints like 32,64,128, got {text!r}"
                                         ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"must be comma-separated positive ints like 32,64,128, got {text!r}")
    return text


def add_out_flags(parser: Any, *, what: str = "run") -> None:
    """``--resume``, ``--overwrite`` and ``--allow-changed-settings``, for commands that write a run to ``--out``."""
    parser.add_argument("--resume", action="store_true", help=f"continue the {what} already in --out")
    parser.add_argument("--overwrite", action="store_true",
                        help=f"replace the {what} already in --out (it is set aside once the new run's data and "
                        "settings are checked, deleted once the new run has its first checkpoint, and put back "
                        "if the new run fails before that)")
    parser.add_argument("--allow-changed-settings", action="store_true",
                        help="with --resume: continue even if batch size, lr, seed, schedule or data differ")


def prepare_out_dir(out: str | Path, *, resume: bool, overwrite: bool, run_files: Sequence[str],
                    flag: str = "--out") -> Path:
    """Check the run folder ``out`` before any data is read; return it, created. Nothing in it is changed.

    ``run_files`` are the names (inside ``out``) whose presence means a run is already there.
    - ``out`` is an existing file, or one of ``run_files`` is a folder: refused.
    - a run is there and neither ``resume`` nor ``overwrite``: refused.
    - ``resume`` with no run there, or ``resume`` and ``overwrite`` together: refused.
    - the folder must accept a new file.
    Every refusal is a ``VarMixupError`` naming ``flag`` (the CLI exits with code 2). The commands hold the
    folder with :func:`~varmixup_aug.harness.claim_run`, which makes these checks under a lock.
    """
    from .. import check_out

    return check_out(out, resume=resume, overwrite=overwrite, run_files=run_files, flag=flag)[0]


def prepare_out_file(out: str | Path, *, resume: bool, overwrite: bool, companions: Sequence[str] = (),
                     flag: str = "--out") -> Path:
    """:func:`prepare_out_dir` for a run written as the file ``out`` plus ``out + suffix`` for each of
    ``companions`` (e.g. ``.train-state.safetensors``). ``out`` being a folder is refused."""
    from .. import check_out

    return check_out(out, resume=resume, overwrite=overwrite, companions=companions, is_file=True, flag=flag)[0]


def nonnegative_int(text: str) -> int:
    """argparse type: an int >= 0 (argparse then exits with code 2 naming the flag)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0 (0: no worker processes), got {text!r}")
    return value
