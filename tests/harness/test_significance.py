"""Confidence intervals and paired tests, checked against scipy's reference implementations."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from scipy import stats

from varmixup_aug import VarMixupError
from varmixup_aug.harness.calibration import expected_calibration_error
from varmixup_aug.harness.significance import (
    ALPHA,
    bootstrap_index_blocks,
    bootstrap_indices,
    compare_pairwise,
    holm_adjust,
    mcnemar_exact,
    mcnemar_min_p,
    paired_bootstrap_interval,
    paired_bootstrap_mean_interval,
    paired_swap_test,
    percentile_interval,
    t_interval,
    t_quantile,
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


def _holm_rejects(p_values: list[float], alpha: float) -> set[int]:
    """Holm's step-down procedure itself: test the smallest p at alpha / m, the next at alpha / (m - 1), ...,
    and stop at the first that fails."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    rejected: set[int] = set()
    for rank, i in enumerate(order):
        if p_values[i] > alpha / (len(p_values) - rank):
            break
        rejected.add(i)
    return rejected


class TestHolmAdjust:
    def test_adjusted_below_alpha_is_exactly_what_the_step_down_procedure_rejects(self) -> None:
        g = torch.Generator().manual_seed(0)
        p = (torch.rand(12, generator=g) ** 3).tolist()
        adjusted = holm_adjust(p)
        for alpha in (0.001, 0.01, 0.05, 0.1, 0.3):
            assert {i for i, q in enumerate(adjusted) if q <= alpha} == _holm_rejects(p, alpha)

    def test_monotone_capped_and_no_smaller_than_the_raw_p(self) -> None:
        p = [0.5, 0.001, 0.02, 0.02, 0.9, 0.04]
        adjusted = holm_adjust(p)
        assert adjusted[1] == pytest.approx(0.006) and adjusted[4] == 1.0
        assert adjusted[2] == adjusted[3] == pytest.approx(0.1)  # ties: max(5 x 0.02, 4 x 0.02)
        pairs = sorted(zip(p, adjusted))
        assert all(a[1] <= b[1] for a, b in zip(pairs, pairs[1:])) and all(q >= r for r, q in zip(p, adjusted))

    def test_none_passes_through_and_does_not_count(self) -> None:
        assert holm_adjust([None, 0.01, None, 0.04]) == [None, pytest.approx(0.02), None, pytest.approx(0.04)]
        assert holm_adjust([]) == [] and holm_adjust([None]) == [None]

    def test_rejects_values_outside_zero_one(self) -> None:
        with pytest.raises(VarMixupError, match=r"p_values must lie in \[0, 1\]"):
            holm_adjust([0.1, 1.5])


class TestMcnemarMinP:
    @pytest.mark.parametrize("n", range(0, 13))
    def test_is_the_p_of_every_discordant_image_going_one_way(self, n: int) -> None:
        a, b = [1] * n + [0], [0] * n + [0]
        assert mcnemar_min_p(n) == pytest.approx(mcnemar_exact(a, b)["p_value"], rel=1e-12)

    def test_five_discordant_images_can_never_be_significant(self) -> None:
        assert mcnemar_min_p(5) >= ALPHA > mcnemar_min_p(6)

    def test_rejects_negative_counts(self) -> None:
        with pytest.raises(VarMixupError, match="discordant must be an int >= 0, got -1"):
            mcnemar_min_p(-1)


N_BINS = 15


def _mean_diff(sum_a: torch.Tensor, sum_b: torch.Tensor) -> torch.Tensor:
    """Mean difference from the sums of the per-image terms ``x_i / n``."""
    return (sum_a - sum_b)[:, 0]


def _ece_terms(x: torch.Tensor) -> torch.Tensor:
    """``(n, 2)`` confidence and correctness -> ``(n, 15)``: ``(correct - confidence) / n`` in each image's bin."""
    cell = (torch.ceil(x[:, 0] * N_BINS).long() - 1).clamp(0, N_BINS - 1)
    return torch.nn.functional.one_hot(cell, N_BINS).double() * ((x[:, 1] - x[:, 0]) / x.shape[0]).unsqueeze(1)


def _ece_diff(sum_a: torch.Tensor, sum_b: torch.Tensor) -> torch.Tensor:
    return sum_a.abs().sum(1) - sum_b.abs().sum(1)


def _exact_swap_p(stat, a: torch.Tensor, b: torch.Tensor) -> float:
    """The permutation p over all 2^n swap patterns of the images, each statistic from scratch by ``stat``."""
    observed = abs(stat(a, b))
    hits = 0
    for pattern in itertools.product([False, True], repeat=a.shape[0]):
        swap = torch.tensor(pattern).view(-1, *[1] * (a.ndim - 1))
        hits += abs(stat(torch.where(swap, b, a), torch.where(swap, a, b))) >= observed - 1e-12
    return hits / 2 ** a.shape[0]


