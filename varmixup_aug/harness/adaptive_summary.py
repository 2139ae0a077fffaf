"""The tables of the adaptive evaluation (:mod:`.evidence_adaptive`) for docs/reproduction.md, from the JSON.

One training seed's runs (``root/seed<k>/<method>/evidence.json``): the EOT-PGD sweep, its plateau beside the
oblivious PGD-10 on the same images, APGD-CE then DLR with EOT, the binarization test and transfer from the ERM
model; and the check that an attacker in bf16 is as strong as in fp32 (``<method>/attack-precision/``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .evidence_results import (attack_precision, bits_to_bool, load_runs, part_progress, part_vector,
                               part_vector_on_subset, split_binarization_part)
from .markdown import accuracy_cell, render_table
from .significance import mcnemar_exact

__all__ = ["PLATEAU", "adaptive_tables", "attack_precision_table"]

PLATEAU = (200, 15)  # (steps, EOT draws per step): the sweep's strongest setting, the reported figure
_SWEEP_KEY = re.compile(r"pgd(?P<steps>\d+)-eot(?P<eot>\d+)-r(?P<restarts>\d+):mi_ol@paper")
_EPS = ("2/255", "8/255")


def _table(head: list[str], rows: list[list[str]]) -> str:
    """The table, or a line saying that no run has the part yet."""
    return render_table(head, rows) if rows else "Not run yet."


def _sweep_settings(evidence: dict[str, Any] | None, eps: str) -> list[tuple[str, re.Match[str]]]:
    """The MI-OL result keys of the sweep at ``eps`` with their parsed (steps, eot, restarts)."""
    first = (evidence or {}).get("parts", {}).get(f"eot_sweep:{eps}", {}).get("chunks", {}).get("0", {})
    return [(key, match) for key in first if (match := _SWEEP_KEY.fullmatch(key))]


def _sweep_grid(evidence: dict[str, Any] | None, eps: str) -> dict[tuple[int, int], str]:
    """``{(steps, eot): MI-OL bits}`` of a finished sweep at ``eps`` (``{}`` when it is not there)."""
    grid = {}
    for key, match in _sweep_settings(evidence, eps):
        bits = part_vector(evidence, f"eot_sweep:{eps}", key)
        if bits is not None:
            grid[int(match["steps"]), int(match["eot"])] = bits
    return grid


def _restarts(evidence: dict[str, Any] | None, eps: str) -> str:
    found = {match["restarts"] for _, match in _sweep_settings(evidence, eps)}
    return ", ".join(sorted(found)) or "-"


def _seconds_per_image(evidence: dict[str, Any] | None, part: str) -> str:
    """The part's measured time per image: its chunks' seconds over its images (whatever else ran beside)."""
    progress = part_progress(evidence, part)
    if evidence is None or not progress or not progress[0]:
        return "-"
    seconds = sum(c.get("seconds", 0.0) for c in evidence["parts"][part]["chunks"].values())
    return f"{seconds / progress[0]:.1f}"


def _sweep_table(runs: dict[str, dict[str, Any]], eps: str) -> str:
    grids = {m: _sweep_grid(r["evidence"], eps) for m, r in runs.items()}
    eots = sorted({e for g in grids.values() for _, e in g})
    rows = []
    for method, grid in grids.items():
        n = str(len(next(iter(grid.values())))) if grid else "-"
        for steps in sorted({s for s, _ in grid}):
            rows.append([method, n, _restarts(runs[method]["evidence"], eps), str(steps),
                         *[accuracy_cell(grid.get((steps, e))) for e in eots]])
    return _table(["method", "n", "restarts", "steps", *[f"MI-OL, EOT {e}" for e in eots]], rows)


def _difference(a: str | None, b: str | None) -> tuple[str, int | None]:
    """``a - b`` in points with McNemar's p, and the net count of images it changed."""
    if a is None or b is None:
        return "-", None
    r = mcnemar_exact(bits_to_bool(a), bits_to_bool(b))
    net = a.count("1") - b.count("1")
    return f"{100 * net / len(a):+.1f} (p {r['p_value']:.2f})", net


