"""Reading the committed results of the reproduction: training reports and per-image evidence.

One home for how ``results/<root>/<method>/{train_report,evidence}.json`` (one training run per
method) and ``results/<root>/seed<k>/<method>/...`` (one per training seed) are read, shared by the
tables (:mod:`.evidence_summary`) and the verdicts per claim (:mod:`.claims`). A part that is not
complete reads as ``None``, so a partial run is never reported as a finished one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from varmixup_aug import VarMixupError
from .fast_training import FAST_METHODS

__all__ = ["attack_precision", "binarization_part", "binarization_task", "bits_to_bool", "calibration_confidences",
           "calibration_correct", "clean_confidences", "corruption_scores", "load_runs", "load_seed_runs",
           "part_indices", "part_progress", "part_vector", "part_vector_on_subset", "selected_lams",
           "split_binarization_part"]


def binarization_task(eps: str, decoys: int = 0) -> str:
    """The name of a set of binary tasks, ``<eps>[:decoys<k>]`` (``eps`` as stored, e.g. ``"8/255"``; no
    suffix for the original task, ``decoys`` 0)."""
    return eps + (f":decoys{decoys}" if decoys else "")


def binarization_part(attack: str, eps: str, decoys: int = 0) -> str:
    """The stored name of one binarization test, ``binarization:<attack>:<task>``."""
    return f"binarization:{attack}:{binarization_task(eps, decoys)}"


def split_binarization_part(part: str) -> tuple[str, str, int]:
    """``(attack, eps, decoys)`` of a name made by :func:`binarization_part`."""
    _, attack, eps, *task = part.split(":")
    return attack, eps, int(task[0].removeprefix("decoys")) if task else 0


_SEED_FOLDER = re.compile(r"seed(\d+)")


def load_runs(root: str | Path) -> dict[str, dict[str, Any]]:
    """``{method: {"train": train_report, "evidence": evidence}}`` for the methods present under ``root``."""
    runs: dict[str, dict[str, Any]] = {}
    for method in FAST_METHODS:
        folder = Path(root) / method
        report, evidence = folder / "train_report.json", folder / "evidence.json"
        if report.is_file():
            runs[method] = {"train": json.loads(report.read_text()),
                            "evidence": json.loads(evidence.read_text()) if evidence.is_file() else None}
    return runs


def load_seed_runs(root: str | Path) -> dict[int, dict[str, dict[str, Any]]]:
    """``{seed: load_runs(root / f"seed{seed}")}`` for the ``seed<k>`` folders under ``root`` that hold a run,
    in seed order; ``{}`` when ``root`` does not exist."""
    folders = [p for p in Path(root).glob("seed*") if p.is_dir() and _SEED_FOLDER.fullmatch(p.name)]
    by_seed = {int(p.name[4:]): load_runs(p) for p in folders}
    return {seed: by_seed[seed] for seed in sorted(by_seed) if by_seed[seed]}


def _complete_chunks(evidence: dict[str, Any] | None, part: str) -> list[dict[str, Any]] | None:
    entry = (evidence or {}).get("parts", {}).get(part)
    if not entry or "n" not in entry:
        return None
    chunks = [entry["chunks"].get(str(i)) for i in range(len(entry["chunks"]))]
    return None if any(c is None for c in chunks) else chunks


def part_vector(evidence: dict[str, Any] | None, part: str, key: str) -> str | None:
    """The per-image bit string of ``key`` in ``part``, or ``None`` unless every chunk of it is done."""
    chunks = _complete_chunks(evidence, part)
    if chunks is None or any(key not in c for c in chunks):
        return None
    bits = "".join(c[key] for c in chunks)
    return bits if len(bits) == evidence["parts"][part]["n"] else None  # type: ignore[index]


def part_vector_on_subset(evidence: dict[str, Any] | None, subset_part: str, part: str, key: str) -> str | None:
    """``part``'s bits (a part over every evaluation image) on the images of the subset part ``subset_part``, in
    its order; ``None`` unless both are finished."""
    keep, bits = part_indices(evidence, subset_part), part_vector(evidence, part, key)
    return None if keep is None or bits is None else "".join(bits[i] for i in keep)


def part_indices(evidence: dict[str, Any] | None, part: str) -> list[int] | None:
    """Which of the fixed test images a subset part (the adaptive attacks) scored, in its order."""
    chunks = _complete_chunks(evidence, part)
    if chunks is None or any("indices" not in c for c in chunks):
        return None
    return [i for c in chunks for i in c["indices"]]


def selected_lams(evidence: dict[str, Any] | None) -> dict[str, Any] | None:
    """The lam chosen on held-out training images, ``{"pl": {"lam": ...}, "ol": {"lam": ...}}``, or ``None``."""
    return (evidence or {}).get("parts", {}).get("lam_selection", {}).get("result")


def bits_to_bool(bits: str) -> Tensor:
    """``"101"`` -> ``tensor([True, False, True])``."""
    return torch.tensor([b == "1" for b in bits], dtype=torch.bool)


def clean_confidences(evidence: dict[str, Any] | None) -> tuple[Tensor, Tensor] | None:
    """``(confidence, correct)`` of the plain model on the clean images, or ``None``."""
    bits = part_vector(evidence, "clean", "none")
    if bits is None:
        return None
    chunks = evidence["parts"]["clean"]["chunks"]  # type: ignore[index]
    conf = [c for i in range(len(chunks)) for c in chunks[str(i)]["confidence"]]
    return torch.tensor(conf, dtype=torch.float64), bits_to_bool(bits)


def _calibration_test(evidence: dict[str, Any] | None) -> dict[str, Any] | None:
    result = (evidence or {}).get("parts", {}).get("calibration", {}).get("result")
    if result is None:
        return None
    test: dict[str, Any] = result["test"]
    if len(test["correct"]) != test["n"]:
        raise VarMixupError(f"the calibration part must store n = {test['n']} correct bits, got "
                            f"{len(test['correct'])}; rerun the calibration part")
    return test


def calibration_correct(evidence: dict[str, Any] | None) -> Tensor | None:
    """``(10000,)`` bool, whether the model is right on each test image (test-split order), from the
    calibration part; ``None`` if it is not there."""
    test = _calibration_test(evidence)
    return None if test is None else bits_to_bool(test["correct"])


def calibration_confidences(evidence: dict[str, Any] | None, *, scaled: bool = False) -> tuple[Tensor, Tensor] | None:
    """``(confidence, correct)`` on all test images from the calibration part, or ``None`` if it is not there.

    ``scaled=False``: the raw top softmax probability; ``True``: after the part's temperature scaling.
    Both ``(10000,)`` in test-split order, so they pair across models.
    """
    test = _calibration_test(evidence)
    if test is None:
        return None
    conf = torch.tensor(test["confidence_ts" if scaled else "confidence"], dtype=torch.float64)
    if conf.numel() != test["n"]:
        raise VarMixupError(f"the calibration part must store n = {test['n']} confidences, got {conf.numel()}; "
                            "rerun the calibration part")
    return conf, bits_to_bool(test["correct"])


def corruption_scores(evidence: dict[str, Any] | None) -> Tensor | None:
    """Per image, the fraction of its corrupted versions (11 corruptions x 3 severities) classified right."""
    entry = (evidence or {}).get("parts", {}).get("corruptions")
    if not entry or "n" not in entry or len(entry["chunks"]) != entry["n"]:
        return None
    rows = [bits_to_bool(c["none"]).double() for c in entry["chunks"].values()]
    return torch.stack(rows).mean(0)


def attack_precision(evidence: dict[str, Any] | None, part: str) -> str:
    """The precision an attacker part's attacker ran in: the part's own, else the file's (fp32 before both)."""
    entry = (evidence or {}).get("parts", {}).get(part) or {}
    return entry.get("attack_precision") or ((evidence or {}).get("config") or {}).get("attack_precision", "fp32")


def part_progress(evidence: dict[str, Any] | None, part: str) -> tuple[int, bool] | None:
    """``(items scored, finished)`` of a part (images, or corruption sets), or ``None`` if it never ran."""
    entry = (evidence or {}).get("parts", {}).get(part)
    if not entry or not entry.get("chunks"):
        return None
    done = sum(c["range"][1] - c["range"][0] for c in entry["chunks"].values())
    return done, "n" in entry and done == entry["n"]