def _reference_ece_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return expected_calibration_error(a[:, 0], a[:, 1]) - expected_calibration_error(b[:, 0], b[:, 1])


class TestPairedSwapTest:
    @pytest.mark.parametrize("seed", [0, 1, 2])
    def test_mean_difference_matches_all_swaps_enumerated(self, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        a, b = torch.rand(10, generator=g, dtype=torch.float64) + 0.2 * seed, torch.rand(10, generator=g, dtype=torch.float64)
        exact = _exact_swap_p(lambda x, y: float(x.mean() - y.mean()), a, b)
        assert paired_swap_test(_mean_diff, a / 10, b / 10, samples=20000) == pytest.approx(exact, abs=0.015)

    def test_ece_difference_matches_all_swaps_enumerated(self) -> None:
        g = torch.Generator().manual_seed(3)
        conf_a, conf_b = 0.5 + 0.5 * torch.rand(9, generator=g, dtype=torch.float64), torch.rand(9, generator=g,
                                                                                               dtype=torch.float64)
        correct_a = (torch.rand(9, generator=g) < 0.7).double()
        correct_b = (torch.rand(9, generator=g) < 0.5).double()
        a, b = torch.stack([conf_a, correct_a], 1), torch.stack([conf_b, correct_b], 1)
        exact = _exact_swap_p(_reference_ece_diff, a, b)  # by expected_calibration_error on each swapped set
        assert 0.02 < exact < 0.98
        assert paired_swap_test(_ece_diff, _ece_terms(a), _ece_terms(b), samples=20000) == pytest.approx(exact, abs=0.01)

    def test_on_correctness_it_approximates_mcnemar(self) -> None:
        g = torch.Generator().manual_seed(4)
        a, b = torch.rand(300, generator=g) < 0.7, torch.rand(300, generator=g) < 0.62
        p = paired_swap_test(_mean_diff, a.double(), b.double(), samples=20000, seed=1)
        assert p == pytest.approx(mcnemar_exact(a, b)["p_value"], abs=0.01)

    def test_formula_seed_and_identical_inputs(self) -> None:
        a = torch.rand(20, generator=torch.Generator().manual_seed(5))
        assert paired_swap_test(_mean_diff, a, a.clone(), samples=99) == 1.0  # every swap is as extreme as 0
        # all 8 images one way: only the identity and the full swap are as extreme, 2/256 of the patterns
        p = paired_swap_test(_mean_diff, torch.ones(8), torch.zeros(8), samples=999, seed=7)
        assert p == paired_swap_test(_mean_diff, torch.ones(8), torch.zeros(8), samples=999, seed=7)
        assert (p * 1000 - 1) == pytest.approx(round(p * 1000 - 1)) and 0.001 <= p < 0.03

    def test_rejects_unpaired_inputs_and_a_statistic_of_the_wrong_shape(self) -> None:
        with pytest.raises(VarMixupError, match=r"same shape, got \(3,\) and \(2,\)"):
            paired_swap_test(_mean_diff, torch.rand(3), torch.rand(2))
        with pytest.raises(VarMixupError, match=r"stat_fn must return one statistic per row of sums, \(S,\), got "
                                                r"\(1, 1\)"):
            paired_swap_test(lambda x, y: x - y, torch.rand(3), torch.rand(3))
        with pytest.raises(VarMixupError, match="samples must be an int >= 1, got 0"):
            paired_swap_test(_mean_diff, torch.rand(3), torch.rand(3), samples=0)


class TestTQuantile:
    @pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 8, 29, 100])
    @pytest.mark.parametrize("prob", [0.5, 0.6, 0.9, 0.975, 0.995, 0.025])
    def test_matches_scipy(self, df: int, prob: float) -> None:
        assert t_quantile(prob, df) == pytest.approx(stats.t.ppf(prob, df), rel=1e-9, abs=1e-12)

    def test_rejects_bad_arguments(self) -> None:
        with pytest.raises(VarMixupError, match="df must be an int >= 1, got 0"):
            t_quantile(0.9, 0)
        with pytest.raises(VarMixupError, match=r"prob must be in \(0, 1\), got 1.0"):
            t_quantile(1.0, 3)


class TestTInterval:
    @pytest.mark.parametrize("values", [[0.01, 0.03], [0.05, -0.01, 0.02], [1.0, 2.0, 4.0, 8.0]])
    def test_matches_scipy(self, values: list[float]) -> None:
        t = torch.tensor(values, dtype=torch.float64)
        ref = stats.t.interval(0.95, len(values) - 1, loc=float(t.mean()), scale=float(t.std()) / math.sqrt(len(values)))
        assert t_interval(values) == pytest.approx(ref, rel=1e-9)

    def test_needs_two_values(self) -> None:
        with pytest.raises(VarMixupError, match="at least 2 numbers for a t interval, got 1"):
            t_interval([0.1])
