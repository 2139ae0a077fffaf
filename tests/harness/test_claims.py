"""Verdicts per claim, computed from hand-made per-image results whose answer is known."""

from __future__ import annotations

import itertools
import json
import statistics
from pathlib import Path
from typing import Any

import pytest
import torch
from scipy import stats

from varmixup_aug import VarMixupError
from varmixup_aug.harness import (CLAIMS, FAST_CLAIMS, REFERENCE_POOL_FILE, claims_table, evaluate_claim,
                                  evaluate_claim_across_seeds, evaluate_claims, evaluate_claims_across_seeds, holm_adjust,
                                  load_seed_runs, papers_tables, precision_tables, single_step_tables)
from varmixup_aug.harness.calibration import bootstrap_ece, expected_calibration_error
from varmixup_aug.harness.claims import Claim, Measure, measure_by_seed
from varmixup_aug.harness.evidence_results import calibration_confidences, part_indices


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


def _clean(correct: torch.Tensor, confidence: torch.Tensor | None = None) -> dict[str, Any]:
    chunk: dict[str, Any] = {"none": _bits(correct)}
    if confidence is not None:
        chunk["confidence"] = confidence.tolist()
    return _evidence({"clean": chunk})


def _with_calibration(evidence: dict[str, Any], correct: torch.Tensor, raw: torch.Tensor,
                      scaled: torch.Tensor) -> dict[str, Any]:
    """The calibration part's shape: a result only, over all test images."""
    evidence["parts"]["calibration"] = {"result": {
        "temperature": 1.5, "fit": {"n": 10, "nll_before": 1.0, "nll_after": 0.9, "ece_before": 0.1, "ece_after": 0.05},
        "test": {"n": correct.numel(), "correct": _bits(correct), "confidence": raw.tolist(),
                 "confidence_ts": scaled.tolist()}}}
    return evidence


