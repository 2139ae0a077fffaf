"""The latent cache on disk: a small manifest beside a folder of shards.

Layout for a manifest ``latents-<fp>.safetensors``:

- ``latents-<fp>.safetensors``: the manifest, a safetensors file without tensors whose metadata (key
  ``varmixup_aug_latents``) lists the fingerprint, the item count, the latent shape and dtype and every
  shard with its byte size. It is written last, so a manifest means a finished cache.
- ``latents-<fp>.safetensors.shards/``: ``owner.json`` (written when a build starts: it marks the folder
  and the manifest beside it as ours, even when the manifest is truncated), ``.lock`` (the builders' file
  lock) and ``shard-<start>-<stop>.safetensors`` files with ``mu``, ``logvar`` and ``labels`` of items
  ``start..stop-1``, each written atomically.

Shards are read memory-mapped (safetensors), so a reader's memory does not grow with the cache.
"""

from __future__ import annotations

import base64
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ._errors import VarMixupError
from ._io import atomic_write_json, read_tensors, safetensors_header, write_safetensors

__all__ = ["CACHE_KEY", "CACHE_VERSION", "SHARD_BYTES", "Layout", "Spec", "check_disk", "find_manifest",
           "missing_shards", "open_shards", "plan_shards", "write_manifest", "write_owner", "write_shard"]

CACHE_KEY = "varmixup_aug_latents"
CACHE_VERSION = 3
WRITER = "VarMixupDataset"
SHARD_BYTES = 64 << 20  # the builder holds one shard in memory; 64 MiB keeps 1.28 M SD-VAE items in ~330 files
_DISK_MARGIN = 16 << 20  # headers, the manifest, the file system's own blocks


@dataclass(frozen=True)
class Spec:
    """What one item's posterior is: the latent shape and the dtype of ``mu`` and ``logvar``."""

    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def item_bytes(self) -> int:
        return 2 * math.prod(self.shape) * torch.empty((), dtype=self.dtype).element_size() + 8  # + the label

    def to_json(self) -> dict[str, Any]:
        return {"latent": list(self.shape), "dtype": str(self.dtype).removeprefix("torch.")}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Spec:
        dtype = getattr(torch, str(d["dtype"]))
        if not isinstance(dtype, torch.dtype):
            raise TypeError(f"not a dtype: {d['dtype']!r}")
        return cls(tuple(int(s) for s in d["latent"]), dtype)


@dataclass(frozen=True)
class Layout:
    """Where a cache's files go (see the module docstring)."""

    manifest: Path

    @property
    def shards(self) -> Path:
        return self.manifest.with_name(self.manifest.name + ".shards")

    @property
    def lock(self) -> Path:
        return self.shards / ".lock"

    @property
    def owner(self) -> Path:
        return self.shards / "owner.json"

    def shard(self, start: int, stop: int) -> Path:
        return self.shards / f"shard-{start:010d}-{stop:010d}.safetensors"


