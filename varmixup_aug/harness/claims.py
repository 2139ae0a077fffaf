"""The papers' claims, each tested on the committed per-image results: confirmed, not confirmed or inconclusive.

A claim says that measure ``a`` is better (higher accuracy, lower ECE) than measure ``b``, both
scored on the same test images. The verdict comes from a paired test:

- accuracies: the exact McNemar test; ``p < 0.05`` in the claimed direction is *confirmed*, in the
  other direction *not confirmed*, otherwise *inconclusive*;
- ECE and the mean corruption accuracy (not per-image counts): the paired bootstrap 95% interval of
  ``a - b`` (10,000 resamples of the images); entirely on the claimed side is *confirmed*, entirely
  on the other side *not confirmed*, otherwise *inconclusive*.

A claim whose results are not complete yet gets the verdict ``not run yet``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from varmixup_aug import VarMixupError
from .calibration import bootstrap_ece, expected_calibration_error
from .evidence_results import bits_to_bool, clean_confidences, corruption_scores, part_indices, part_vector
from .significance import bootstrap_index_blocks, mcnemar_exact, paired_bootstrap_mean_interval, percentile_interval

__all__ = ["CLAIMS", "Claim", "Measure", "claims_table", "evaluate_claim"]

KINDS = ("accuracy", "ece", "corruption")


@dataclass(frozen=True)
class Measure:
    """One number of one method: an accuracy (``part``/``key`` of the evidence), the ECE or the corruption mean."""

    method: str
    kind: str = "accuracy"
    part: str = "clean"
    key: str = "none"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise VarMixupError(f"kind must be one of {KINDS}, got {self.kind!r}")

    def label(self) -> str:
        if self.kind == "ece":
            return f"{self.method} ECE"
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
        Claim(_ADAPTIVE, ("MI-OL stays above the undefended model under AutoAttack-rand at 8/255 "
                         "(torchattacks returns clean images it does not count as fooled)"),
              Measure("mixup", part="autoattack:8/255", key="mi_ol@paper"), Measure("mixup", part="oblivious:8/255")),
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


CLAIMS: tuple[Claim, ...] = (*_varmixup_claims("varmixup", "VarMixup"),
                             *_varmixup_claims("varmixup-residual", "VarMixup (residual form)"),
                             *_mi_claims(), *_ablation_claims())


def _accuracy(runs: dict[str, dict[str, Any]], m: Measure) -> tuple[Tensor, list[int] | None] | None:
    evidence = runs.get(m.method, {}).get("evidence")
    bits = part_vector(evidence, m.part, m.key)
    if bits is None:
        return None
    return bits_to_bool(bits), part_indices(evidence, m.part)


def _paired_accuracies(runs: dict[str, dict[str, Any]], claim: Claim) -> tuple[Tensor, Tensor] | None:
    """Both correctness vectors on the same images (a full part is restricted to a subset part's images)."""
    a, b = _accuracy(runs, claim.a), _accuracy(runs, claim.b)
    if a is None or b is None:
        return None
    (va, ia), (vb, ib) = a, b
    if ia is not None and ib is None:
        vb = vb[ia]
    elif ib is not None and ia is None:
        va = va[ib]
    elif ia != ib:
        raise VarMixupError(f"{claim.a.label()} and {claim.b.label()} scored different image subsets")
    return va, vb


def _verdict(better: bool | None) -> str:
    return "inconclusive" if better is None else ("confirmed" if better else "not confirmed")


def _accuracy_claim(runs: dict[str, dict[str, Any]], claim: Claim) -> dict[str, Any] | None:
    pair = _paired_accuracies(runs, claim)
    if pair is None:
        return None
    va, vb = pair
    test = mcnemar_exact(va, vb)
    diff = float(va.double().mean() - vb.double().mean())
    better = None if test["p_value"] >= 0.05 else diff > 0
    return {"a": float(va.double().mean()), "b": float(vb.double().mean()), "diff": diff,
            "diff_ci95": paired_bootstrap_mean_interval(va.double(), vb.double()), "p_value": test["p_value"],
            "n": int(va.numel()), "verdict": _verdict(better)}


def _interval_verdict(lo: float, hi: float, lower_is_better: bool) -> str:
    if lo > 0:
        return _verdict(not lower_is_better)
    if hi < 0:
        return _verdict(lower_is_better)
    return _verdict(None)


def _ece_claim(runs: dict[str, dict[str, Any]], claim: Claim) -> dict[str, Any] | None:
    a = clean_confidences(runs.get(claim.a.method, {}).get("evidence"))
    b = clean_confidences(runs.get(claim.b.method, {}).get("evidence"))
    if a is None or b is None:
        return None
    blocks = bootstrap_index_blocks(a[0].numel())
    lo, hi = percentile_interval(torch.cat([bootstrap_ece(*a, d) - bootstrap_ece(*b, d) for d in blocks]))
    ea, eb = expected_calibration_error(*a), expected_calibration_error(*b)
    return {"a": ea, "b": eb, "diff": ea - eb, "diff_ci95": (lo, hi), "p_value": None, "n": int(a[0].numel()),
            "verdict": _interval_verdict(lo, hi, lower_is_better=True)}


def _corruption_claim(runs: dict[str, dict[str, Any]], claim: Claim) -> dict[str, Any] | None:
    a = corruption_scores(runs.get(claim.a.method, {}).get("evidence"))
    b = corruption_scores(runs.get(claim.b.method, {}).get("evidence"))
    if a is None or b is None:
        return None
    lo, hi = paired_bootstrap_mean_interval(a, b)
    return {"a": float(a.mean()), "b": float(b.mean()), "diff": float(a.mean() - b.mean()), "diff_ci95": (lo, hi),
            "p_value": None, "n": int(a.numel()), "verdict": _interval_verdict(lo, hi, lower_is_better=False)}


def evaluate_claim(runs: dict[str, dict[str, Any]], claim: Claim) -> dict[str, Any]:
    """The numbers and the verdict of one claim.

    Args:
        runs: :func:`~varmixup_aug.harness.evidence_results.load_runs` of the results folder.
        claim: the claim.

    Returns:
        ``a``, ``b`` (fractions), ``diff`` (``a - b``), ``diff_ci95``, ``p_value`` (McNemar, accuracies
        only, else ``None``), ``n`` (images) and ``verdict``; only ``verdict = "not run yet"`` while a
        measure is missing.
    """
    scorer = {"accuracy": _accuracy_claim, "ece": _ece_claim, "corruption": _corruption_claim}[claim.a.kind]
    result = scorer(runs, claim)
    return {"verdict": "not run yet"} if result is None else result


def claims_table(runs: dict[str, dict[str, Any]], claims: tuple[Claim, ...] = CLAIMS, *, brief: bool = False,
                 results: list[dict[str, Any]] | None = None) -> str:
    """A markdown table, one row per claim: both numbers, the difference, its interval, McNemar's p, n and
    the verdict; ``brief=True`` keeps the claim, the difference and the verdict (README's summary).
    ``results``: :func:`evaluate_claim` of each claim, when already computed (the bootstrap is not free)."""
    results = results if results is not None else [evaluate_claim(runs, c) for c in claims]
    if brief:
        rows = ["| claim | A - B [95% CI] | verdict |", "|---|---:|---|"]
    else:
        rows = ["| source | claim | A | B | A - B [95% CI] | McNemar p | n | verdict |",
                "|---|---|---:|---:|---:|---:|---:|---|"]
    for claim, r in zip(claims, results, strict=True):
        if "a" not in r:
            rows.append(f"| {claim.text} | - | {r['verdict']} |" if brief else
                        f"| {claim.source} | {claim.text} | - | - | - | - | - | {r['verdict']} |")
            continue
        lo, hi = r["diff_ci95"]
        diff = f"{100 * r['diff']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
        if brief:
            rows.append(f"| {claim.text} | {diff} | **{r['verdict']}** |")
            continue
        p = "-" if r["p_value"] is None else f"{r['p_value']:.3g}"
        rows.append(f"| {claim.source} | {claim.text} | {claim.a.label()}: {100 * r['a']:.1f} | "
                    f"{claim.b.label()}: {100 * r['b']:.1f} | {diff} | {p} | {r['n']} | **{r['verdict']}** |")
    return "\n".join(rows)
