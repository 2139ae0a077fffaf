"""What the commands write: claiming an output for one run at a time, ``--overwrite`` that deletes nothing until the
new run has a checkpoint, and merging result rows into a shared file.

A run's output is a folder (``train-classifier``, ``train-fast``) or a file with companions beside it
(``train-vae``: ``OUT``, ``OUT.train-state.safetensors``, ``OUT.report.json``). :func:`claim_run` holds a lock
on it for the whole run (a second run into the same output is refused at once, naming the first by pid),
and with ``overwrite`` moves the old run's files aside only when :meth:`RunClaim.set_old_run_aside` is called
(after the new run's data and settings are checked); they are deleted once the new run has written its first
checkpoint (:meth:`RunClaim.commit`) and put back when it fails before that. A run killed while the old one is
aside gets it back at the next claim of the same output.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from varmixup_aug import VarMixupError
from varmixup_aug._io import atomic_write_json, atomic_write_text
from varmixup_aug._lock import file_lock

__all__ = ["RunClaim", "atomic_write_json", "check_out", "claim_run", "hold_output", "merge_result_row",
           "read_result_rows"]


@dataclass
class RunClaim:
    """The output of one run, held by :func:`claim_run`: the run's files and where an overwritten run waits."""

    out: Path
    files: list[Path]
    overwrite: bool
    aside: Path
    moved: list[Path] = field(default_factory=list)
    committed: bool = False

    def set_old_run_aside(self) -> None:
        """With ``overwrite``: move the old run's files into :attr:`aside` (nothing is deleted yet)."""
        if not self.overwrite or self.moved:
            return
        existing = [p for p in self.files if p.exists()]
        if not existing:
            return
        self.aside.mkdir(parents=True, exist_ok=True)
        for path in existing:
            os.replace(path, self.aside / path.name)
            self.moved.append(path)

    def commit(self) -> None:
        """The new run has a checkpoint: delete the old run set aside (once; later calls do nothing)."""
        if not self.committed:
            self.committed = True
            shutil.rmtree(self.aside, ignore_errors=True)

    def restore(self) -> None:
        """The new run failed before its first checkpoint: put the old run back, removing the new run's files."""
        if self.committed or not self.aside.is_dir():
            return
        for path in self.files:
            if (self.aside / path.name).exists():
                os.replace(self.aside / path.name, path)
            elif path.exists() and self.moved:  # written by the failed new run
                path.unlink()
        shutil.rmtree(self.aside, ignore_errors=True)


def _aside_of(out: Path, is_file: bool) -> Path:
    return out.with_name(f".{out.name}.replaced") if is_file else out / ".replaced-run"


def _lock_of(out: Path, is_file: bool) -> Path:
    return out.with_name(f".{out.name}.lock") if is_file else out / ".varmixup-aug.lock"


def _probe_writable(folder: Path, flag: str) -> None:
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".varmixup-write-test-"):
            pass
    except OSError as exc:
        raise VarMixupError(f"{flag} {folder} is not writable ({exc})") from exc


def _check_claim(existing: list[Path], *, resume: bool, overwrite: bool, flag: str, where: Path) -> None:
    if resume and overwrite:
        raise VarMixupError("--resume and --overwrite exclude each other; pass one")
    for path in existing:
        if path.is_dir():
            raise VarMixupError(f"{flag} {where}: {path} is a folder where a file of the run should go")
    if existing and not resume and not overwrite:
        names = ", ".join(str(p) for p in existing)
        raise VarMixupError(
            f"{flag} {where} already holds a run ({names}); pass --resume to continue it, --overwrite to replace "
            f"it, or another {flag}"
        )
    if resume and not existing:
        raise VarMixupError(f"--resume given but there is no checkpoint (no run to resume) at {flag} {where}")


def run_files_of(out: str | os.PathLike[str], *, run_files: Sequence[str] = (), companions: Sequence[str] = (),
                 is_file: bool = False, flag: str = "--out") -> tuple[Path, list[Path]]:
    """The output path and the paths of its run files; refuses an output of the wrong kind (file vs folder)."""
    path = Path(out).expanduser()
    if is_file:
        if path.is_dir():
            raise VarMixupError(f"{flag} {path} is a folder; pass a file name such as {path / 'vae.safetensors'}")
        return path, [path] + [Path(str(path) + suffix) for suffix in companions]
    if path.exists() and not path.is_dir():
        raise VarMixupError(f"{flag} {path} is a file; pass a folder for the run")
    return path, [path / name for name in run_files]


def _make_folder(path: Path, *, is_file: bool, flag: str) -> Path:
    """Create the folder that holds ``path`` (a run folder, or a file's parent) and return it."""
    folder = path.parent if is_file else path
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VarMixupError(f"{flag} {path}: cannot create {'its folder' if is_file else 'the folder'} ({exc})"
                            ) from exc
    return folder


def check_out(out: str | os.PathLike[str], *, resume: bool, overwrite: bool, run_files: Sequence[str] = (),
              companions: Sequence[str] = (), is_file: bool = False, flag: str = "--out") -> tuple[Path, list[Path]]:
    """Refuse an output that cannot take the run (see :func:`claim_run`), create its folder; touch no run file."""
    path, files = run_files_of(out, run_files=run_files, companions=companions, is_file=is_file, flag=flag)
    _check_claim([p for p in files if p.exists()], resume=resume, overwrite=overwrite, flag=flag, where=path)
    folder = _make_folder(path, is_file=is_file, flag=flag)
    _probe_writable(folder, flag)
    return path, files


