"""The one resume check of every training command (``train-vae``, ``train-classifier``, ``train-fast``).

``--resume`` continues a run only from its saved training state, and only with the settings and data it was
saved with:

- no training state: refused (a run is never silently started again from step 0 over its checkpoint);
- other settings (each command names the ones that change the trajectory), another ``--data-dir`` or other
  training images (sha256 of the decoded tensors): refused unless ``--allow-changed-settings`` (then a
  warning names every change).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from varmixup_aug import VarMixupError

__all__ = ["changed_settings", "check_resume", "check_resume_settings", "data_changes", "data_record",
           "data_sha256", "require_state"]


def data_sha256(*tensors: Tensor) -> str:
    """sha256 of the tensors' bytes (about 1 s per GB): identifies the training data of a run."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def data_record(data_dir: str | os.PathLike[str] | None, *tensors: Tensor) -> dict[str, Any]:
    """What a training state records of its data: the ``--data-dir`` (absolute when it is a path) and the sha256."""
    record: dict[str, Any] = {"train_sha256": data_sha256(*tensors)} if tensors else {}
    if data_dir is not None:
        record["data_dir"] = _norm(data_dir)
    return record


def _norm(data_dir: Any) -> str:
    path = Path(str(data_dir)).expanduser()
    return str(path.resolve()) if path.exists() else str(data_dir)


def require_state(path: str | os.PathLike[str], what: str = "training state") -> Path:
    """Refuse ``--resume`` when the run's training state is missing."""
    path = Path(path)
    if not path.is_file():
        raise VarMixupError(
            f"--resume given but there is no {what} at {path}; the run cannot continue without it and is not "
            "started again from step 0: put the file back, or start the run over with --overwrite"
        )
    return path


def changed_settings(saved: dict[str, Any], now: dict[str, Any], keys: Any) -> list[str]:
    """``"name: saved -> now"`` for each of ``keys`` whose value differs (lists and tuples compare equal)."""
    def norm(v: Any) -> Any:
        return list(v) if isinstance(v, (list, tuple)) else v

    return [f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in keys
            if k in saved and norm(saved.get(k)) != norm(now.get(k))]


def data_changes(saved: dict[str, Any] | None, now: dict[str, Any] | None) -> list[str]:
    """The differences between two :func:`data_record` s; what one of them lacks is not compared."""
    saved, now = saved or {}, now or {}
    changes = []
    if saved.get("data_dir") and now.get("data_dir") and _norm(saved["data_dir"]) != _norm(now["data_dir"]):
        changes.append(f"--data-dir: {saved['data_dir']!r} -> {now['data_dir']!r}")
    if saved.get("train_sha256") and now.get("train_sha256") and saved["train_sha256"] != now["train_sha256"]:
        changes.append("training images: other data (sha256 differs)")
    return changes


def check_resume_settings(path: Path, changes: list[str], allow: bool) -> None:
    """Refuse a resume whose settings differ from the saved run's, unless ``allow`` (then warn)."""
    if not changes:
        return
    text = "; ".join(changes)
    if not allow:
        raise VarMixupError(
            f"{path}: the run was saved with other settings ({text}); resume with the same flags, or pass "
            "--allow-changed-settings (allow_changed_settings=True) to continue anyway"
        )
    warnings.warn(f"{path}: resuming with changed settings ({text})", stacklevel=3)


def check_resume(path: Path, *, saved: dict[str, Any], now: dict[str, Any], keys: Any,
                 saved_data: dict[str, Any] | None, now_data: dict[str, Any] | None, allow: bool) -> None:
    """The settings in ``keys`` and the data records must match between the saved run and this one."""
    check_resume_settings(path, changed_settings(saved, now, keys) + data_changes(saved_data, now_data), allow)
