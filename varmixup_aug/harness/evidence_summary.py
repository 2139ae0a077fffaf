"""Tables of the reproduction, computed from the committed training reports and evidence JSON files.

Every number in ``docs/reproduction.md`` and README's summary comes from here: accuracies with
Wilson 95% intervals, ECE with a bootstrap interval, and paired tests between methods on the same
images, for one run per method (:func:`reproduction_tables`: the airbench recipe with label smoothing
0.2, an ablation); and means over training seeds with the claims judged across seeds
(:func:`papers_tables`: the papers' regime); and ERM trained in bf16 against fp32
(:func:`precision_tables`). Parts that are not complete for a method show ``-``, so a partial run
is never reported as a finished one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from varmixup_aug import VarMixupError
from .calibration import bootstrap_ece, expected_calibration_error, reliability_diagram
from .claims import (CLAIMS, FAST_CLAIMS, Measure, claims_table, evaluate_claims, evaluate_claims_across_seeds,
                     measure_by_seed)
from .evidence import PAPER_LAM
from .evidence_results import (bits_to_bool, calibration_correct, clean_confidences, corruption_scores, load_runs,
                               load_seed_runs, part_progress, part_vector, part_vector_on_subset, selected_lams)
from .fast_training import FAST_METHODS
from .markdown import accuracy_cell as _acc
from .markdown import render_table as _table
from .significance import bootstrap_indices, mcnemar_exact, paired_bootstrap_interval, percentile_interval

__all__ = ["PUBLISHED_MI_CIFAR10", "REFERENCE_POOL_FILE", "SINGLE_STEP_FILE", "papers_tables", "precision_tables",
           "reliability_figures", "reproduction_tables", "single_step_tables"]

# Pang et al. (ICLR 2020), Table 2 (CIFAR-10, ResNet-50, untargeted PGD-10 at 8/255, oblivious), as the issue quotes it.
PUBLISHED_MI_CIFAR10 = {
    "mixup": (93.8, 3.6),
    "mixup + MI-OL": (83.9, 26.1),
    "mixup + MI-combined": (82.9, 33.7),
    "ERM + MI-OL": (81.6, 7.4),
}


def _ece_with_interval(conf: torch.Tensor, correct: torch.Tensor) -> str:
    ece = expected_calibration_error(conf, correct, n_bins=15)
    draws = bootstrap_ece(conf, correct, bootstrap_indices(conf.numel(), samples=1000), n_bins=15)
    lo, hi = percentile_interval(draws)
    return f"{100 * ece:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def _mean_with_interval(scores: torch.Tensor) -> str:
    """Mean of per-image scores with a bootstrap 95% interval (resampling images)."""
    draws = bootstrap_indices(scores.numel(), samples=1000)
    lo, hi = percentile_interval(scores.double()[draws].mean(1))
    return f"{100 * float(scores.mean()):.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def _training_table(runs: dict[str, dict[str, Any]]) -> str:
    rows = []
    for method, run in runs.items():
        t = run["train"]
        rows.append([method, f"{t['epochs_completed']:g}", f"{t['wall_time_s'] / 60:.0f}",
                     str(t.get("torch_threads", "-")), f"{100 * t['test_accuracy']:.2f}"])
    return _table(["method", "epochs", "training time (min)", "threads", "clean accuracy, 10,000 test images"], rows)


def _clean_table(runs: dict[str, dict[str, Any]]) -> str:
    rows = []
    for method, run in runs.items():
        ev = run["evidence"]
        cc = clean_confidences(ev) if ev else None
        corr = corruption_scores(ev)
        lam = selected_lams(ev)
        rows.append([method, _acc(part_vector(ev, "clean", "none")),
                     _ece_with_interval(*cc) if cc else "-",
                     "-" if corr is None else _mean_with_interval(corr),
                     _acc(part_vector(ev, "clean", "mi_ol@paper")), _acc(part_vector(ev, "clean", "mi_combined@paper")),
                     "-" if lam is None else f"{lam['pl']['lam']:g} / {lam['ol']['lam']:g}"])
    return _table(["method", "clean accuracy [95% CI]", "ECE % (15 bins) [95% CI]",
                   "mean corruption accuracy (33 sets) [95% CI]",
                   f"MI-OL clean (lam {PAPER_LAM:g})", f"MI-combined clean (lam {PAPER_LAM:g})",
                   "chosen lam PL / OL"], rows)


def _oblivious_table(runs: dict[str, dict[str, Any]], eps: str, lam_set: str) -> str:
    rows = []
    for method, run in runs.items():
        ev = run["evidence"]
        part = f"oblivious:{eps}"
        rows.append([method, _acc(part_vector(ev, part, "none"))]
                    + [_acc(part_vector(ev, part, f"mi_{m}@{lam_set}")) for m in ("pl", "ol", "combined")])
    return _table(["method", "no defence", "MI-PL (N=10)", "MI-OL (N=30)", "MI-combined"], rows)


# The MI reference code's pool (the test split, training augmentation, 10,000 images), a second evidence file
REFERENCE_POOL_FILE = "evidence-reference-pool.json"


def _paper_table(runs: dict[str, dict[str, Any]], reference: dict[str, dict[str, Any]] | None = None) -> str:
    """Ours beside Pang et al.'s Table 2; with ``reference`` (evidence per method, the reference's pool) also
    those two columns."""
    def ours(evidences: dict[str, Any], method: str, key: str) -> list[str]:
        ev = evidences.get(method)
        return [_acc(part_vector(ev, "clean", key)), _acc(part_vector(ev, "oblivious:8/255", key))]

    which = {"mixup": ("mixup", "none"), "mixup + MI-OL": ("mixup", "mi_ol@paper"),
             "mixup + MI-combined": ("mixup", "mi_combined@paper"), "ERM + MI-OL": ("erm", "mi_ol@paper")}
    sources = [{m: r["evidence"] for m, r in runs.items()}] + ([reference] if reference is not None else [])
    rows = [[name, f"{clean:g}", f"{robust:g}", *[c for ev in sources for c in ours(ev, *which[name])]]
            for name, (clean, robust) in PUBLISHED_MI_CIFAR10.items()]
    head = ["model", "paper clean", "paper robust", "ours clean [95% CI]", "ours robust [95% CI]"]
    if reference is not None:
        head += ["ours, reference pool: clean", "ours, reference pool: robust"]
    return _table(head, rows)


def _reference_pool_evidence(folder: Path) -> dict[str, dict[str, Any]]:
    """``{method: evidence}`` of the runs under ``folder`` that have a reference-pool evidence file."""
    return {m: json.loads(p.read_text()) for m in FAST_METHODS if (p := folder / m / REFERENCE_POOL_FILE).is_file()}


def _adaptive_table(runs: dict[str, dict[str, Any]], part: str, attack: str) -> str:
    """An adaptive attack's subset part beside the oblivious PGD-10 of the same images and eps."""
    eps = part.split(":")[1]
    rows = []
    for method, run in runs.items():
        ev = run["evidence"]
        adaptive = part_vector(ev, part, "mi_ol@paper")
        oblivious = part_vector_on_subset(ev, part, f"oblivious:{eps}", "mi_ol@paper")
        plain = part_vector_on_subset(ev, part, f"oblivious:{eps}", "none")
        rows.append([method, str(len(adaptive)) if adaptive else "-", _acc(plain), _acc(oblivious), _acc(adaptive)])
    return _table(["method", "n", "no defence, PGD-10 (oblivious)", "MI-OL, PGD-10 (oblivious)",
                   f"MI-OL, {attack} through MI-OL (adaptive)"], rows)


