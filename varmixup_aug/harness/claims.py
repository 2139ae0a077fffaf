"""The papers' claims, each tested on the committed per-image results, from one training run or across seeds.

A claim says that measure ``a`` is better (higher accuracy, lower ECE) than measure ``b``, both
scored on the same test images. The verdict rule is the same for one run (:func:`evaluate_claims`)
and across training seeds (:func:`evaluate_claims_across_seeds`):

1. every claim gets a two-sided p-value from a paired test on the images: the exact McNemar test for
   accuracies; for ECE and the mean corruption accuracy (not per-image counts), the paired swap test
   (:func:`~varmixup_aug.harness.significance.paired_swap_test`, 10,000 random swaps of A and B within
   each image). Across seeds the test is pooled: McNemar on the discordant images summed over seeds;
   the swap test swaps within each (seed, image) pair, its statistic the mean over seeds of the
   per-seed difference;
2. the p-values of all claims of one table are Holm-Bonferroni adjusted together;
3. **confirmed**: adjusted p < :data:`~varmixup_aug.harness.significance.ALPHA` (0.05) and the difference
   on the claimed side; **not confirmed**: adjusted p < 0.05 on the other side; **no power**: the test
   could not reach p < 0.05 even with the most extreme outcome (at most 5 discordant images, so
   ``mcnemar_min_p >= 0.05``; for the swap test, images where A and B differ); **inconclusive**
   otherwise. A claim whose results are not complete yet is **not run yet**.

Intervals are descriptions only: the paired bootstrap interval of ``a - b`` for one run, the t-interval
of the per-seed differences across seeds. Raw ECE uses the calibration part's confidences on all test
images when both methods have it (in every seed used), the clean part's 1,000 otherwise; ECE after
temperature scaling needs the calibration part.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from varmixup_aug import VarMixupError
from .calibration import bootstrap_ece
from .evidence_results import (bits_to_bool, calibration_confidences, clean_confidences, corruption_scores,
                               part_indices, part_vector)
from .significance import (ALPHA, bootstrap_index_blocks, holm_adjust, mcnemar_exact, mcnemar_min_p,
                           paired_bootstrap_mean_interval, paired_swap_test, percentile_interval, t_interval)

__all__ = ["CLAIMS", "FAST_CLAIMS", "Claim", "Measure", "claims_table", "evaluate_claim",
           "evaluate_claim_across_seeds", "evaluate_claims", "evaluate_claims_across_seeds", "measure_by_seed"]

KINDS = ("accuracy", "ece", "ece_ts", "corruption")
LOWER_IS_BETTER = ("ece", "ece_ts")
ECE_BINS = 15
Runs = dict[str, dict[str, Any]]
SeedRuns = dict[int, Runs]
Pair = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class Measure:
    """One number of one method: an accuracy (``part``/``key`` of the evidence), the ECE (raw, or after
    temperature scaling: ``ece_ts``) or the corruption mean."""

    method: str
    kind: str = "accuracy"
    part: str = "clean"
    key: str = "none"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise VarMixupError(f"kind must be one of {KINDS}, got {self.kind!r}")

    def label(self) -> str:
        if self.kind in LOWER_IS_BETTER:
            return f"{self.method} ECE" + (" after temperature scaling" if self.kind == "ece_ts" else "")
        if self.kind == "corruption":
            return f"{self.method} corruptions"
        predictor = {"none": "plain"}.get(self.key, self.key.replace("_", "-").replace("@", " lam "))
        return f"{self.method} {predictor}, {self.part}"


@dataclass(frozen=True)
class Claim:
    """``a`` is better than ``b``: higher for accuracies, lower for ECE."""

    source: str
    text: str
    a: Measure
    b: Measure

    def __post_init__(self) -> None:
        if self.a.kind != self.b.kind:
            raise VarMixupError(f"a claim compares one kind of measure, got {self.a.kind!r} and {self.b.kind!r}")


_VM = "VarMixup (Mangla et al.)"
_MI = "MI (Pang et al.)"
_ADAPTIVE = "MI under the published attack (Tramer et al.)"
_OURS = "ablation (ours)"


def _varmixup_claims(method: str, form: str) -> list[Claim]:
    return [
        Claim(_VM, f"{form} is more accurate on clean images than input mixup",
              Measure(method), Measure("mixup")),
        Claim(_VM, f"{form} is better calibrated than input mixup", Measure(method, "ece"), Measure("mixup", "ece")),
        Claim(_VM, f"{form} is better calibrated than ERM", Measure(method, "ece"), Measure("erm", "ece")),
        Claim(_VM, f"{form} is more robust to corruptions than input mixup",
              Measure(method, "corruption"), Measure("mixup", "corruption")),
        Claim(_VM, f"{form} is more robust to corruptions than ERM",
              Measure(method, "corruption"), Measure("erm", "corruption")),
        *[Claim(_VM, f"{form} is more robust to PGD-10 at {eps} than input mixup",
                Measure(method, part=f"oblivious:{eps}"), Measure("mixup", part=f"oblivious:{eps}"))
          for eps in ("2/255", "8/255")],
        Claim(_VM, f"{form} is more robust to PGD-10 at 2/255 than ERM",
              Measure(method, part="oblivious:2/255"), Measure("erm", part="oblivious:2/255")),
    ]


def _temperature_claims() -> list[Claim]:
    return [Claim(_VM, f"VarMixup is better calibrated than {name} after temperature scaling",
                  Measure("varmixup", "ece_ts"), Measure(method, "ece_ts"))
            for method, name in (("mixup", "input mixup"), ("erm", "ERM"))]


def _adversarial_training_claims() -> list[Claim]:
    """The abstract (v2): VarMixup beats adversarial training without training the model adversarially."""
    versus = "than adversarial training (N-FGSM, 8/255)"
    return [
        Claim(_VM, f"VarMixup is more accurate on clean images {versus}", Measure("varmixup"), Measure("adv-train")),
        *[Claim(_VM, f"VarMixup is more robust to PGD-10 at {eps} {versus}",
                Measure("varmixup", part=f"oblivious:{eps}"), Measure("adv-train", part=f"oblivious:{eps}"))
          for eps in ("2/255", "8/255")],
    ]


def _mi_claims() -> list[Claim]:
    at = "oblivious:8/255"
    return [
        Claim(_MI, "MI-PL raises the mixup model's accuracy under oblivious PGD-10 at 8/255",
              Measure("mixup", part=at, key="mi_pl@paper"), Measure("mixup", part=at)),
        Claim(_MI, "MI-OL raises the mixup model's accuracy under oblivious PGD-10 at 8/255",
              Measure("mixup", part=at, key="mi_ol@paper"), Measure("mixup", part=at)),
        Claim(_MI, "MI-combined raises the mixup model's accuracy under oblivious PGD-10 at 8/255",
              Measure("mixup", part=at, key="mi_combined@paper"), Measure("mixup", part=at)),
        Claim(_MI, "MI-OL at the lam chosen on held-out images raises it too (mixup, PGD-10, 8/255)",
              Measure("mixup", part=at, key="mi_ol@selected"), Measure("mixup", part=at)),
        Claim(_MI, "MI-OL helps a mixup-trained model more than an ERM-trained one (8/255)",
              Measure("mixup", part=at, key="mi_ol@paper"), Measure("erm", part=at, key="mi_ol@paper")),
        *[Claim(_ADAPTIVE, f"MI-OL stays above the undefended model under the published attack at {eps}",
                Measure("mixup", part=f"published:{eps}", key="mi_ol@paper"), Measure("mixup", part=f"oblivious:{eps}"))
          for eps in ("8/255", "2/255")],
        # AutoAttack-rand through torchattacks has no claim: its bookkeeping returns the clean image for what
        # single random passes call fooled, so its rate is not robustness (docs/reproduction.md). APGD with EOT
        # that keeps every image's own iterate takes its place.
        Claim(_ADAPTIVE, "MI-OL stays above the undefended model under APGD-CE then APGD-DLR with EOT at 8/255",
              Measure("mixup", part="apgd:8/255", key="mi_ol@paper"), Measure("mixup", part="oblivious:8/255")),
    ]


def _ablation_claims() -> list[Claim]:
    return [
        Claim(_OURS, "latent mixing adds to VAE smoothing: VarMixup is more accurate on clean images than vae-recon",
              Measure("varmixup"), Measure("vae-recon")),
        Claim(_OURS, "latent mixing adds to VAE smoothing: VarMixup is better calibrated than vae-recon",
              Measure("varmixup", "ece"), Measure("vae-recon", "ece")),
        Claim(_OURS, "latent mixing adds to VAE smoothing: VarMixup is more robust to corruptions than vae-recon",
              Measure("varmixup", "corruption"), Measure("vae-recon", "corruption")),
        Claim(_OURS, "latent mixing adds to VAE smoothing: VarMixup is more robust to PGD-10 at 2/255 than vae-recon",
              Measure("varmixup", part="oblivious:2/255"), Measure("vae-recon", part="oblivious:2/255")),
    ]


CLAIMS: tuple[Claim, ...] = (*_varmixup_claims("varmixup", "VarMixup"), *_temperature_claims(),
                             *_adversarial_training_claims(),
                             *_varmixup_claims("varmixup-residual", "VarMixup (residual form)"),
                             *_mi_claims(), *_ablation_claims())
# What the label-smoothing runs (results/cifar10-fast) can test: they have no adv-train run and no calibration part.
FAST_CLAIMS: tuple[Claim, ...] = tuple(c for c in CLAIMS if c.a.kind != "ece_ts" and c.b.method != "adv-train")


def _evidence(runs: Runs, m: Measure) -> dict[str, Any] | None:
    return runs.get(m.method, {}).get("evidence")


def _check_same_images(runs: Runs, claim: Claim) -> None:
    ia, ib = ((_evidence(runs, m) or {}).get("test_indices") for m in (claim.a, claim.b))
    if ia is not None and ib is not None and ia != ib:
        raise VarMixupError(f"{claim.a.method} and {claim.b.method} stored different test images (their evidence "
                            f"test_indices differ); rerun one's evidence with the other's evidence seed")


def _accuracy_values(runs: Runs, m: Measure, source: str) -> tuple[Tensor, list[int] | None] | None:
    """Per-image correctness (float 0/1) and, for a subset part, which of the stored images it scored."""
    evidence = _evidence(runs, m)
    bits = part_vector(evidence, m.part, m.key)
    return None if bits is None else (bits_to_bool(bits).double(), part_indices(evidence, m.part))


def _corruption_values(runs: Runs, m: Measure, source: str) -> tuple[Tensor, None] | None:
    scores = corruption_scores(_evidence(runs, m))
    return None if scores is None else (scores, None)


def _ece_values(runs: Runs, m: Measure, source: str) -> tuple[Tensor, None] | None:
    """``(N, 2)`` confidence and correctness per image, from the ``clean`` or the ``calibration`` part."""
    evidence = _evidence(runs, m)
    cc = (clean_confidences(evidence) if source == "clean"
          else calibration_confidences(evidence, scaled=m.kind == "ece_ts"))
    return None if cc is None else (torch.stack([cc[0], cc[1].double()], 1), None)


_VALUES: dict[str, Callable[[Runs, Measure, str], tuple[Tensor, list[int] | None] | None]] = {
    "accuracy": _accuracy_values, "corruption": _corruption_values, "ece": _ece_values, "ece_ts": _ece_values}
_SOURCES = {"accuracy": ("evidence",), "corruption": ("evidence",), "ece": ("calibration", "clean"),
            "ece_ts": ("calibration",)}


def _pair(runs: Runs, claim: Claim, source: str) -> Pair | None:
    """A's and B's values on the same images (a full part is restricted to a subset part's images)."""
    read = _VALUES[claim.a.kind]
    a, b = read(runs, claim.a, source), read(runs, claim.b, source)
    if a is None or b is None:
        return None
    if source != "calibration":  # the calibration part scores every test image in test-split order
        _check_same_images(runs, claim)
    (va, ia), (vb, ib) = a, b
    if ia is not None and ib is None:
        vb = vb[ia]
    elif ib is not None and ia is None:
        va = va[ib]
    elif ia != ib:
        raise VarMixupError(f"{claim.a.label()} and {claim.b.label()} scored different image subsets")
    if va.shape != vb.shape:
        raise VarMixupError(f"{claim.a.label()} and {claim.b.label()} scored {va.shape[0]} and {vb.shape[0]} "
                            f"images; rerun one of them")
    return va, vb


def _mean_terms(x: Tensor, groups: Tensor, n_groups: int) -> Tensor:
    """``(N,)`` per-image scores -> ``(N, G)`` each image's score in its group's (seed's) column."""
    return torch.nn.functional.one_hot(groups, n_groups).double() * x.unsqueeze(1)


def _mean_per_group(sums: Tensor, sizes: Tensor) -> Tensor:
    """``(S, G)`` sums of :func:`_mean_terms` -> ``(S, G)`` the means per group."""
    return sums / sizes


def _ece_terms(x: Tensor, groups: Tensor, n_groups: int) -> Tensor:
    """``(N, 2)`` confidence and correctness -> ``(N, G * 15)``: ``correct - confidence`` in the image's
    (group, bin) cell."""
    conf, corr = x[:, 0], x[:, 1]
    cell = (torch.ceil(conf * ECE_BINS).long() - 1).clamp(0, ECE_BINS - 1) + ECE_BINS * groups
    return torch.nn.functional.one_hot(cell, n_groups * ECE_BINS).double() * (corr - conf).unsqueeze(1)


def _ece_per_group(sums: Tensor, sizes: Tensor) -> Tensor:
    """``(S, G * 15)`` sums of :func:`_ece_terms` -> ``(S, G)`` the 15-bin ECE per group,
    ``sum_bins |sum (correct - confidence)| / n`` (equal to ``expected_calibration_error``)."""
    return sums.abs().view(sums.shape[0], sizes.numel(), ECE_BINS).sum(-1) / sizes


# per kind: per-image terms (N, K), and the per-group statistic (S, G) from their (S, K) sums and the group sizes
_STATS: dict[str, tuple[Callable[[Tensor, Tensor, int], Tensor], Callable[[Tensor, Tensor], Tensor]]] = {
    "accuracy": (_mean_terms, _mean_per_group), "corruption": (_mean_terms, _mean_per_group),
    "ece": (_ece_terms, _ece_per_group), "ece_ts": (_ece_terms, _ece_per_group)}


def _choose_source(kind: str, found: dict[str, dict[int, Any]]) -> str | None:
    """The first source that covers every seed with any data (else the one covering most), ``None`` if none."""
    covered = {seed for by_seed in found.values() for seed in by_seed}
    if not covered:
        return None
    sources = _SOURCES[kind]
    return next((s for s in sources if set(found[s]) == covered), max(sources, key=lambda s: len(found[s])))


def _pairs_by_seed(seed_runs: SeedRuns, claim: Claim) -> tuple[str, dict[int, Pair]] | None:
    """The source (:func:`_choose_source`) and each seed's paired values; ``None`` if no seed has both."""
    found = {s: {seed: p for seed, runs in seed_runs.items() if (p := _pair(runs, claim, s)) is not None}
             for s in _SOURCES[claim.a.kind]}
    source = _choose_source(claim.a.kind, found)
    return None if source is None else (source, found[source])


def measure_by_seed(seed_runs: SeedRuns, measure: Measure) -> tuple[str | None, dict[int, float]]:
    """One measure's value (a fraction) in each seed that has it, with the source it was read from.

    The source is chosen as for the claims (ECE: the calibration part if every seed with data has it);
    ``(None, {})`` when no seed has it.
    """
    read = _VALUES[measure.kind]
    found = {s: {seed: v[0] for seed, runs in seed_runs.items() if (v := read(runs, measure, s)) is not None}
             for s in _SOURCES[measure.kind]}
    source = _choose_source(measure.kind, found)
    if source is None:
        return None, {}
    return source, {seed: float(_values_per_group(measure.kind, [v])[0]) for seed, v in found[source].items()}


def _terms(kind: str, values: list[Tensor]) -> tuple[Tensor, Tensor]:
    """The per-image terms ``(N_total, K)`` of the concatenated groups (seeds) of values, and the group sizes."""
    groups = torch.cat([torch.full((v.shape[0],), i) for i, v in enumerate(values)])
    sizes = torch.tensor([v.shape[0] for v in values], dtype=torch.float64)
    return _STATS[kind][0](torch.cat(values), groups, len(values)), sizes


def _values_per_group(kind: str, values: list[Tensor]) -> Tensor:
    """``(G,)`` the statistic of each group (seed) of per-image values."""
    terms, sizes = _terms(kind, values)
    return _STATS[kind][1](terms.sum(0, keepdim=True), sizes)[0]


def _swap_p(kind: str, pairs: list[Pair]) -> float:
    """The swap test pooled over the seeds: swaps within each (seed, image), the mean per-seed difference."""
    per_group = _STATS[kind][1]
    (ta, sizes), (tb, _) = (_terms(kind, [p[side] for p in pairs]) for side in (0, 1))
    return paired_swap_test(lambda x, y: (per_group(x, sizes) - per_group(y, sizes)).mean(1), ta, tb)


def _pooled_test(kind: str, pairs: list[Pair]) -> dict[str, Any]:
    """Per-seed values, their mean, and the paired test pooled over the seeds' images."""
    per_a, per_b = (_values_per_group(kind, [p[side] for p in pairs]) for side in (0, 1))
    a, b = torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
    out: dict[str, Any] = {"a": float(per_a.mean()), "b": float(per_b.mean()), "diff": float((per_a - per_b).mean()),
                           "diff_seeds": (per_a - per_b).tolist(), "n": int(a.shape[0])}
    if kind == "accuracy":
        test = mcnemar_exact(a.bool(), b.bool())
        discordant = int(test["a_only"]) + int(test["b_only"])
        out.update(test="McNemar", a_only=test["a_only"], b_only=test["b_only"], p_value=test["p_value"])
    else:
        discordant = int((a != b).reshape(a.shape[0], -1).any(1).sum())
        out.update(test="swap", p_value=_swap_p(kind, pairs))
    return {**out, "min_p": mcnemar_min_p(discordant)}


def _bootstrap_interval(kind: str, a: Tensor, b: Tensor) -> tuple[float, float]:
    """The paired bootstrap 95% interval of ``a - b`` (10,000 resamples of the images), as a description."""
    if kind not in LOWER_IS_BETTER:
        return paired_bootstrap_mean_interval(a, b)
    blocks = bootstrap_index_blocks(a.shape[0])
    return percentile_interval(torch.cat([bootstrap_ece(a[:, 0], a[:, 1], d, n_bins=ECE_BINS)
                                          - bootstrap_ece(b[:, 0], b[:, 1], d, n_bins=ECE_BINS) for d in blocks]))


def _score_run(runs: Runs, claim: Claim) -> dict[str, Any]:
    found = _pairs_by_seed({0: runs}, claim)
    if found is None:
        return {"verdict": "not run yet"}
    source, pairs = found
    (a, b), = pairs.values()
    r = _pooled_test(claim.a.kind, [(a, b)])
    del r["diff_seeds"]
    r["diff_ci95"] = _bootstrap_interval(claim.a.kind, a, b)
    return {**r, "source": source} if claim.a.kind in LOWER_IS_BETTER else r


def _score_seeds(seed_runs: SeedRuns, claim: Claim) -> dict[str, Any]:
    found = _pairs_by_seed(seed_runs, claim)
    if found is None:
        return {"verdict": "not run yet", "seeds": []}
    source, pairs = found
    r = _pooled_test(claim.a.kind, list(pairs.values()))
    diffs = r["diff_seeds"]
    r.update(seeds=list(pairs), sd=float(torch.tensor(diffs, dtype=torch.float64).std()) if len(diffs) > 1 else None,
             t_ci95=t_interval(diffs) if len(diffs) > 1 else None)
    return {**r, "source": source} if claim.a.kind in LOWER_IS_BETTER else r


def _verdict(claim: Claim, r: dict[str, Any]) -> str:
    if r["p_holm"] < ALPHA:
        better = r["diff"] < 0 if claim.a.kind in LOWER_IS_BETTER else r["diff"] > 0
        return "confirmed" if better else "not confirmed"
    return "no power" if r["min_p"] >= ALPHA else "inconclusive"


def _judge(claims: tuple[Claim, ...], results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Holm-adjust the p-values of the claims that have one, as one family, and give each its verdict."""
    for claim, r, p in zip(claims, results, holm_adjust([r.get("p_value") for r in results]), strict=True):
        if p is not None:
            r["p_holm"] = p
            r["verdict"] = _verdict(claim, r)
    return results


def evaluate_claims(runs: Runs, claims: tuple[Claim, ...] = CLAIMS) -> list[dict[str, Any]]:
    """The numbers and the verdict of each claim from one training run per method, Holm-adjusted over ``claims``.

    Args:
        runs: :func:`~varmixup_aug.harness.evidence_results.load_runs` of the results folder.
        claims: the family of claims (one table).

    Returns:
        One dict per claim: ``a``, ``b`` (fractions), ``diff`` (``a - b``), ``diff_ci95`` (paired bootstrap,
        a description), ``test`` (``"McNemar"`` or ``"swap"``), ``p_value`` (raw), ``p_holm`` (adjusted),
        ``min_p`` (the smallest p the test could give here), ``n`` (images), ``a_only``/``b_only``
        (accuracies), ``source`` (ECE: ``"calibration"`` or ``"clean"``) and ``verdict``; only
        ``verdict = "not run yet"`` while a measure is missing.
    """
    return _judge(claims, [_score_run(runs, c) for c in claims])


def evaluate_claim(runs: Runs, claim: Claim) -> dict[str, Any]:
    """:func:`evaluate_claims` of ``claim`` alone (a family of one: the adjusted p is the raw p)."""
    return evaluate_claims(runs, (claim,))[0]


def evaluate_claims_across_seeds(seed_runs: SeedRuns, claims: tuple[Claim, ...] = CLAIMS) -> list[dict[str, Any]]:
    """Each claim judged over training seeds, Holm-adjusted over ``claims``.

    Only the seeds where both measures are complete are used (``seeds``); a claim with none is
    ``not run yet``.

    Args:
        seed_runs: :func:`~varmixup_aug.harness.evidence_results.load_seed_runs` of the results folder.
        claims: the family of claims (one table).

    Returns:
        One dict per claim: ``seeds`` (used), ``diff_seeds`` (``a - b`` per seed), ``a``, ``b``, ``diff``
        (means over those seeds), ``sd`` (sample sd of ``diff_seeds``) and ``t_ci95`` (95% t-interval with
        ``k - 1`` degrees of freedom; both ``None`` for one seed), the pooled test's ``test``, ``p_value``,
        ``p_holm``, ``min_p``, ``n`` (images over all seeds used), ``source`` (ECE) and ``verdict``.
    """
    return _judge(claims, [_score_seeds(seed_runs, c) for c in claims])


def evaluate_claim_across_seeds(seed_runs: SeedRuns, claim: Claim) -> dict[str, Any]:
    """:func:`evaluate_claims_across_seeds` of ``claim`` alone (a family of one)."""
    return evaluate_claims_across_seeds(seed_runs, (claim,))[0]


def _pct(x: float, sign: bool = False) -> str:
    return f"{100 * x:+.1f}" if sign else f"{100 * x:.1f}"


def _measure_cell(m: Measure, r: dict[str, Any], value: float) -> str:
    source = f" ({r['source']} part)" if m.kind == "ece" else ""
    return f"{m.label()}{source}: {_pct(value)}"


def _p_cells(r: dict[str, Any]) -> str:
    return f"{r['p_value']:.3g} ({r['test']}) | {r['p_holm']:.3g}"


def _run_row(claim: Claim, r: dict[str, Any], brief: bool) -> str:
    if "a" not in r:
        return f"| {claim.text} | - | {r['verdict']} |" if brief else \
            f"| {claim.source} | {claim.text} | - | - | - | - | - | - | {r['verdict']} |"
    lo, hi = r["diff_ci95"]
    diff = f"{_pct(r['diff'], True)} [{_pct(lo, True)}, {_pct(hi, True)}]"
    if brief:
        return f"| {claim.text} | {diff} | **{r['verdict']}** |"
    return (f"| {claim.source} | {claim.text} | {_measure_cell(claim.a, r, r['a'])} | "
            f"{_measure_cell(claim.b, r, r['b'])} | {diff} | {_p_cells(r)} | {r['n']} | **{r['verdict']}** |")


def _seeds_row(claim: Claim, r: dict[str, Any], brief: bool, total: int) -> str:
    seeds = f"{len(r['seeds'])}" + ("" if len(r["seeds"]) == total else f" of {total}")
    if "a" not in r:
        return f"| {claim.text} | {seeds} | - | {r['verdict']} |" if brief else \
            f"| {claim.text} | {seeds} | - | - | - | - | - | {r['verdict']} |"
    diff = _pct(r["diff"], True)
    if r["sd"] is not None:
        diff += f" ± {_pct(r['sd'])}"
    if brief:
        return f"| {claim.text} | {seeds} | {diff} | **{r['verdict']}** |"
    if r["t_ci95"] is not None:
        diff += f" [{_pct(r['t_ci95'][0], True)}, {_pct(r['t_ci95'][1], True)}]"
    return (f"| {claim.text} | {seeds} | {_measure_cell(claim.a, r, r['a'])} | {_measure_cell(claim.b, r, r['b'])} "
            f"| {diff} | {_p_cells(r)} | **{r['verdict']}** |")


_HEADS = {
    (False, False): ["| source | claim | A | B | A - B [95% bootstrap CI] | p (test) | Holm p | n | verdict |",
                     "|---|---|---:|---:|---:|---:|---:|---:|---|"],
    (False, True): ["| claim | A - B [95% CI] | verdict |", "|---|---:|---|"],
    (True, False): ["| claim | seeds | mean A | mean B | mean A - B ± sd [95% t-interval] | pooled p (test) "
                    "| Holm p | verdict |", "|---|---:|---:|---:|---:|---:|---:|---|"],
    (True, True): ["| claim | seeds | mean A - B ± sd | verdict |", "|---|---:|---:|---|"],
}


def claims_table(runs: Runs | SeedRuns, claims: tuple[Claim, ...] = CLAIMS, *, brief: bool = False,
                 across_seeds: bool = False, results: list[dict[str, Any]] | None = None) -> str:
    """A markdown table, one row per claim, in percent.

    One run (``runs`` from ``load_runs``): both numbers, the difference with its bootstrap interval, the
    raw p (and which test), the Holm-adjusted p, n and the verdict. ``across_seeds=True`` (``runs`` from
    ``load_seed_runs``): the seeds used, the mean of A and B, the mean difference ± its sd over seeds
    [t-interval], the pooled p, the Holm p and the verdict. ``brief=True`` keeps the claim, the
    difference and the verdict (and the seeds). ``results``: :func:`evaluate_claims` (or
    :func:`evaluate_claims_across_seeds`) of ``claims``, when already computed.
    """
    if results is None:
        results = (evaluate_claims_across_seeds(runs, claims) if across_seeds  # type: ignore[arg-type]
                   else evaluate_claims(runs, claims))  # type: ignore[arg-type]
    rows = list(_HEADS[across_seeds, brief])
    for claim, r in zip(claims, results, strict=True):
        rows.append(_seeds_row(claim, r, brief, len(runs)) if across_seeds else _run_row(claim, r, brief))
    return "\n".join(rows)