def _plateau_row(method: str, evidence: dict[str, Any] | None, eps: str) -> list[str] | None:
    grid = _sweep_grid(evidence, eps)
    if not grid:
        return None
    steps, eot = PLATEAU
    top = grid.get(PLATEAU)
    fewer_steps = max((s for s, e in grid if e == eot and s < steps), default=None)
    fewer_eot = max((e for s, e in grid if s == steps and e < eot), default=None)
    d_steps, net_steps = _difference(top, grid.get((fewer_steps, eot)) if fewer_steps else None)
    d_eot, net_eot = _difference(top, grid.get((steps, fewer_eot)) if fewer_eot else None)
    nets = [v for v in (net_steps, net_eot) if v is not None]
    plateau = "-" if top is None or len(nets) < 2 else ("yes" if all(abs(v) <= 1 for v in nets) else "no")
    part = f"eot_sweep:{eps}"
    return [method, eps, str(len(next(iter(grid.values())))),
            accuracy_cell(part_vector_on_subset(evidence, part, f"oblivious:{eps}", "none")),
            accuracy_cell(part_vector_on_subset(evidence, part, f"oblivious:{eps}", "mi_ol@paper")),
            accuracy_cell(top), d_steps, d_eot, plateau, attack_precision(evidence, part),
            _seconds_per_image(evidence, part)]


def _plateau_table(runs: dict[str, dict[str, Any]]) -> str:
    steps, eot = PLATEAU
    rows = [row for m, r in runs.items() for eps in _EPS if (row := _plateau_row(m, r["evidence"], eps))]
    return _table(["method", "eps", "n", "no defence, PGD-10 (oblivious)", "MI-OL, PGD-10 (oblivious)",
                         f"MI-OL, EOT-PGD {steps} steps, EOT {eot}", f"{steps} steps - fewer (EOT {eot})",
                         f"EOT {eot} - fewer ({steps} steps)", "plateau (each within one image)", "attacker",
                   "sweep s per image"], rows)


def _apgd_table(runs: dict[str, dict[str, Any]]) -> str:
    rows = []
    for method, run in runs.items():
        ev = run["evidence"]
        part = next((k for k in (ev or {}).get("parts", {}) if k.startswith("apgd:")), None)
        bits = part_vector(ev, part, "mi_ol@paper") if part else None
        if part is None or bits is None:
            continue
        eps = part.split(":")[1]
        attack = part_vector(ev, part, "attack") or ""
        oblivious = part_vector_on_subset(ev, part, f"oblivious:{eps}", "mi_ol@paper")
        rows.append([method, eps, str(len(bits)), accuracy_cell(part_vector(ev, part, "none")),
                     accuracy_cell(oblivious), accuracy_cell(bits),
                     str(attack.count("d")), attack_precision(ev, part), _seconds_per_image(ev, part)])
    return _table(["method", "eps", "n", "no defence, on the APGD adversarials", "MI-OL, PGD-10 (oblivious)",
                   "MI-OL, APGD-CE then DLR with EOT", "images whose kept iterate is DLR's", "attacker",
                   "s per image"], rows)


_BINARIZATION_LABELS = {"eot_pgd": "EOT-PGD", "apgd": "APGD-CE"}


def _binarization_row(method: str, ev: dict[str, Any], part: str, threshold: float) -> list[str] | None:
    """One attack's test (part ``binarization:<attack>:<eps>[:decoys<k>]``): how many valid tasks it won."""
    valid, success, hits = (part_vector(ev, part, key) for key in ("valid", "success", "random_hit"))
    if valid is None or success is None or hits is None:
        return None
    attack, eps, decoys = split_binarization_part(part)
    cfg = ev["config"]
    label = f"{_BINARIZATION_LABELS[attack]}, {cfg['binarization_steps']} steps, EOT {cfg['binarization_eot']}"
    n_valid = valid.count("1")
    won = sum(v == s == "1" for v, s in zip(valid, success, strict=True))
    rate = won / n_valid if n_valid else None
    verdict = "-" if rate is None else ("passed" if rate >= threshold else "failed")
    return [method, label, eps, str(decoys), str(len(valid)), str(n_valid),
            str(sum(v == h == "1" for v, h in zip(valid, hits, strict=True))),
            "-" if rate is None else f"{won} / {n_valid} ({100 * rate:.0f}%)", f"**{verdict}**",
            attack_precision(ev, part), _seconds_per_image(ev, part)]