def _progress(evidence: dict[str, Any] | None, part: str) -> str:
    progress = part_progress(evidence, part)
    if progress is None:
        return "-"
    done, finished = progress
    return str(done) if finished else f"{done} (partial)"


def _status_table(runs: dict[str, dict[str, Any]]) -> str:
    """Which parts each method has: the count of scored images (corruption sets), ``-`` when not run."""
    parts = ["corruptions", "oblivious:2/255", "oblivious:4/255", "oblivious:8/255", "published:8/255",
             "published:2/255", "autoattack:8/255"]
    rows = []
    for method, run in runs.items():
        ev = run["evidence"]
        lam = "-" if selected_lams(ev) is None else "done"
        rows.append([method, lam, _progress(ev, "clean"), *[_progress(ev, p) for p in parts]])
    return _table(["method", "lam selection", "clean", "corruption sets", "oblivious 2/255", "oblivious 4/255",
                   "oblivious 8/255", "published 8/255", "published 2/255", "AutoAttack-rand 8/255"], rows)


def _pairwise_table(runs: dict[str, dict[str, Any]]) -> str:
    rows = []
    measures = [("clean", "clean", "none"), ("PGD-10 8/255, MI-OL", "oblivious:8/255", "mi_ol@paper")]
    for label, part, key in measures:
        vectors = {m: part_vector(r["evidence"], part, key) for m, r in runs.items()}
        names = [m for m, v in vectors.items() if v is not None]
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                va, vb = bits_to_bool(vectors[a]), bits_to_bool(vectors[b])  # type: ignore[arg-type]
                test = mcnemar_exact(va, vb)
                lo, hi = paired_bootstrap_interval(va, vb)
                diff = float(va.double().mean() - vb.double().mean())
                rows.append([label, f"{a} - {b}", f"{100 * diff:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]",
                             f"{test['a_only']} / {test['b_only']}", f"{test['p_value']:.3g}"])
    return _table(["measure", "pair", "difference [95% CI]", "only A / only B right", "McNemar p"], rows)


