"""Safetensors files: atomic writes, reading the JSON header, and resumable training states."""

from __future__ import annotations

import glob
import json
import os
import re
import secrets
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from ._errors import VarMixupError

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "load_training_state",
    "read_header",
    "read_tensors",
    "remove_stale_temps",
    "save_training_state",
    "write_safetensors",
]


def _umask() -> int:
    """The process umask, read without changing it where /proc allows."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.tmp-"


def remove_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temp files that :func:`atomic_path` left beside ``path`` in processes that died (SIGKILL).

    A temp file is named ``.<name>.tmp-<host>-<pid>-<random>``; it is removed when it was made on this host
    by a process that no longer exists. Returns the removed paths.
    """
    path = Path(path)
    removed: list[Path] = []
    host = socket.gethostname()
    try:
        entries = list(path.parent.glob(glob.escape(_temp_prefix(path)) + "*"))
    except OSError:
        return removed
    for entry in entries:
        parts = entry.name[len(_temp_prefix(path)):].rsplit("-", 2)
        if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
            continue  # still running
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # alive, another user's
        try:
            entry.unlink()
            removed.append(entry)
        except OSError:
            pass
    return removed


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary file beside ``path`` to write; it replaces ``path`` on success and is removed on failure.

    A crash therefore never leaves a half-written file at ``path``. Temp files of processes killed
    before they could clean up (SIGKILL, power loss) are removed by the next write to the same path.
    The written file gets the permissions of a plainly created file (``0o666 & ~umask``), whatever
    the writer used for the temp file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = path.with_name(f"{_temp_prefix(path)}{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:  # a full disk, a read-only folder: the old file stays, and the error names the path
        if exc.errno is None:
            raise
        raise type(exc)(exc.errno, f"cannot write {path} ({exc.strerror}); any previous {path.name} is left as "
                        "it was") from exc
    finally:
        tmp.unlink(missing_ok=True)


def _write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and flush it to the disk (``fsync``): a full disk fails here, not later."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`): the old file or the whole new one."""
    with atomic_path(path) as tmp:
        _write_bytes(tmp, data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically; it is serialised before anything is written."""
    return atomic_write_text(path, json.dumps(obj, indent=indent))


def write_safetensors(path: str | os.PathLike[str], tensors: dict[str, Tensor], key: str, header: dict[str, Any],
                      *, sort_keys: bool = False) -> Path:
    """Write ``tensors`` (moved to the CPU) with ``header`` as JSON under metadata ``key``, atomically."""
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        try:
            save_file(cpu, str(tmp), metadata={key: json.dumps(header, sort_keys=sort_keys)})
        except Exception as exc:  # safetensors reports a full disk as its own error type: make it an OSError
            found = re.search(r"os error (\d+)", str(exc))
            if found is None or isinstance(exc, OSError):
                raise
            code = int(found.group(1))
            raise OSError(code, os.strerror(code)) from exc
    return Path(path)


MAX_HEADER_BYTES = 100 << 20  # safetensors' own bound on the JSON header


class BadSafetensorsFile(ValueError):
    """A file that is not safetensors, or is truncated; the message says which and why."""


def safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    """The JSON header of a safetensors file and its size, checked against the data length the header
    implies; :class:`BadSafetensorsFile` when it is not one or is truncated."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise BadSafetensorsFile(f"not a safetensors file (only {size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n == 0 or n > min(size - 8, MAX_HEADER_BYTES):
            raise BadSafetensorsFile(f"not a safetensors file, or truncated (header claims {n} bytes, file has {size})")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadSafetensorsFile("not a safetensors file (header is not JSON)") from exc
    if not isinstance(header, dict):
        raise BadSafetensorsFile("not a safetensors file (header is not a JSON object)")
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise BadSafetensorsFile("not a safetensors file (a tensor entry has no data_offsets)") from exc
    if size != 8 + n + end:
        raise BadSafetensorsFile(f"truncated or corrupt: {size} bytes where the header needs {8 + n + end}")
    return header, size


def _check_header_bytes(path: Path) -> None:
    try:
        safetensors_header(path)
    except BadSafetensorsFile as exc:
        raise VarMixupError(f"{path}: {exc}") from exc


def read_header(path: str | os.PathLike[str], key: str, *, writer: str) -> dict[str, Any]:
    """The JSON stored under metadata ``key`` of a safetensors file, without loading tensors.

    Raises ``VarMixupError`` naming the file when it is missing, not safetensors, truncated, or
    has no such key (``writer`` names what writes files with it).
    """
    path = Path(path)
    if not path.is_file():
        raise VarMixupError(f"{path}: checkpoint file does not exist")
    _check_header_bytes(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types
        raise VarMixupError(
            f"{path}: cannot read the safetensors header, the file may be truncated or corrupt ({exc})"
        ) from exc
    if key not in meta:
        raise VarMixupError(f"{path}: no '{key}' metadata; it was not written by {writer}")
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError as exc:
        raise VarMixupError(f"{path}: '{key}' metadata is not valid JSON ({exc})") from exc


def read_tensors(path: str | os.PathLike[str], prefix: str = "") -> dict[str, Tensor]:
    """The tensors of a safetensors file whose names start with ``prefix``, with the prefix removed."""
    with safe_open(str(path), framework="pt", device="cpu") as f:
        return {k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}


def save_training_state(path: str | os.PathLike[str], model: nn.Module, optimizer: torch.optim.Optimizer | None,
                        key: str, header: dict[str, Any]) -> Path:
    """Save model weights, optimizer state, torch's CPU RNG state and ``header`` (the position) in one file.

    Tensors are named ``model.*``, ``optim.<param id>.<name>`` and ``rng.cpu``; the optimizer's
    ``param_groups`` go into the header.
    """
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if optimizer is not None:
        state = optimizer.state_dict()
        for pid, per_param in state["state"].items():
            for name, value in per_param.items():
                if value is not None:
                    tensors[f"optim.{pid}.{name}"] = value if isinstance(value, Tensor) else torch.tensor(value)
        header = {**header, "param_groups": state["param_groups"]}
    tensors["rng.cpu"] = torch.get_rng_state()
    return write_safetensors(path, tensors, key, header)


def load_training_state(path: str | os.PathLike[str], model: nn.Module, optimizer: torch.optim.Optimizer,
                        key: str, header: dict[str, Any]) -> None:
    """Restore what :func:`save_training_state` wrote into ``model``, ``optimizer`` and torch's CPU RNG.

    ``header`` is the file's header (see :func:`read_header`), checked by the caller first.
    """
    tensors = read_tensors(path)
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    opt_state: dict[str, Any] = {"state": {}, "param_groups": header["param_groups"]}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, name = k.split(".", 2)
            opt_state["state"].setdefault(int(pid), {})[name] = v
    optimizer.load_state_dict(opt_state)
    torch.set_rng_state(tensors["rng.cpu"])