def plan_shards(items: int, spec: Spec, shard_bytes: int = SHARD_BYTES) -> list[tuple[int, int]]:
    """``(start, stop)`` item ranges of at most ``shard_bytes`` each (at least one item)."""
    per = max(1, shard_bytes // spec.item_bytes)
    return [(start, min(start + per, items)) for start in range(0, items, per)]


def _metadata(path: Path) -> dict[str, Any] | None:
    """Our metadata of a readable safetensors file, or None when the file is readable but not ours.
    Raises ValueError (or OSError) when it is unreadable or truncated."""
    header, _ = safetensors_header(path)
    text = (header.get("__metadata__") or {}).get(CACHE_KEY)
    if text is None:
        return None
    meta = json.loads(text)
    if not isinstance(meta, dict):
        raise TypeError("the cache metadata is not a JSON object")
    return meta


def _ours_truncated(layout: Layout) -> bool:
    """True when the file at the manifest's path is a prefix of the manifest we wrote (``owner.json`` keeps
    a copy): ours, truncated. Anything else there is someone else's file."""
    try:
        owner = json.loads(layout.owner.read_text())
        if owner.get("writer") != WRITER or "manifest" not in owner:
            return False
        return base64.b64decode(owner["manifest"]).startswith(layout.manifest.read_bytes())
    except (OSError, ValueError, AttributeError, TypeError):
        return False


def find_manifest(layout: Layout, fingerprint: str, items: int, warnings: list[str]) -> dict[str, Any] | None:
    """The manifest's metadata when it is a finished cache of ``fingerprint``; None when there is none (or it
    is ours but stale, truncated or corrupt: noted in ``warnings``, to be rebuilt). Refuses a foreign file."""
    path = layout.manifest
    if path.is_dir():
        raise VarMixupError(f"cache_path {path} is a folder where the cache file should go; pass another path")
    if not path.exists():
        return None
    try:
        meta = _metadata(path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        if not _ours_truncated(layout):
            raise _foreign(path, f"unreadable: {exc}") from None
        warnings.append(f"latent cache {path} is truncated or corrupt ({exc}); it is rebuilt from its shards")
        return None
    if meta is None:
        raise _foreign(path, f"no '{CACHE_KEY}' metadata; it was not written by {WRITER}")
    if meta.get("version") != CACHE_VERSION or meta.get("fingerprint") != fingerprint or meta.get("items") != items:
        return None  # ours, of an older version or of other data or weights: rebuilt
    try:
        shards = [(int(a), int(b), int(size)) for a, b, size in meta["shards"]]
        Spec.from_json(meta)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        warnings.append(f"latent cache {path} has a corrupt manifest ({exc}); it is rebuilt")
        return None
    for start, stop, size in shards:
        problem = _shard_problem(layout.shard(start, stop), fingerprint, start, stop, size)
        if problem:
            warnings.append(f"latent cache {path}: {problem}; its items are encoded again")
            return None
    return meta


def _foreign(path: Path, why: str) -> VarMixupError:
    return VarMixupError(
        f"cache_path {path} exists and is not a latent cache written by VarMixupDataset; it is not overwritten. "
        f"Delete it or pass another cache_path ({path}: {why})"
    )


def _shard_problem(path: Path, fingerprint: str, start: int, stop: int, size: int | None = None) -> str:
    """Why the shard at ``path`` cannot be used ('' when it can)."""
    if not path.is_file():
        return f"shard {path.name} is missing"
    try:
        if size is not None and path.stat().st_size != size:
            return f"shard {path.name} has {path.stat().st_size} bytes, not {size}: truncated"
        meta = _metadata(path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"shard {path.name} is truncated or corrupt ({exc})"
    if meta is None or meta.get("fingerprint") != fingerprint or (meta.get("start"), meta.get("stop")) != (start, stop):
        return f"shard {path.name} belongs to another cache"
    return ""


def missing_shards(layout: Layout, plan: list[tuple[int, int]], fingerprint: str,
                   warnings: list[str]) -> list[tuple[int, int]]:
    """The ranges of ``plan`` without a usable shard; a broken shard is noted in ``warnings``."""
    missing = []
    for start, stop in plan:
        problem = _shard_problem(layout.shard(start, stop), fingerprint, start, stop)
        if problem:
            missing.append((start, stop))
            if "truncated" in problem or "corrupt" in problem:
                warnings.append(f"latent cache {layout.manifest}: {problem}; its items are encoded again")
    return missing


def read_owner(layout: Layout, fingerprint: str, items: int) -> tuple[Spec, list[tuple[int, int]]] | None:
    """The spec and shard plan an interrupted build of the same cache recorded, so that it resumes."""
    try:
        owner = json.loads(layout.owner.read_text())
        if (owner.get("writer"), owner.get("fingerprint"), owner.get("items")) != (WRITER, fingerprint, items):
            return None
        return Spec.from_json(owner), [(int(a), int(b)) for a, b in owner["plan"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def write_owner(layout: Layout, fingerprint: str, items: int, spec: Spec, plan: list[tuple[int, int]],
                manifest: bytes | None = None) -> None:
    """Mark the shards folder as ours, with the build's plan (to resume it) and a copy of the manifest."""
    record: dict[str, Any] = {"writer": WRITER, "fingerprint": fingerprint, "items": items, **spec.to_json(),
                              "plan": [list(r) for r in plan]}
    if manifest is not None:
        record["manifest"] = base64.b64encode(manifest).decode()
    atomic_write_json(layout.owner, record, indent=None)


def check_disk(layout: Layout, spec: Spec, missing: list[tuple[int, int]]) -> None:
    """Refuse to start when the cache's file system cannot hold the shards still to write."""
    need = sum(stop - start for start, stop in missing) * spec.item_bytes + _DISK_MARGIN
    free = shutil.disk_usage(layout.shards).free
    if free < need:
        items = sum(stop - start for start, stop in missing)
        raise VarMixupError(
            f"cache_path {layout.manifest}: the latent cache needs {_size(need)} for {items} items "
            f"({spec.item_bytes} bytes each) but only {_size(free)} are free on its file system; nothing was "
            "encoded. Free space, or pass a cache_path on a larger disk"
        )


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    raise AssertionError  # pragma: no cover


def write_shard(layout: Layout, fingerprint: str, start: int, mu: Tensor, logvar: Tensor, labels: Tensor) -> None:
    stop = start + int(labels.shape[0])
    meta = {"version": CACHE_VERSION, "fingerprint": fingerprint, "start": start, "stop": stop}
    write_safetensors(layout.shard(start, stop), {"mu": mu, "logvar": logvar, "labels": labels}, CACHE_KEY, meta)


def write_manifest(layout: Layout, fingerprint: str, items: int, spec: Spec, plan: list[tuple[int, int]]) -> None:
    """Write the manifest (after every shard is in place), and remove shard files that are not in ``plan``."""
    keep = {layout.shard(a, b).name for a, b in plan}
    for entry in layout.shards.glob("shard-*.safetensors"):
        if entry.name not in keep:
            entry.unlink(missing_ok=True)
    shards = [[a, b, layout.shard(a, b).stat().st_size] for a, b in plan]
    meta = {"version": CACHE_VERSION, "fingerprint": fingerprint, "items": items, **spec.to_json(), "shards": shards}
    write_safetensors(layout.manifest, {}, CACHE_KEY, meta)
    write_owner(layout, fingerprint, items, spec, plan, manifest=layout.manifest.read_bytes())


def open_shards(layout: Layout, meta: dict[str, Any]) -> list[dict[str, Tensor]]:
    """The shards' tensors, memory-mapped (read lazily from the page cache, shared by every process)."""
    return [read_tensors(layout.shard(int(a), int(b))) for a, b, _ in meta["shards"]]


def prepare_folder(layout: Layout) -> None:
    try:
        layout.shards.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VarMixupError(f"cache_path {layout.manifest}: cannot create {layout.shards.name} ({exc})") from exc
