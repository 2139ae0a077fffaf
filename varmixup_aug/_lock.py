"""Advisory file locks (``fcntl.flock``) that name their holder: one helper for the latent cache and the CLI.

A lock file holds ``{"pid": ..., "host": ..., "what": ...}`` of its holder. The kernel drops a ``flock`` when
its process dies (SIGKILL included), so a lock is never stale; the JSON is only there to name the holder in
the error a second process gets.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ._errors import VarMixupError

__all__ = ["file_lock", "lock_holder"]

_POLL_SECONDS = 0.05


def lock_holder(path: str | os.PathLike[str]) -> dict[str, object] | None:
    """What the lock file at ``path`` says of its holder, or None when it is missing or unreadable."""
    try:
        text = Path(path).read_text()
        holder = json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _describe(holder: dict[str, object] | None) -> str:
    if holder is None:
        return "another process"
    what = f" ({holder['what']})" if holder.get("what") else ""
    return f"process {holder.get('pid')} on {holder.get('host')}{what}"


@contextmanager
def file_lock(path: str | os.PathLike[str], *, timeout: float | None, what: str = "",
              hint: str = "wait for it to finish, or stop it") -> Iterator[Path]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block.

    Args:
        path: the lock file; its folder must exist.
        timeout: seconds to wait for another holder; ``0`` refuses at once, ``None`` waits for ever.
        what: a short description of the holder, written into the file for the error others get.
        hint: the fix, appended to the error.

    Raises:
        VarMixupError: the lock is still held by another process after ``timeout`` seconds; the message
            names that process (pid and host) and ``what`` it said it was doing.
    """
    path = Path(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = None if timeout is None else time.monotonic() + max(0.0, float(timeout))
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    waited = "" if not timeout else f" after waiting {timeout:g} s"
                    raise VarMixupError(
                        f"{path} is locked by {_describe(lock_holder(path))}{waited}; {hint}"
                    ) from None
                time.sleep(_POLL_SECONDS)
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "what": what}).encode()
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, record, 0)
        except OSError:  # a full disk: the lock holds all the same, only its holder goes unnamed
            pass
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