def reproduction_tables(root: str | Path) -> dict[str, str]:
    """Markdown tables of one run per method, keyed by name: ``training``, ``status``, ``clean``,
    ``oblivious <eps> lam <set>``, ``paper``, ``published <eps>``, ``autoattack 8/255``, ``pairwise``,
    ``conclusions`` (the verdict per claim of :data:`~.claims.FAST_CLAIMS`, :mod:`.claims`) and
    ``verdicts`` (its short form)."""
    runs = load_runs(root)
    tables = {"training": _training_table(runs), "status": _status_table(runs), "clean": _clean_table(runs),
              "paper": _paper_table(runs)}
    for eps in ("2/255", "4/255", "8/255"):
        for lam_set in ("paper", "selected"):
            tables[f"oblivious {eps} lam {lam_set}"] = _oblivious_table(runs, eps, lam_set)
    for eps in ("8/255", "2/255"):
        tables[f"published {eps}"] = _adaptive_table(runs, f"published:{eps}", "PGD-50")
    tables["autoattack 8/255"] = _adaptive_table(runs, "autoattack:8/255", "AutoAttack-rand")
    tables["pairwise"] = _pairwise_table(runs)
    results = evaluate_claims(runs, FAST_CLAIMS)
    tables["conclusions"] = claims_table(runs, FAST_CLAIMS, results=results)
    tables["verdicts"] = claims_table(runs, FAST_CLAIMS, brief=True, results=results)
    return tables


def _mean_sd(values: list[float], scale: float = 100.0) -> str:
    """``mean ± sd (k)`` of per-seed values (sample sd), ``mean (1)`` for one seed, ``-`` for none."""
    if not values:
        return "-"
    v = torch.tensor(values, dtype=torch.float64) * scale
    sd = f" ± {float(v.std()):.1f}" if len(values) > 1 else ""
    return f"{float(v.mean()):.1f}{sd} ({len(values)})"


def _measure_cell(seed_runs: dict[int, dict[str, dict[str, Any]]], measure: Measure) -> str:
    source, values = measure_by_seed(seed_runs, measure)
    cell = _mean_sd(list(values.values()))
    return f"{cell} on 1,000" if source == "clean" else cell


_HEADLINE = [  # (column, measure of a method)
    ("raw ECE %", lambda m: Measure(m, "ece")),
    ("ECE % after temperature scaling", lambda m: Measure(m, "ece_ts")),
    ("mean corruption accuracy", lambda m: Measure(m, "corruption")),
    ("PGD-10 2/255", lambda m: Measure(m, part="oblivious:2/255")),
    ("PGD-10 8/255", lambda m: Measure(m, part="oblivious:8/255")),
    (f"MI-OL (lam {PAPER_LAM:g}), PGD-10 8/255", lambda m: Measure(m, part="oblivious:8/255", key="mi_ol@paper")),
]