def _binarization_table(runs: dict[str, dict[str, Any]], threshold: float = 0.95) -> str:
    rows = [row for method, run in runs.items() if (ev := run["evidence"])
            for part in ev.get("parts", {}) if part.startswith("binarization:")
            if (row := _binarization_row(method, ev, part, threshold))]
    return _table(["method", "attack under test", "eps", "decoy corners (inner class)", "n", "valid tasks",
                   "valid, a random corner already won",
                   "attack succeeded (valid tasks)", f"verdict (>= {100 * threshold:.0f}%)", "attacker", "s per image"],
                  rows)


def _transfer_table(runs: dict[str, dict[str, Any]], eps: str) -> str:
    rows = []
    for method, run in runs.items():
        ev = run["evidence"]
        part = f"transfer:{eps}"
        bits = part_vector(ev, part, "none")
        if bits is None:
            continue
        keys = ("mi_ol@paper", "mi_pl@paper", "mi_ol@selected")
        cells = [accuracy_cell(part_vector(ev, part, k)) for k in keys]
        rows.append([method, str(len(bits)), accuracy_cell(bits), *cells])
    return _table(["method", "n", "no defence", "MI-OL (lam 0.5)", "MI-PL (lam 0.5)", "MI-OL (chosen lam)"],
                        rows)


def attack_precision_table(folder: str | Path, *, eps: str = "2/255") -> str:
    """The same EOT-PGD sweep with the attacker in fp32 and in bf16 (``folder/fp32.json``, ``folder/bf16.json``,
    the same seeds and images), compared per image at each step count; the judge is fp32 in both."""
    found = {p: Path(folder) / f"{p}.json" for p in ("fp32", "bf16")}
    evidence = {p: json.loads(f.read_text()) if f.is_file() else None for p, f in found.items()}
    grids = {p: _sweep_grid(ev, eps) for p, ev in evidence.items()}
    seconds = " / ".join(_seconds_per_image(evidence[p], f"eot_sweep:{eps}") for p in ("fp32", "bf16"))
    rows = []
    for key in sorted(set(grids["fp32"]) & set(grids["bf16"])):
        a, b = grids["fp32"][key], grids["bf16"][key]
        if len(a) != len(b):
            continue
        r = mcnemar_exact(bits_to_bool(a), bits_to_bool(b))
        rows.append([f"{key[0]} steps, EOT {key[1]}", str(len(a)), accuracy_cell(a), accuracy_cell(b),
                     f"{r['b_only']} / {r['a_only']}", f"{r['p_value']:.2f}"])
    table = _table([f"EOT-PGD through MI-OL, {eps}", "n", "MI-OL, fp32 attacker", "MI-OL, bf16 attacker",
                    "images only the fp32 / only the bf16 attacker fooled", "McNemar p"], rows)
    return f"{table}\n\nWhole sweep, s per image, fp32 / bf16 attacker: {seconds}" if rows else table


def adaptive_tables(root: str | Path, *, seed: int = 0, prefix: str = "papers") -> dict[str, str]:
    """Markdown tables of seed ``seed``'s runs under ``root``, keyed ``<prefix> eot sweep <eps>``,
    ``<prefix> eot plateau``, ``<prefix> apgd``, ``<prefix> binarization``, ``<prefix> transfer <eps>`` and
    ``<prefix> attack precision`` (the mixup run's check)."""
    folder = Path(root) / f"seed{seed}"
    runs = load_runs(folder)
    tables = {f"{prefix} eot sweep {eps}": _sweep_table(runs, eps) for eps in _EPS}
    tables[f"{prefix} eot plateau"] = _plateau_table(runs)
    tables[f"{prefix} apgd"] = _apgd_table(runs)
    tables[f"{prefix} binarization"] = _binarization_table(runs)
    for eps in ("8/255", "2/255"):
        tables[f"{prefix} transfer {eps}"] = _transfer_table(runs, eps)
    tables[f"{prefix} attack precision"] = attack_precision_table(folder / "mixup" / "attack-precision")
    return tables
