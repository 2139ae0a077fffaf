"""Verdicts per claim, computed from hand-made per-image results whose answer is known."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from varmixup_aug import VarMixupError
from varmixup_aug.harness import CLAIMS, claims_table, evaluate_claim
from varmixup_aug.harness.calibration import bootstrap_ece, expected_calibration_error
from varmixup_aug.harness.claims import Claim, Measure
from varmixup_aug.harness.evidence_results import part_indices


def _bits(v: torch.Tensor) -> str:
    return "".join("1" if b else "0" for b in v.tolist())


def _evidence(parts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each part as one complete chunk."""
    out = {}
    for name, chunk in parts.items():
        n = len(next(v for k, v in chunk.items() if k not in ("confidence", "indices")))
        out[name] = {"chunks": {"0": chunk}, "n": n}
    return {"parts": out}


def _runs(**evidence: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {method.replace("_", "-"): {"train": {}, "evidence": ev} for method, ev in evidence.items()}


ACC = Claim("test", "a beats b", Measure("a"), Measure("b"))


class TestAccuracyClaims:
    def test_a_clear_gain_is_confirmed(self) -> None:
        a, b = torch.ones(200, dtype=torch.bool), torch.zeros(200, dtype=torch.bool)
        b[:150] = True
        r = evaluate_claim(_runs(a=_evidence({"clean": {"none": _bits(a)}}),
                                 b=_evidence({"clean": {"none": _bits(b)}})), ACC)
        assert r["verdict"] == "confirmed" and r["p_value"] < 1e-10
        assert r["a"] == 1.0 and r["b"] == 0.75 and r["n"] == 200
        lo, hi = r["diff_ci95"]
        assert 0 < lo < 0.25 < hi

    def test_the_reverse_is_not_confirmed_and_noise_is_inconclusive(self) -> None:
        g = torch.Generator().manual_seed(0)
        x = torch.rand(300, generator=g) < 0.6
        worse = x.clone()
        worse[x.nonzero()[:60, 0]] = False
        runs = _runs(a=_evidence({"clean": {"none": _bits(worse)}}), b=_evidence({"clean": {"none": _bits(x)}}))
        assert evaluate_claim(runs, ACC)["verdict"] == "not confirmed"
        flipped = x.clone()
        flipped[:4] = ~flipped[:4]  # a handful of discordant images: no test can tell
        runs = _runs(a=_evidence({"clean": {"none": _bits(flipped)}}), b=_evidence({"clean": {"none": _bits(x)}}))
        assert evaluate_claim(runs, ACC)["verdict"] == "inconclusive"

    def test_a_missing_part_is_not_run_yet(self) -> None:
        runs = _runs(a=_evidence({"clean": {"none": "1"}}), b=None)
        assert evaluate_claim(runs, ACC) == {"verdict": "not run yet"}
        assert "not run yet" in claims_table(runs, (ACC,))

    def test_the_brief_table_keeps_claim_difference_and_verdict(self) -> None:
        x = torch.rand(300, generator=torch.Generator().manual_seed(1)) < 0.6
        better = x | (torch.arange(300) < 60)
        runs = _runs(a=_evidence({"clean": {"none": _bits(better)}}), b=_evidence({"clean": {"none": _bits(x)}}))
        diff = 100 * float(better.double().mean() - x.double().mean())
        lines = claims_table(runs, (ACC,), brief=True).splitlines()
        assert lines[0] == "| claim | A - B [95% CI] | verdict |"
        assert lines[2].startswith(f"| {ACC.text} | {diff:+.1f} [") and lines[2].endswith("| **confirmed** |")
        assert claims_table(_runs(a=None, b=None), (ACC,), brief=True).splitlines()[2] == f"| {ACC.text} | - | not run yet |"

    def test_a_subset_part_is_compared_on_its_own_images(self) -> None:
        # the adaptive attack scored images 3, 0, 1; the oblivious part scored all four
        evidence = _evidence({"oblivious:8/255": {"none": "0110"},
                              "published:8/255": {"mi_ol@paper": "111", "indices": [3, 0, 1]}})
        assert part_indices(evidence, "published:8/255") == [3, 0, 1]
        claim = Claim("test", "adaptive", Measure("a", part="published:8/255", key="mi_ol@paper"),
                      Measure("a", part="oblivious:8/255"))
        r = evaluate_claim(_runs(a=evidence), claim)
        assert r["n"] == 3 and r["a"] == 1.0 and r["b"] == pytest.approx(1 / 3)  # "0110"[[3, 0, 1]] = 0, 0, 1


class TestEceClaims:
    def test_better_calibration_is_confirmed(self) -> None:
        g = torch.Generator().manual_seed(0)
        correct = torch.rand(2000, generator=g) < 0.8
        honest = torch.full((2000,), 0.8)
        overconfident = torch.full((2000,), 0.99)
        runs = _runs(a=_evidence({"clean": {"none": _bits(correct), "confidence": honest.tolist()}}),
                     b=_evidence({"clean": {"none": _bits(correct), "confidence": overconfident.tolist()}}))
        r = evaluate_claim(runs, Claim("test", "a is better calibrated", Measure("a", "ece"), Measure("b", "ece")))
        assert r["verdict"] == "confirmed" and r["p_value"] is None
        assert r["b"] == pytest.approx(expected_calibration_error(overconfident.double(), correct.double()))
        assert r["diff_ci95"][1] < 0


class TestCorruptionClaims:
    def test_mean_over_corruptions_per_image(self) -> None:
        def corruptions(rows: list[str]) -> dict[str, Any]:
            return {"parts": {"corruptions": {"n": len(rows), "chunks": {str(i): {"none": r} for i, r in
                                                                         enumerate(rows)}}}}

        strong, weak = corruptions(["1" * 400] * 3), corruptions(["1" * 200 + "0" * 200] * 3)
        claim = Claim("test", "a is more robust", Measure("a", "corruption"), Measure("b", "corruption"))
        assert evaluate_claim(_runs(a=strong, b=weak), claim)["verdict"] == "confirmed"
        assert evaluate_claim(_runs(a=weak, b=strong), claim)["verdict"] == "not confirmed"


class TestClaimList:
    def test_every_claim_names_known_methods_and_parts(self) -> None:
        from varmixup_aug.harness import FAST_METHODS

        for claim in CLAIMS:
            for m in (claim.a, claim.b):
                assert m.method in FAST_METHODS
                assert m.part.split(":")[0] in ("clean", "oblivious", "published", "autoattack")

    def test_mixed_kinds_and_unknown_kinds_are_refused(self) -> None:
        with pytest.raises(VarMixupError, match="one kind of measure"):
            Claim("test", "x", Measure("a"), Measure("b", "ece"))
        with pytest.raises(VarMixupError, match="kind must be one of"):
            Measure("a", "loss")


class TestBootstrapEce:
    def test_each_row_equals_the_ece_of_that_resample(self) -> None:
        g = torch.Generator().manual_seed(1)
        conf = torch.rand(300, generator=g)
        correct = (torch.rand(300, generator=g) < conf).double()
        draws = torch.randint(0, 300, (6, 300), generator=g)
        expected = [expected_calibration_error(conf[d], correct[d]) for d in draws]
        assert bootstrap_ece(conf, correct, draws).tolist() == pytest.approx(expected)

    def test_draws_must_be_integer_rows(self) -> None:
        with pytest.raises(VarMixupError, match=r"draws must be \(S, N\) integer indices"):
            bootstrap_ece(torch.rand(4), torch.ones(4), torch.rand(2, 4))