def _headline_table(seed_runs: dict[int, dict[str, dict[str, Any]]]) -> str:
    """One row per method: mean ± sd over seeds (and how many) of each headline number, in percent, and the
    precisions its runs trained in."""
    rows = []
    for method in FAST_METHODS:
        reports = [runs[method]["train"] for runs in seed_runs.values() if method in runs]
        precisions = ", ".join(sorted({r.get("precision", "fp32") for r in reports})) or "-"
        rows.append([method, str(len(reports)), _mean_sd([r["test_accuracy"] for r in reports]),
                     *[_measure_cell(seed_runs, measure(method)) for _, measure in _HEADLINE], precisions])
    return _table(["method", "seeds", "clean accuracy, 10,000 test images", *[c for c, _ in _HEADLINE], "precision"],
                  rows)


def papers_tables(root: str | Path, *, prefix: str = "papers") -> dict[str, str]:
    """Markdown tables over training seeds (``root/seed<k>/<method>``), keyed ``<prefix> headline`` (mean ± sd
    (seeds) per method: clean accuracy on all test images, raw ECE, ECE after temperature scaling, mean
    corruption accuracy, PGD-10 at 2/255 and 8/255, MI-OL under PGD-10 at 8/255), ``<prefix> claims``
    (:data:`~.claims.CLAIMS` judged across seeds), ``<prefix> verdicts`` (its short form) and ``<prefix> paper
    seed 0`` (seed 0 beside the MI paper's Table 2, also with the reference's pool where
    :data:`REFERENCE_POOL_FILE` is there). Raw ECE marked ``on 1,000`` comes from the clean part (no
    calibration part yet)."""
    seed_runs = load_seed_runs(root)
    results = evaluate_claims_across_seeds(seed_runs, CLAIMS)
    seed0 = Path(root) / "seed0"
    return {f"{prefix} headline": _headline_table(seed_runs),
            f"{prefix} claims": claims_table(seed_runs, CLAIMS, across_seeds=True, results=results),
            f"{prefix} verdicts": claims_table(seed_runs, CLAIMS, across_seeds=True, brief=True, results=results),
            f"{prefix} paper seed 0": _paper_table(seed_runs.get(0, {}), _reference_pool_evidence(seed0))}


