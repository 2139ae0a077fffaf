"""Confidence intervals and paired tests, checked against scipy's reference implementations."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from varmixup_aug import VarMixupError
from varmixup_aug.harness.significance import (
    bootstrap_index_blocks,
    bootstrap_indices,
    compare_pairwise,
    mcnemar_exact,
    paired_bootstrap_interval,
    paired_bootstrap_mean_interval,
    percentile_interval,
    wilson_interval,
)


class TestWilsonInterval:
    @pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (50, 100), (934, 1000), (1000, 1000)])
    def test_matches_scipy(self, k: int, n: int) -> None:
        ref = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        lo, hi = wilson_interval(k, n)
        assert lo == pytest.approx(ref.low, abs=1e-9) and hi == pytest.approx(ref.high, abs=1e-9)

    def test_rejects_counts_out_of_range(self) -> None:
        with pytest.raises(VarMixupError, match=r"correct must be an int in \[0, total=10\], got 11"):
            wilson_interval(11, 10)
        with pytest.raises(VarMixupError, match="total must be an int >= 1, got 0"):
            wilson_interval(0, 0)
        with pytest.raises(VarMixupError, match=r"confidence must be in \(0, 1\)"):
            wilson_interval(1, 2, confidence=1.0)


class TestMcnemarExact:
    def test_matches_scipy_binomial_test(self) -> None:
        g = torch.Generator().manual_seed(0)
        a = torch.rand(500, generator=g) < 0.8
        b = torch.rand(500, generator=g) < 0.75
        r = mcnemar_exact(a, b)
        assert r["a_only"] == int((a & ~b).sum()) and r["b_only"] == int((~a & b).sum())
        ref = stats.binomtest(r["a_only"], r["a_only"] + r["b_only"], 0.5).pvalue
        assert r["p_value"] == pytest.approx(ref, rel=1e-9)

    def test_identical_classifiers_give_p_one(self) -> None:
        assert mcnemar_exact([1, 0, 1], [1, 0, 1])["p_value"] == 1.0

    def test_rejects_unpaired_vectors(self) -> None:
        with pytest.raises(VarMixupError, match="must score the same images, got 3 and 2"):
            mcnemar_exact([1, 0, 1], [1, 0])
        with pytest.raises(VarMixupError, match="correct_a must hold only 0/1"):
            mcnemar_exact([2, 0], [1, 0])


class TestPairedBootstrapInterval:
    def test_covers_the_observed_difference_and_is_seeded(self) -> None:
        g = torch.Generator().manual_seed(1)
        a, b = torch.rand(400, generator=g) < 0.7, torch.rand(400, generator=g) < 0.6
        lo, hi = paired_bootstrap_interval(a, b, samples=2000)
        diff = float(a.double().mean() - b.double().mean())
        assert lo < diff < hi
        assert (lo, hi) == paired_bootstrap_interval(a, b, samples=2000)

    def test_rejects_too_few_samples(self) -> None:
        with pytest.raises(VarMixupError, match="samples must be an int >= 100"):
            paired_bootstrap_interval([1, 0], [0, 1], samples=10)


class TestPairedBootstrapMeanInterval:
    def test_per_image_scores(self) -> None:
        g = torch.Generator().manual_seed(2)
        a, b = torch.rand(300, generator=g), torch.rand(300, generator=g) * 0.5
        lo, hi = paired_bootstrap_mean_interval(a, b, samples=1000)
        assert lo < float(a.mean() - b.mean()) < hi and lo > 0

    def test_rejects_unpaired_scores(self) -> None:
        with pytest.raises(VarMixupError, match=r"same images, got shapes \(3,\) and \(2,\)"):
            paired_bootstrap_mean_interval(torch.rand(3), torch.rand(2))


class TestBootstrapIndices:
    def test_rows_are_seeded_resamples(self) -> None:
        draws = bootstrap_indices(50, samples=100, seed=3)
        assert draws.shape == (100, 50) and int(draws.min()) >= 0 and int(draws.max()) < 50
        assert torch.equal(draws, bootstrap_indices(50, samples=100, seed=3))

    def test_blocks_are_the_same_draws(self) -> None:
        blocks = list(bootstrap_index_blocks(50, samples=250, seed=3, rows=100))
        assert [b.shape[0] for b in blocks] == [100, 100, 50]
        assert torch.equal(torch.cat(blocks), bootstrap_indices(50, samples=250, seed=3))
        assert torch.equal(torch.cat(blocks), torch.randint(0, 50, (250, 50), generator=torch.Generator().manual_seed(3)))

    def test_rejects_bad_sizes(self) -> None:
        with pytest.raises(VarMixupError, match="rows must be an int >= 1, got 0"):
            bootstrap_index_blocks(10, rows=0)
        with pytest.raises(VarMixupError, match="n must be an int >= 1, got 0"):
            bootstrap_indices(0)
        with pytest.raises(VarMixupError, match="samples must be an int >= 100, got 5"):
            bootstrap_indices(10, samples=5)


class TestPercentileInterval:
    def test_central_interval(self) -> None:
        lo, hi = percentile_interval(torch.arange(101.0), confidence=0.9)
        assert (lo, hi) == pytest.approx((5.0, 95.0))


class TestComparePairwise:
    def test_every_pair_once_with_a_verdict(self) -> None:
        clearly_better = torch.ones(200, dtype=torch.bool)
        worse = torch.arange(200) % 2 == 0
        rows = compare_pairwise({"x": clearly_better, "y": worse, "z": worse.clone()})
        assert [(r["a"], r["b"]) for r in rows] == [("x", "y"), ("x", "z"), ("y", "z")]
        assert rows[0]["verdict"] == "a better" and rows[2]["verdict"] == "no significant difference"
        assert rows[0]["diff"] == pytest.approx(0.5)