def _recover(aside: Path, files: list[Path]) -> None:
    """An earlier ``--overwrite`` was killed while the old run was aside: put it back, or drop it when the new run
    had already written a checkpoint."""
    if not aside.is_dir():
        return
    if any(p.exists() for p in files):
        shutil.rmtree(aside, ignore_errors=True)
        return
    restored = [p for p in files if (aside / p.name).exists()]
    for path in restored:
        os.replace(aside / path.name, path)
    shutil.rmtree(aside, ignore_errors=True)
    if restored:
        print(f"note: put back the run that an interrupted --overwrite had set aside ({', '.join(map(str, restored))})",
              file=sys.stderr)


@contextmanager
def claim_run(out: str | os.PathLike[str], *, resume: bool, overwrite: bool, what: str,
              run_files: Sequence[str] = (), companions: Sequence[str] = (), is_file: bool = False,
              flag: str = "--out") -> Iterator[RunClaim]:
    """Hold ``out`` for one run for the ``with`` block.

    Args:
        out: the run folder (``run_files`` are names inside it) or, with ``is_file``, the run's main file
            (``companions`` are suffixes of the files beside it).
        resume, overwrite: the ``--resume``/``--overwrite`` flags.
        what: names the run in the lock, for the error another run gets (e.g. ``"train-vae"``).
        flag: the flag to name in errors.

    Refused (``VarMixupError``, before anything is read or changed): another process holds ``out`` (named by
    pid and host); ``out`` is of the wrong kind; a run is there and neither flag is given; ``resume`` with no
    run, or with ``overwrite``; the folder does not accept a new file. With ``overwrite``, nothing is deleted
    until :meth:`RunClaim.set_old_run_aside` and the new run's first :meth:`RunClaim.commit`; a failure before
    that puts the old run back. A block that ends without error commits.
    """
    path, files = run_files_of(out, run_files=run_files, companions=companions, is_file=is_file, flag=flag)
    if resume and overwrite:
        raise VarMixupError("--resume and --overwrite exclude each other; pass one")
    _make_folder(path, is_file=is_file, flag=flag)
    hint = f"another run writes into {flag} {path}; wait for it to end, stop it, or pass another {flag}"
    with file_lock(_lock_of(path, is_file), timeout=0, what=what, hint=hint):
        aside = _aside_of(path, is_file)
        _recover(aside, files)
        check_out(out, resume=resume, overwrite=overwrite, run_files=run_files, companions=companions,
                  is_file=is_file, flag=flag)
        claim = RunClaim(path, files, overwrite, aside)
        try:
            yield claim
        except BaseException:
            claim.restore()
            raise
        claim.commit()


@contextmanager
def hold_output(path: str | os.PathLike[str], *, what: str, flag: str = "--out") -> Iterator[Path]:
    """Hold the output ``path`` (a file or a folder) for one command: a second one is refused at once, naming the
    first by pid. The lock file is ``.NAME.lock`` beside ``path``."""
    path = Path(path).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VarMixupError(f"{flag} {path}: cannot create its folder ({exc})") from exc
    hint = f"another run writes {flag} {path}; wait for it to end, stop it, or pass another {flag}"
    with file_lock(path.with_name(f".{path.name}.lock"), timeout=0, what=what, hint=hint):
        yield path


def read_result_rows(path: str | os.PathLike[str], *, flag: str = "--results-json") -> dict[str, Any]:
    """The rows of a combined results file (none when it is missing or empty); a file that is not one is refused."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
    except OSError as exc:
        raise VarMixupError(f"{flag} {path}: cannot read it ({exc})") from exc
    if not text.strip():
        return {}
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise VarMixupError(f"{flag} {path} is not a results file of evaluate (not JSON: {exc}); pass another "
                            f"{flag}, or move this file away") from exc
    if not isinstance(rows, dict):
        raise VarMixupError(f"{flag} {path} holds a JSON {type(rows).__name__}, not evaluate's rows by name; pass "
                            f"another {flag}")
    return rows


def merge_result_row(path: str | os.PathLike[str], name: str, row: dict[str, Any], *, order: Sequence[str] = (),
                     markdown: tuple[str | os.PathLike[str], Any] | None = None) -> dict[str, Any]:
    """Put ``row`` under ``name`` into the combined results JSON at ``path``; return all rows.

    Side-by-side callers may share one file: the merge holds a lock file beside it (``.NAME.lock``), reads the
    rows, and replaces the file atomically, so a full disk or a kill leaves the previous file whole. Rows are
    sorted by their place in ``order``, then by name. ``markdown=(md_path, render)`` also rewrites ``md_path``
    with ``render(rows)``, under the same lock.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.with_name(f".{path.name}.lock"), timeout=None, what=f"merging a row into {path}"):
        rows = read_result_rows(path)
        rows[name] = row
        keys = sorted(rows, key=lambda k: (list(order).index(k) if k in order else len(order), k))
        rows = {k: rows[k] for k in keys}
        atomic_write_json(path, rows)
        if markdown is not None:
            atomic_write_text(markdown[0], markdown[1](rows))
    return rows