def _accuracy_difference(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """``a - b`` in points from the training reports, and McNemar on the test images when both have them."""
    diff = 100 * (a["train"]["test_accuracy"] - b["train"]["test_accuracy"])
    correct_a, correct_b = calibration_correct(a["evidence"]), calibration_correct(b["evidence"])
    if correct_a is None or correct_b is None or correct_a.numel() != correct_b.numel():
        return [f"{diff:+.2f}", "-", "-"]
    r = mcnemar_exact(correct_a, correct_b)
    return [f"{diff:+.2f}", f"{r['a_only']} / {r['b_only']}", f"{r['p_value']:.3f}"]


def _runs_by_precision(roots: list[str | Path], method: str) -> dict[tuple[str, int], dict[str, Any]]:
    """``method``'s runs under every ``root/seed<k>/``, keyed by (precision, seed); a key found twice is an error."""
    runs: dict[tuple[str, int], dict[str, Any]] = {}
    folders: dict[tuple[str, int], Path] = {}
    for root in roots:
        for seed, by_method in load_seed_runs(root).items():
            if method not in by_method:
                continue
            key = (by_method[method]["train"].get("precision", "fp32"), seed)
            folder = Path(root) / f"seed{seed}" / method
            if key in folders:
                raise VarMixupError(f"two {key[0]} runs of {method!r} with seed {seed}: {folders[key]} and {folder}; "
                                    "keep one of them, or pass only one of their roots")
            runs[key], folders[key] = by_method[method], folder
    return runs


def precision_tables(roots: list[str | Path], *, method: str = "erm") -> dict[str, str]:
    """The bf16 check: ``method``'s runs under every ``root/seed<k>/`` by precision and seed.

    ``papers precision runs``: one row per run (precision, seed, the CPU's bf16 units, accuracy on all
    test images, seconds per step). ``papers precision check``: bf16 - fp32 at each seed that has both,
    and fp32 seed against fp32 seed, with McNemar on the test images where the evidence's calibration part
    is there for both. bf16 passes when no same-seed bf16 - fp32 difference is larger in size than the
    largest fp32 seed-to-seed difference."""
    runs = _runs_by_precision(roots, method)
    rows = []
    for (precision, seed), run in sorted(runs.items()):
        t = run["train"]
        rows.append([precision, str(seed), ", ".join(t.get("cpu_bf16_units") or ["none"]),
                     f"{100 * t['test_accuracy']:.2f}", f"{t['wall_time_s'] / t['steps']:.2f}"])
    head = ["precision", "seed", "CPU bf16 units", "clean accuracy, 10,000 test images", "s per step (wall)"]
    fp32_seeds = sorted(seed for precision, seed in runs if precision == "fp32")
    same = [(f"bf16 - fp32, seed {s}", runs["bf16", s], runs["fp32", s]) for s in fp32_seeds if ("bf16", s) in runs]
    spread = [(f"fp32 seed {j} - fp32 seed {i}", runs["fp32", j], runs["fp32", i])
              for n, i in enumerate(fp32_seeds) for j in fp32_seeds[n + 1:]]
    checks = [[name, *_accuracy_difference(a, b)] for name, a, b in same + spread]

    def largest(pairs: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> float:
        return max(abs(a["train"]["test_accuracy"] - b["train"]["test_accuracy"]) for _, a, b in pairs)

    verdict = "not run yet" if not (same and spread) else (
        "**passed**" if largest(same) <= largest(spread) else "**failed**")
    table = _table(["comparison", "accuracy difference (points)", "images only A / only B got right", "McNemar p"],
                   checks) if checks else ""
    line = f"bf16 within the fp32 seed-to-seed spread: {verdict}"
    return {"papers precision runs": _table(head, rows),
            "papers precision check": f"{table}\n\n{line}" if table else line}


SINGLE_STEP_FILE = "single_step_check.json"  # written by examples/single_step_check.py beside an adv-train run


def _single_step_row(root: Path, seed: int, run: dict[str, Any]) -> list[str] | None:
    check_file = root / f"seed{seed}" / "adv-train" / SINGLE_STEP_FILE
    if not check_file.is_file():
        return None
    check = json.loads(check_file.read_text())
    by_eps = {row["eps"]: row for row in check["rows"]}
    if set(by_eps) != {2.0, 8.0}:
        raise VarMixupError(f"{check_file} must hold rows at eps 2 and 8 (/255), got {sorted(by_eps)}; rerun "
                            "examples/single_step_check.py with its default --eps")
    # adv_attack was added to the training arguments after FGSM-RS, the only step before it
    attack = run["train"]["args"].get("adv_attack", "fgsm-rs")
    fgsm, pgd = by_eps[8.0]["fgsm_random_start"], by_eps[8.0]["pgd10"]
    verdict = "**overfit**" if pgd < fgsm / 2 else "no"
    return [root.name, str(seed), attack, str(check["n"]), f"{100 * check['clean']:.1f}",
            *(f"{100 * by_eps[e][k]:.1f}" for e in (2.0, 8.0) for k in ("fgsm_random_start", "pgd10")), verdict]


def single_step_tables(roots: list[str | Path]) -> dict[str, str]:
    """``papers single-step check``: each ``root/seed<k>/adv-train`` with a :data:`SINGLE_STEP_FILE`, its
    accuracy under FGSM from a random start against PGD-10 at 2/255 and 8/255. A run counts as overfit
    (Wong et al. 2020's catastrophic overfitting) when PGD-10 at 8/255 keeps under half of what FGSM-RS
    keeps: it resists the single step and little else."""
    rows = [row for root in map(Path, roots) for seed, by_method in load_seed_runs(root).items()
            if "adv-train" in by_method and (row := _single_step_row(root, seed, by_method["adv-train"]))]
    head = ["results", "seed", "training attack", "n", "clean", "FGSM-RS 2/255", "PGD-10 2/255", "FGSM-RS 8/255",
            "PGD-10 8/255", "catastrophic overfitting (PGD-10 < FGSM-RS / 2 at 8/255)"]
    return {"papers single-step check": _table(head, rows)}


def reliability_figures(root: str | Path, out_dir: str | Path) -> list[Path]:
    """One reliability diagram per method with finished clean results: ``out_dir/reliability-<method>.png``."""
    written = []
    for method, run in load_runs(root).items():
        cc = clean_confidences(run["evidence"])
        if cc is not None:
            written.append(reliability_diagram(cc[0], cc[1].double(), Path(out_dir) / f"reliability-{method}.png",
                                               title=f"{method}, {cc[0].numel()} test images"))
    return written