def _one_way(n: int, flipped: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A right on ``flipped`` more images than B, B never right where A is wrong."""
    b = torch.arange(n) % 2 == 0
    a = b.clone()
    a[(~b).nonzero()[:flipped, 0]] = True
    return a, b


ACC = Claim("test", "a beats b", Measure("a"), Measure("b"))
ECE = Claim("test", "a is better calibrated", Measure("a", "ece"), Measure("b", "ece"))
CORR = Claim("test", "a is more robust", Measure("a", "corruption"), Measure("b", "corruption"))


class TestAccuracyClaims:
    def test_a_clear_gain_is_confirmed(self) -> None:
        a, b = torch.ones(200, dtype=torch.bool), torch.zeros(200, dtype=torch.bool)
        b[:150] = True
        r = evaluate_claim(_runs(a=_evidence({"clean": {"none": _bits(a)}}),
                                 b=_evidence({"clean": {"none": _bits(b)}})), ACC)
        assert r["verdict"] == "confirmed" and r["p_value"] < 1e-10 and r["test"] == "McNemar"
        assert r["a"] == 1.0 and r["b"] == 0.75 and r["n"] == 200 and (r["a_only"], r["b_only"]) == (50, 0)
        assert r["p_holm"] == r["p_value"]  # a family of one
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
        flipped[:40] = ~flipped[:40]  # 40 discordant images, about as many each way
        runs = _runs(a=_evidence({"clean": {"none": _bits(flipped)}}), b=_evidence({"clean": {"none": _bits(x)}}))
        r = evaluate_claim(runs, ACC)
        assert r["verdict"] == "inconclusive" and r["min_p"] < 0.05 < r["p_value"]

    def test_five_discordant_images_have_no_power_and_six_can_decide(self) -> None:
        a, b = _one_way(100, 5)
        r = evaluate_claim(_runs(a=_clean(a), b=_clean(b)), ACC)
        assert r["verdict"] == "no power" and r["p_value"] == r["min_p"] == 0.0625
        a, b = _one_way(100, 6)
        r = evaluate_claim(_runs(a=_clean(a), b=_clean(b)), ACC)
        assert r["verdict"] == "confirmed" and r["p_value"] == 0.03125
        assert evaluate_claim(_runs(a=_clean(b), b=_clean(a)), ACC)["verdict"] == "not confirmed"

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
        r = evaluate_claim(runs, ECE)
        assert r["verdict"] == "confirmed" and r["test"] == "swap" and r["p_value"] == pytest.approx(1 / 10001)
        assert r["b"] == pytest.approx(expected_calibration_error(overconfident.double(), correct.double()))
        assert r["diff_ci95"][1] < 0 and r["source"] == "clean" and r["n"] == 2000

    def test_the_calibration_part_replaces_the_clean_part_when_both_methods_have_it(self) -> None:
        g = torch.Generator().manual_seed(2)
        correct, conf = torch.rand(300, generator=g) < 0.7, 0.5 + 0.5 * torch.rand(300, generator=g, dtype=torch.float64)
        full_correct, full_raw = torch.rand(500, generator=g) < 0.7, torch.rand(500, generator=g, dtype=torch.float64)
        a = _with_calibration(_clean(correct, conf), full_correct, full_raw, full_raw.sqrt())
        b = _with_calibration(_clean(correct, conf.sqrt()), full_correct, full_raw.sqrt(), full_raw)
        r = evaluate_claim(_runs(a=a, b=b), ECE)
        assert r["source"] == "calibration" and r["n"] == 500
        assert r["a"] == pytest.approx(expected_calibration_error(full_raw, full_correct.double()))
        only_one = _runs(a=a, b=_clean(correct, conf.sqrt()))
        assert evaluate_claim(only_one, ECE)["source"] == "clean" and evaluate_claim(only_one, ECE)["n"] == 300
        assert "| a ECE (calibration part): " in claims_table(_runs(a=a, b=b), (ECE,))

    def test_after_temperature_scaling_reads_the_scaled_confidences(self) -> None:
        g = torch.Generator().manual_seed(3)
        correct, raw = torch.rand(400, generator=g) < 0.8, 0.6 + 0.4 * torch.rand(400, generator=g, dtype=torch.float64)
        a = _with_calibration(_clean(correct, raw), correct, raw, torch.full((400,), 0.8, dtype=torch.float64))
        b = _with_calibration(_clean(correct, raw), correct, raw, torch.full((400,), 0.99, dtype=torch.float64))
        claim = Claim("test", "a is better calibrated after scaling", Measure("a", "ece_ts"), Measure("b", "ece_ts"))
        r = evaluate_claim(_runs(a=a, b=b), claim)
        assert r["b"] == pytest.approx(expected_calibration_error(torch.full((400,), 0.99), correct.double()))
        assert r["verdict"] == "confirmed"
        assert calibration_confidences(a, scaled=True)[0].unique().tolist() == [0.8]  # type: ignore[index]
        assert evaluate_claim(_runs(a=_clean(correct, raw), b=b), claim) == {"verdict": "not run yet"}

    def test_a_calibration_part_of_the_wrong_length_is_refused(self) -> None:
        bad = _with_calibration(_clean(torch.ones(3, dtype=torch.bool)), torch.ones(4, dtype=torch.bool),
                                torch.rand(3, dtype=torch.float64), torch.rand(3, dtype=torch.float64))
        with pytest.raises(VarMixupError, match="calibration part must store n = 4 confidences, got 3"):
            calibration_confidences(bad)


class TestCorruptionClaims:
    def test_mean_over_corruptions_per_image(self) -> None:
        def corruptions(rows: list[str]) -> dict[str, Any]:
            return {"parts": {"corruptions": {"n": len(rows), "chunks": {str(i): {"none": r} for i, r in
                                                                         enumerate(rows)}}}}

        strong, weak = corruptions(["1" * 400] * 3), corruptions(["1" * 200 + "0" * 200] * 3)
        r = evaluate_claim(_runs(a=strong, b=weak), CORR)
        assert r["verdict"] == "confirmed" and r["test"] == "swap" and r["diff"] == pytest.approx(0.5)
        assert evaluate_claim(_runs(a=weak, b=strong), CORR)["verdict"] == "not confirmed"
        few = corruptions(["1" * 395 + "0" * 5] * 3)  # 5 images differ: no swap of them can be significant
        assert evaluate_claim(_runs(a=strong, b=few), CORR)["verdict"] == "no power"

    def test_images_stored_in_another_order_are_refused(self) -> None:
        a, b = _clean(torch.ones(3, dtype=torch.bool)), _clean(torch.ones(3, dtype=torch.bool))
        a["test_indices"], b["test_indices"] = [5, 1, 9], [1, 5, 9]
        with pytest.raises(VarMixupError, match="a and b stored different test images"):
            evaluate_claim(_runs(a=a, b=b), ACC)
        b["test_indices"] = [5, 1, 9]  # random order, but the same for both: paired
        assert evaluate_claim(_runs(a=a, b=b), ACC)["n"] == 3


class TestHolmOverTheTable:
    def test_two_claims_significant_alone_are_not_once_adjusted_together(self) -> None:
        a1, b1 = _one_way(200, 6)  # p = 2 / 64 = 0.03125 alone
        a2, b2 = _one_way(150, 6)
        runs = _runs(a=_clean(a1), b=_clean(b1), c=_clean(a2), d=_clean(b2))
        second = Claim("test", "c beats d", Measure("c"), Measure("d"))
        assert evaluate_claim(runs, ACC)["verdict"] == evaluate_claim(runs, second)["verdict"] == "confirmed"
        results = evaluate_claims(runs, (ACC, second, Claim("test", "e beats a", Measure("e"), Measure("a"))))
        assert [r["p_holm"] for r in results[:2]] == pytest.approx(holm_adjust([0.03125, 0.03125])) == [0.0625] * 2
        assert [r["verdict"] for r in results] == ["inconclusive", "inconclusive", "not run yet"]
        table = claims_table(runs, (ACC, second), results=results[:2]).splitlines()
        assert table[0] == "| source | claim | A | B | A - B [95% bootstrap CI] | p (test) | Holm p | n | verdict |"
        assert table[2].endswith("| 0.0312 (McNemar) | 0.0625 | 200 | **inconclusive** |")


class TestPrecisionTables:
    @staticmethod
    def _run(folder: Path, precision: str, accuracy: float, correct: str | None = None) -> None:
        folder.mkdir(parents=True)
        report = {"precision": precision, "test_accuracy": accuracy, "wall_time_s": 100.0, "steps": 50,
                  "cpu_bf16_units": ["avx512_bf16"] if precision == "bf16" else []}
        (folder / "train_report.json").write_text(json.dumps(report))
        if correct is not None:
            part = {"result": {"test": {"n": len(correct), "correct": correct}}}
            (folder / "evidence.json").write_text(json.dumps({"parts": {"calibration": part}}))

    def test_bf16_against_the_fp32_seed_spread(self, tmp_path: Path) -> None:
        papers, other = tmp_path / "papers", tmp_path / "precision"
        self._run(papers / "seed0" / "erm", "bf16", 0.896, "1101")
        self._run(other / "seed0" / "erm", "fp32", 0.895, "1110")
        self._run(other / "seed1" / "erm", "fp32", 0.899)
        self._run(papers / "seed0" / "mixup", "bf16", 0.5)  # another method: not in the ERM check
        tables = precision_tables([papers, other])
        runs = tables["papers precision runs"].splitlines()[2:]
        assert runs == ["| bf16 | 0 | avx512_bf16 | 89.60 | 2.00 |", "| fp32 | 0 | none | 89.50 | 2.00 |",
                        "| fp32 | 1 | none | 89.90 | 2.00 |"]
        check = tables["papers precision check"].splitlines()[2:]
        assert check[0] == "| bf16 - fp32, seed 0 | +0.10 | 1 / 1 | 1.000 |"
        assert check[1] == "| fp32 seed 1 - fp32 seed 0 | +0.40 | - | - |"
        assert check[2:] == ["", "bf16 within the fp32 seed-to-seed spread: **passed**"]

    def test_a_bf16_gap_larger_than_the_seed_spread_fails(self, tmp_path: Path) -> None:
        self._run(tmp_path / "seed0" / "erm", "bf16", 0.85)
        self._run(tmp_path / "other" / "seed0" / "erm", "fp32", 0.895)
        self._run(tmp_path / "other" / "seed1" / "erm", "fp32", 0.899)
        assert precision_tables([tmp_path, tmp_path / "other"])["papers precision check"].endswith(": **failed**")

    def test_without_an_fp32_pair_it_is_not_run_yet(self, tmp_path: Path) -> None:
        self._run(tmp_path / "seed0" / "erm", "bf16", 0.85)
        tables = precision_tables([tmp_path, tmp_path / "missing"])
        assert tables["papers precision check"] == "bf16 within the fp32 seed-to-seed spread: not run yet"

    def test_the_same_run_under_two_roots_is_an_error(self, tmp_path: Path) -> None:
        self._run(tmp_path / "a" / "seed0" / "erm", "bf16", 0.85)
        self._run(tmp_path / "b" / "seed0" / "erm", "bf16", 0.86)
        with pytest.raises(VarMixupError, match=r"two bf16 runs of 'erm' with seed 0: .*a.seed0.erm and .*b.seed0.erm"):
            precision_tables([tmp_path / "a", tmp_path / "b"])

    def test_a_calibration_part_with_missing_bits_is_an_error(self, tmp_path: Path) -> None:
        self._run(tmp_path / "a" / "seed0" / "erm", "bf16", 0.85, "1101")
        self._run(tmp_path / "b" / "seed0" / "erm", "fp32", 0.86, "1101")
        self._run(tmp_path / "b" / "seed1" / "erm", "fp32", 0.86)
        evidence = tmp_path / "a" / "seed0" / "erm" / "evidence.json"
        evidence.write_text(json.dumps({"parts": {"calibration": {"result": {"test": {"n": 5, "correct": "1101"}}}}}))
        with pytest.raises(VarMixupError, match="calibration part must store n = 5 correct bits, got 4"):
            precision_tables([tmp_path / "a", tmp_path / "b"])


class TestSingleStepTables:
    @staticmethod
    def _run(folder: Path, args: dict[str, Any], rows: list[tuple[float, float, float]] | None) -> None:
        folder.mkdir(parents=True)
        (folder / "train_report.json").write_text(json.dumps({"method": "adv-train", "args": args}))
        if rows is not None:
            check = {"n": 4, "clean": 0.75, "rows": [{"eps": e, "fgsm_random_start": f, "pgd10": p} for e, f, p in rows]}
            (folder / "single_step_check.json").write_text(json.dumps(check))

    def test_rows_and_the_overfitting_verdict(self, tmp_path: Path) -> None:
        self._run(tmp_path / "a" / "seed0" / "adv-train", {"adv_attack": "n-fgsm"}, [(2.0, 0.5, 0.5), (8.0, 0.5, 0.25)])
        self._run(tmp_path / "b" / "seed1" / "adv-train", {}, [(2.0, 0.25, 0.0), (8.0, 0.75, 0.25)])
        self._run(tmp_path / "b" / "seed2" / "adv-train", {}, None)  # no check yet: no row
        rows = single_step_tables([tmp_path / "a", tmp_path / "b"])["papers single-step check"].splitlines()[2:]
        assert rows == ["| a | 0 | n-fgsm | 4 | 75.0 | 50.0 | 50.0 | 50.0 | 25.0 | no |",
                        "| b | 1 | fgsm-rs | 4 | 75.0 | 25.0 | 0.0 | 75.0 | 25.0 | **overfit** |"]

    def test_a_check_without_both_radii_is_an_error(self, tmp_path: Path) -> None:
        self._run(tmp_path / "seed0" / "adv-train", {}, [(8.0, 0.5, 0.5)])
        with pytest.raises(VarMixupError, match=r"must hold rows at eps 2 and 8 \(/255\), got \[8.0\]"):
            single_step_tables([tmp_path])


class TestClaimList:
    def test_every_claim_names_known_methods_and_parts(self) -> None:
        from varmixup_aug.harness import FAST_METHODS

        for claim in CLAIMS:
            for m in (claim.a, claim.b):
                assert m.method in FAST_METHODS
                assert m.part.split(":")[0] in ("clean", "oblivious", "published", "autoattack", "apgd")

    def test_the_new_claims_are_only_in_the_full_list(self) -> None:
        new = [c for c in CLAIMS if c not in FAST_CLAIMS]
        assert len(FAST_CLAIMS) == 28 and len(new) == 5
        assert sum(c.b.method == "adv-train" for c in new) == 3 and sum(c.a.kind == "ece_ts" for c in new) == 2
        assert {c.a.part for c in new if c.b.method == "adv-train"} == {"clean", "oblivious:2/255", "oblivious:8/255"}

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


def _seed_pair(k: int, n: int = 200, gain: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Seed ``k``'s correctness of A and B: B random, A right on ``gain + 5k`` more images (and nowhere less)."""
    b = torch.rand(n, generator=torch.Generator().manual_seed(k)) < 0.6
    a = b.clone()
    a[(~b).nonzero()[:gain + 5 * k, 0]] = True
    return a, b


def _seed_runs(seeds: dict[int, dict[str, dict[str, Any] | None]]) -> dict[int, dict[str, dict[str, Any]]]:
    return {k: {m: {"train": {}, "evidence": ev} for m, ev in runs.items()} for k, runs in seeds.items()}


class TestLoadSeedRuns:
    def test_reads_seed_folders_in_seed_order_and_skips_the_rest(self, tmp_path: Path) -> None:
        for folder, files in {"seed0/erm": ("train_report", "evidence"), "seed10/mixup": ("train_report",),
                              "seed2/erm": (), "seedx/erm": ("train_report",)}.items():
            (tmp_path / folder).mkdir(parents=True)
            for name in files:
                (tmp_path / folder / f"{name}.json").write_text(json.dumps({"name": name}))
        (tmp_path / "seed3").write_text("a file, not a folder")
        runs = load_seed_runs(tmp_path)
        assert list(runs) == [0, 10]  # seed2 holds no run yet
        assert runs[0]["erm"] == {"train": {"name": "train_report"}, "evidence": {"name": "evidence"}}
        assert runs[10]["mixup"]["evidence"] is None
        assert load_seed_runs(tmp_path / "missing") == {}


class TestEvaluateClaimAcrossSeeds:
    def test_per_seed_differences_their_spread_and_the_pooled_mcnemar(self) -> None:
        pairs = {k: _seed_pair(k) for k in range(3)}
        seed_runs = _seed_runs({k: {"a": _clean(a), "b": _clean(b)} for k, (a, b) in pairs.items()})
        r = evaluate_claim_across_seeds(seed_runs, ACC)
        diffs = [float(a.double().mean() - b.double().mean()) for a, b in pairs.values()]
        assert r["seeds"] == [0, 1, 2] and r["n"] == 600 and r["diff_seeds"] == pytest.approx(diffs)
        assert r["diff"] == pytest.approx(statistics.mean(diffs)) and r["sd"] == pytest.approx(statistics.stdev(diffs))
        ref = stats.t.interval(0.95, 2, loc=statistics.mean(diffs), scale=statistics.stdev(diffs) / 3 ** 0.5)
        assert r["t_ci95"] == pytest.approx(ref)
        a_only = sum(int((a & ~b).sum()) for a, b in pairs.values())
        b_only = sum(int((~a & b).sum()) for a, b in pairs.values())
        assert (a_only, b_only) == (45, 0)
        assert r["p_value"] == pytest.approx(stats.binomtest(a_only, a_only + b_only).pvalue, rel=1e-9)
        assert r["verdict"] == "confirmed" and r["test"] == "McNemar"
        assert r["a"] == pytest.approx(statistics.mean(float(a.double().mean()) for a, _ in pairs.values()))

    def test_only_the_seeds_both_methods_have_are_used(self) -> None:
        pairs = {k: _seed_pair(k) for k in range(3)}
        seed_runs = _seed_runs({0: {"a": _clean(pairs[0][0]), "b": _clean(pairs[0][1])},
                                1: {"a": _clean(pairs[1][0])},
                                2: {"a": _clean(pairs[2][0]), "b": _clean(pairs[2][1])}})
        r = evaluate_claim_across_seeds(seed_runs, ACC)
        assert r["seeds"] == [0, 2] and r["n"] == 400
        row = claims_table(seed_runs, (ACC,), across_seeds=True, results=[r]).splitlines()[2]
        assert row.startswith("| a beats b | 2 of 3 | a plain, clean: ")
        none = Claim("test", "a beats c", Measure("a"), Measure("c"))
        assert evaluate_claim_across_seeds(seed_runs, none) == {"verdict": "not run yet", "seeds": []}
        assert claims_table(seed_runs, (none,), across_seeds=True).splitlines()[2] == \
            "| a beats c | 0 of 3 | - | - | - | - | - | not run yet |"

    def test_one_seed_gives_no_spread(self) -> None:
        a, b = _seed_pair(0)
        seed_runs = _seed_runs({4: {"a": _clean(a), "b": _clean(b)}})
        r = evaluate_claim_across_seeds(seed_runs, ACC)
        assert r["sd"] is None and r["t_ci95"] is None and r["seeds"] == [4]
        row = claims_table(seed_runs, (ACC,), across_seeds=True, results=[r]).splitlines()[2]
        assert f"| {100 * r['diff']:+.1f} | " in row and "±" not in row

    def test_the_pooled_swap_test_swaps_within_each_seed_and_image(self) -> None:
        g = torch.Generator().manual_seed(6)
        scores = {k: (torch.rand(5, generator=g, dtype=torch.float64) + 0.15, torch.rand(5, generator=g,
                                                                                       dtype=torch.float64))
                  for k in (0, 1)}

        def corruptions(x: torch.Tensor) -> dict[str, Any]:  # 4 corruption sets whose mean per image is x
            rows = [_bits(x > t) for t in (0.2, 0.4, 0.6, 0.8)]
            return {"parts": {"corruptions": {"n": 4, "chunks": {str(i): {"none": r} for i, r in enumerate(rows)}}}}

        seed_runs = _seed_runs({k: {"a": corruptions(a), "b": corruptions(b)} for k, (a, b) in scores.items()})
        values = {k: [torch.stack([(x > t).double() for t in (0.2, 0.4, 0.6, 0.8)]).mean(0) for x in pair]
                  for k, pair in scores.items()}
        a, b = torch.cat([values[0][0], values[1][0]]), torch.cat([values[0][1], values[1][1]])

        def statistic(x: torch.Tensor, y: torch.Tensor) -> float:  # the mean over the 2 seeds of the mean difference
            return float(((x[:5] - y[:5]).mean() + (x[5:] - y[5:]).mean()) / 2)

        observed, hits = abs(statistic(a, b)), 0
        for pattern in itertools.product([False, True], repeat=10):
            swap = torch.tensor(pattern)
            hits += abs(statistic(torch.where(swap, b, a), torch.where(swap, a, b))) >= observed - 1e-12
        r = evaluate_claim_across_seeds(seed_runs, CORR)
        assert r["diff"] == pytest.approx(statistic(a, b)) and r["test"] == "swap"
        assert r["p_value"] == pytest.approx(hits / 1024, abs=0.015)

    def test_the_pooled_ece_is_each_seeds_ece_and_swaps_within_seeds(self) -> None:
        g = torch.Generator().manual_seed(8)
        data = {k: [(torch.rand(n, generator=g, dtype=torch.float64) * 0.5 + 0.5 - 0.4 * side,
                     torch.rand(n, generator=g) < 0.7) for side in (0, 1)] for k, n in ((0, 5), (1, 4))}
        seed_runs = _seed_runs({k: {"a": _clean(pa[1], pa[0]), "b": _clean(pb[1], pb[0])}
                                for k, (pa, pb) in data.items()})
        ece = {k: [expected_calibration_error(conf, corr.double()) for conf, corr in pair] for k, pair in data.items()}
        r = evaluate_claim_across_seeds(seed_runs, ECE)
        assert r["diff_seeds"] == pytest.approx([ece[0][0] - ece[0][1], ece[1][0] - ece[1][1]])
        units = [torch.stack([torch.cat([data[0][s][0], data[1][s][0]]), torch.cat([data[0][s][1], data[1][s][1]])
                              .double()], 1) for s in (0, 1)]

        def statistic(x: torch.Tensor, y: torch.Tensor) -> float:
            return sum(expected_calibration_error(x[i][:, 0], x[i][:, 1]) - expected_calibration_error(
                y[i][:, 0], y[i][:, 1]) for i in (slice(0, 5), slice(5, 9))) / 2

        observed, hits = abs(statistic(*units)), 0
        for pattern in itertools.product([False, True], repeat=9):
            swap = torch.tensor(pattern).unsqueeze(1)
            hits += abs(statistic(torch.where(swap, units[1], units[0]), torch.where(swap, units[0], units[1]))) \
                >= observed - 1e-12
        assert r["p_value"] == pytest.approx(hits / 512, abs=0.015) and r["n"] == 9

    def test_holm_runs_over_the_across_seed_table(self) -> None:
        pairs = {k: _seed_pair(k, gain=1) for k in range(2)}  # 1 and 6 images: 7 one way, p = 0.0156
        seed_runs = _seed_runs({k: {"a": _clean(a), "b": _clean(b), "c": _clean(b), "d": _clean(a)}
                                for k, (a, b) in pairs.items()})
        claims = (ACC, Claim("test", "c beats d", Measure("c"), Measure("d")))
        results = evaluate_claims_across_seeds(seed_runs, claims)
        assert [r["p_value"] for r in results] == pytest.approx([0.015625] * 2)
        assert [r["p_holm"] for r in results] == pytest.approx([0.03125] * 2)
        assert [r["verdict"] for r in results] == ["confirmed", "not confirmed"]
        lines = claims_table(seed_runs, claims, across_seeds=True, results=results).splitlines()
        assert lines[0] == ("| claim | seeds | mean A | mean B | mean A - B ± sd [95% t-interval] | pooled p (test) "
                            "| Holm p | verdict |")
        assert lines[2].endswith("| 0.0156 (McNemar) | 0.0312 | **confirmed** |")
        brief = claims_table(seed_runs, claims, across_seeds=True, brief=True, results=results).splitlines()
        assert brief[0] == "| claim | seeds | mean A - B ± sd | verdict |"
        assert brief[3] == f"| c beats d | 2 | {100 * results[1]['diff']:+.1f} ± {100 * results[1]['sd']:.1f} | " \
            "**not confirmed** |"


class TestMeasureBySeed:
    def test_raw_ece_reads_the_calibration_part_only_where_every_seed_has_it(self) -> None:
        g = torch.Generator().manual_seed(9)
        correct, conf = torch.rand(50, generator=g) < 0.7, torch.rand(50, generator=g, dtype=torch.float64)
        full_correct, full_conf = torch.rand(80, generator=g) < 0.7, torch.rand(80, generator=g, dtype=torch.float64)
        with_cal = _with_calibration(_clean(correct, conf), full_correct, full_conf, full_conf)
        source, values = measure_by_seed(_seed_runs({0: {"m": with_cal}, 1: {"m": with_cal}}), Measure("m", "ece"))
        assert source == "calibration"
        assert values == pytest.approx({0: expected_calibration_error(full_conf, full_correct.double()),
                                        1: expected_calibration_error(full_conf, full_correct.double())})
        source, values = measure_by_seed(_seed_runs({0: {"m": with_cal}, 1: {"m": _clean(correct, conf)}}),
                                         Measure("m", "ece"))
        assert source == "clean" and values[1] == pytest.approx(expected_calibration_error(conf, correct.double()))
        assert measure_by_seed(_seed_runs({0: {"m": None}}), Measure("m", "ece")) == (None, {})


class TestPapersTables:
    def test_headline_and_claims_from_seed_folders(self, tmp_path: Path) -> None:
        for k, accuracy in enumerate((0.90, 0.92)):
            for method in ("erm", "mixup"):
                folder = tmp_path / f"seed{k}" / method
                folder.mkdir(parents=True)
                a, b = _seed_pair(k, n=100)
                evidence = _evidence({"clean": {"none": _bits(a), "confidence": [0.9] * 100},
                                      "oblivious:8/255": {"none": _bits(b), "mi_ol@paper": _bits(a)}})
                (folder / "train_report.json").write_text(json.dumps({"test_accuracy": accuracy,
                                                                      "precision": ("fp32", "bf16")[k]}))
                (folder / "evidence.json").write_text(json.dumps(evidence))
        tables = papers_tables(tmp_path)
        headline = tables["papers headline"].splitlines()
        pgd, mi = ([100 * float(_seed_pair(k, n=100)[i].double().mean()) for k in (0, 1)] for i in (1, 0))
        assert headline[2].startswith("| erm | 2 | 91.0 ± 1.4 (2) | ")
        assert headline[2].endswith(f" on 1,000 | - | - | - | {statistics.mean(pgd):.1f} ± {statistics.stdev(pgd):.1f} (2) "
                                    f"| {statistics.mean(mi):.1f} ± {statistics.stdev(mi):.1f} (2) | bf16, fp32 |")
        assert headline[-1] == "| adv-train | 0 | - | - | - | - | - | - | - | - |"
        claims = {line.split(" | ")[0][2:]: line for line in tables["papers claims"].splitlines()[2:]}
        mi_ol = claims["MI-OL raises the mixup model's accuracy under oblivious PGD-10 at 8/255"]
        assert " | 2 | mixup mi-ol lam paper, oblivious:8/255: " in mi_ol and mi_ol.endswith("| **confirmed** |")
        assert claims["VarMixup is more accurate on clean images than adversarial training (N-FGSM, 8/255)"].endswith(
            "| 0 of 2 | - | - | - | - | - | not run yet |")
        assert list(tables) == ["papers headline", "papers claims", "papers verdicts", "papers paper seed 0"]
        paper = tables["papers paper seed 0"].splitlines()
        assert paper[0].endswith("| ours clean [95% CI] | ours robust [95% CI] | ours, reference pool: clean | ours, "
                                 "reference pool: robust |")
        a, b = _seed_pair(0, n=100)
        cells = [c.split(" [")[0] for c in paper[2].strip("| ").split(" | ")]  # mixup: clean "none", robust "none"
        assert cells == ["mixup", "93.8", "3.6", f"{100 * float(a.double().mean()):.1f}",
                         f"{100 * float(b.double().mean()):.1f}", "-", "-"]

    def test_the_reference_pool_file_fills_its_own_columns(self, tmp_path: Path) -> None:
        folder = tmp_path / "seed0" / "erm"
        folder.mkdir(parents=True)
        (folder / "train_report.json").write_text(json.dumps({"test_accuracy": 0.9}))
        ours = _evidence({"clean": {"mi_ol@paper": "1100"}, "oblivious:8/255": {"mi_ol@paper": "1000"}})
        reference = _evidence({"clean": {"mi_ol@paper": "1110"}, "oblivious:8/255": {"mi_ol@paper": "0000"}})
        (folder / "evidence.json").write_text(json.dumps(ours))
        (folder / REFERENCE_POOL_FILE).write_text(json.dumps(reference))
        row = papers_tables(tmp_path)["papers paper seed 0"].splitlines()[5]
        cells = [c.split(" [")[0] for c in row.strip("| ").split(" | ")]
        assert cells == ["ERM + MI-OL", "81.6", "7.4", "50.0", "25.0", "75.0", "0.0"]

    def test_a_folder_not_there_yet_gives_dashes(self, tmp_path: Path) -> None:
        tables = papers_tables(tmp_path / "cifar10-papers-long", prefix="papers-long")
        assert all(line.endswith("| 0 | - | - | - | - | - | - | - | - |")
                   for line in tables["papers-long headline"].splitlines()[2:])
        rows = tables["papers-long claims"].splitlines()[2:]
        assert len(rows) == len(CLAIMS) and all(r.endswith("| 0 | - | - | - | - | - | not run yet |") for r in rows)
