"""Confidence intervals for accuracies and paired tests between methods on the same images.

- :func:`wilson_interval`: the Wilson score interval of an accuracy ``k / n``.
- :func:`mcnemar_exact`: the exact (binomial) McNemar test on the discordant pairs of two
  classifiers scored on the same images.
- :func:`paired_bootstrap_interval`: a percentile bootstrap interval of the accuracy difference,
  resampling images (pairs stay together).
- :func:`paired_bootstrap_mean_interval`: the same for per-image scores (e.g. the fraction of an
  image's corrupted versions classified right).
- :func:`bootstrap_index_blocks`: the resamples behind them, drawn in blocks to bound memory.
- :func:`compare_pairwise`: all three for every pair of methods.
- :func:`paired_swap_test`: a paired permutation test (swap A and B within each image) for statistics
  that are not per-image counts (an ECE difference, a difference of mean per-image scores), computed
  from per-image sums.
- :func:`mcnemar_min_p`: the smallest McNemar p attainable with a number of discordant images.
- :func:`holm_adjust`: Holm-Bonferroni adjusted p-values over a family of tests.
- :func:`t_quantile` and :func:`t_interval`: Student's t quantile and interval, for a mean over seeds.

:data:`ALPHA` (0.05) is the one significance level of the harness.

Every function takes per-image correctness vectors, so "A is better than B" means outside the
noise of the images that were drawn.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from fractions import Fraction
from itertools import combinations
from typing import Any

import torch
from torch import Tensor

from varmixup_aug import VarMixupError
from varmixup_aug._checks import check_int

__all__ = [
    "ALPHA",
    "bootstrap_index_blocks",
    "bootstrap_indices",
    "compare_pairwise",
    "holm_adjust",
    "mcnemar_exact",
    "mcnemar_min_p",
    "paired_bootstrap_interval",
    "paired_bootstrap_mean_interval",
    "paired_swap_test",
    "percentile_interval",
    "t_interval",
    "t_quantile",
    "wilson_interval",
]

ALPHA = 0.05
"""The significance level of every test and verdict in the harness."""

_SWAP_BLOCK = 1 << 22  # swap indicators held at once by :func:`paired_swap_test`


def _as_bool_vector(name: str, value: Any) -> Tensor:
    t = torch.as_tensor(value)
    if t.ndim != 1 or t.numel() == 0:
        raise VarMixupError(f"{name} must be a non-empty 1-d vector of per-image correctness, got shape "
                            f"{tuple(t.shape)}")
    if t.dtype != torch.bool and not bool(((t == 0) | (t == 1)).all()):
        raise VarMixupError(f"{name} must hold only 0/1 or True/False")
    return t.bool()


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise VarMixupError(f"confidence must be in (0, 1), got {confidence!r}")
    return math.sqrt(2) * float(torch.special.erfinv(torch.tensor(confidence, dtype=torch.float64)))


def wilson_interval(correct: int, total: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of the proportion ``correct / total``.

    Example:
        >>> lo, hi = wilson_interval(50, 100)
        >>> round(lo, 4), round(hi, 4)
        (0.4038, 0.5962)
    """
    total = check_int("total", total)
    correct = check_int("correct", correct, minimum=0, maximum=total, requirement=f"be an int in [0, total={total}]")
    z = _z(confidence)
    p = correct / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(correct_a: Any, correct_b: Any) -> dict[str, float | int]:
    """Exact two-sided McNemar test: are A and B equally accurate on these images?

    Args:
        correct_a, correct_b: ``(N,)`` per-image correctness of A and B on the same images.

    Returns:
        ``{"a_only": b, "b_only": c, "p_value": p}``: images only A got right, only B got right, and
        ``p = min(1, 2 * P(X <= min(b, c)))`` for ``X ~ Binomial(b + c, 1/2)``.

    Example:
        >>> r = mcnemar_exact([1] * 10 + [0] * 2, [0] * 10 + [1] * 2)
        >>> r["a_only"], r["b_only"], round(r["p_value"], 5)
        (10, 2, 0.03857)
    """
    a, b = _as_bool_vector("correct_a", correct_a), _as_bool_vector("correct_b", correct_b)
    if a.shape != b.shape:
        raise VarMixupError(f"correct_a and correct_b must score the same images, got {a.numel()} and {b.numel()}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    n = only_a + only_b
    tail = Fraction(sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)), 2**n)
    return {"a_only": only_a, "b_only": only_b, "p_value": float(min(Fraction(1), 2 * tail))}


def bootstrap_index_blocks(n: int, *, samples: int = 10000, seed: int = 0,
                           rows: int = 1000) -> Iterator[Tensor]:
    """The rows of :func:`bootstrap_indices` in blocks of at most ``rows``, drawn lazily.

    The blocks are the same draws (one seeded stream), so memory stays at ``rows * n`` indices.
    """
    samples, n, rows = check_int("samples", samples, minimum=100), check_int("n", n), check_int("rows", rows)
    generator = torch.Generator().manual_seed(seed)
    return (torch.randint(0, n, (min(rows, samples - start), n), generator=generator)
            for start in range(0, samples, rows))


def bootstrap_indices(n: int, *, samples: int = 10000, seed: int = 0) -> Tensor:
    """``(samples, n)`` image indices drawn with replacement: one bootstrap resample per row.

    Paired statistics use the same rows for both methods, so pairs stay together.
    """
    return torch.cat(list(bootstrap_index_blocks(n, samples=samples, seed=seed)))


def percentile_interval(draws: Tensor, *, confidence: float = 0.95) -> tuple[float, float]:
    """The central ``confidence`` percentile interval of bootstrap ``draws``."""
    _z(confidence)
    q = torch.tensor([(1 - confidence) / 2, (1 + confidence) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(draws.double(), q).tolist()
    return lo, hi


def paired_bootstrap_interval(correct_a: Any, correct_b: Any, *, samples: int = 10000, confidence: float = 0.95,
                              seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``acc(A) - acc(B)``, resampling images with their pair."""
    a, b = _as_bool_vector("correct_a", correct_a), _as_bool_vector("correct_b", correct_b)
    if a.shape != b.shape:
        raise VarMixupError(f"correct_a and correct_b must score the same images, got {a.numel()} and {b.numel()}")
    return paired_bootstrap_mean_interval(a.double(), b.double(), samples=samples, confidence=confidence, seed=seed)


def paired_bootstrap_mean_interval(score_a: Tensor, score_b: Tensor, *, samples: int = 10000,
                                   confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(A) - mean(B)`` for per-image scores on the same images."""
    if score_a.ndim != 1 or score_a.shape != score_b.shape or score_a.numel() == 0:
        raise VarMixupError(f"score_a and score_b must be non-empty 1-d scores of the same images, got shapes "
                            f"{tuple(score_a.shape)} and {tuple(score_b.shape)}")
    _z(confidence)
    diff = score_a.double() - score_b.double()
    blocks = bootstrap_index_blocks(diff.numel(), samples=samples, seed=seed)
    means = torch.cat([diff[block].mean(1) for block in blocks])
    return percentile_interval(means, confidence=confidence)


def compare_pairwise(correct_by_name: Mapping[str, Any], *, seed: int = 0) -> list[dict[str, Any]]:
    """McNemar and a paired bootstrap interval for every pair of named correctness vectors.

    Returns one dict per pair: ``a``, ``b``, ``acc_a``, ``acc_b``, ``diff``, ``diff_ci95``,
    ``a_only``, ``b_only``, ``p_value`` and ``verdict`` (``"a better"``, ``"b better"`` or
    ``"no significant difference"`` at p < :data:`ALPHA`).
    """
    vectors = {k: _as_bool_vector(k, v) for k, v in correct_by_name.items()}
    rows = []
    for a, b in combinations(vectors, 2):
        test = mcnemar_exact(vectors[a], vectors[b])
        lo, hi = paired_bootstrap_interval(vectors[a], vectors[b], seed=seed)
        acc_a, acc_b = float(vectors[a].double().mean()), float(vectors[b].double().mean())
        verdict = "no significant difference"
        if test["p_value"] < ALPHA:
            verdict = "a better" if acc_a > acc_b else "b better"
        rows.append({"a": a, "b": b, "acc_a": acc_a, "acc_b": acc_b, "diff": acc_a - acc_b,
                     "diff_ci95": [lo, hi], **test, "verdict": verdict})
    return rows


def mcnemar_min_p(discordant: int) -> float:
    """The smallest two-sided exact McNemar p-value attainable with ``discordant`` discordant images.

    Reached when every discordant image goes one way: ``min(1, 2 * 0.5 ** discordant)``. With 5 or
    fewer discordant images it is at least 0.0625, so no outcome can be significant at :data:`ALPHA`.

    Example:
        >>> mcnemar_min_p(5), mcnemar_min_p(6), mcnemar_min_p(0)
        (0.0625, 0.03125, 1.0)
    """
    discordant = check_int("discordant", discordant, minimum=0)
    return min(1.0, 2 * 0.5**discordant)


def holm_adjust(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni step-down adjusted p-values; ``None`` entries (untested) pass through as ``None``.

    With the ``m`` p-values that are not ``None`` sorted as ``p_(1) <= ... <= p_(m)``, the adjusted value
    of ``p_(i)`` is ``max_{j <= i} min(1, (m - j + 1) * p_(j))``: monotone in ``p`` and capped at 1.
    Rejecting where the adjusted value is below ``alpha`` controls the family-wise error at ``alpha``.

    Example:
        >>> holm_adjust([0.01, 0.04, None, 0.03])
        [0.03, 0.06, None, 0.06]
    """
    present = [(float(p), i) for i, p in enumerate(p_values) if p is not None]
    if any(not 0 <= p <= 1 for p, _ in present):
        raise VarMixupError(f"p_values must lie in [0, 1] (or be None), got {[p for p, _ in present]}")
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (len(present) - rank) * p))
        adjusted[i] = running
    return adjusted


def paired_swap_test(stat_fn: Callable[[Tensor, Tensor], Tensor], a: Tensor, b: Tensor, *, samples: int = 10000,
                     seed: int = 0) -> float:
    """Two-sided paired permutation test: A's and B's results swapped within each image at random.

    For statistics of per-image sums, such as a difference of means or of ECEs: each image contributes a
    row of ``a`` to A's sums and a row of ``b`` to B's, and a swap exchanges the two. Under the null
    hypothesis that A and B are exchangeable on every image, swapping leaves the statistic's
    distribution unchanged, so ``p = (1 + #{|T_swap| >= |T_obs|}) / (1 + samples)`` over ``samples``
    seeded random swap patterns (a relative slack of ``1e-9`` absorbs rounding).

    Args:
        stat_fn: maps ``(S, K)`` sums over the images of A's rows and of B's rows (after each of ``S`` swap
            patterns) to the ``(S,)`` statistics, e.g. the ECE difference from per-bin sums of
            ``correct - confidence``; it must change sign when A and B are exchanged.
        a, b: ``(N, K)`` (or ``(N,)``) per-image contributions of A and B.
        samples: random swap patterns.
        seed: seed of the ``torch.Generator`` drawing them.

    Example:
        >>> diff = lambda sum_a, sum_b: (sum_a - sum_b)[:, 0]
        >>> paired_swap_test(diff, torch.ones(8), torch.zeros(8), samples=999)  # exact: 2 of 256 swaps, 0.0078
        0.007
    """
    if not isinstance(a, Tensor) or not isinstance(b, Tensor) or a.shape != b.shape or a.ndim not in (1, 2) \
            or a.numel() == 0:
        raise VarMixupError(f"a and b must be non-empty (N,) or (N, K) tensors of the same shape, got "
                            f"{tuple(getattr(a, 'shape', ()))} and {tuple(getattr(b, 'shape', ()))}")
    samples = check_int("samples", samples)
    a, b = a.double().reshape(a.shape[0], -1), b.double().reshape(b.shape[0], -1)
    sum_a, sum_b, moved = a.sum(0, keepdim=True), b.sum(0, keepdim=True), b - a
    observed = stat_fn(sum_a, sum_b)
    if observed.shape != (1,):
        raise VarMixupError(f"stat_fn must return one statistic per row of sums, (S,), got {tuple(observed.shape)} "
                            f"for S = 1")
    threshold = abs(float(observed)) * (1 - 1e-9)
    generator = torch.Generator().manual_seed(seed)
    rows = max(1, min(samples, _SWAP_BLOCK // a.shape[0]))
    hits = 0
    for start in range(0, samples, rows):
        swap = torch.randint(0, 2, (min(rows, samples - start), a.shape[0]), generator=generator, dtype=torch.float64)
        shift = swap @ moved
        hits += int((stat_fn(sum_a + shift, sum_b - shift).abs() >= threshold).sum())
    return (1 + hits) / (1 + samples)


def _abs_t_cdf(theta: float, df: int) -> float:
    """``P(|T| < sqrt(df) * tan(theta))`` for Student's t with integer ``df`` (Abramowitz & Stegun 26.7.3-4)."""
    c, s = math.cos(theta) ** 2, math.sin(theta)
    term, total = 1.0, 1.0
    if df % 2 == 0:
        for k in range(1, df // 2):
            term *= c * (2 * k - 1) / (2 * k)
            total += term
        return s * total
    if df == 1:
        return 2 * theta / math.pi
    for k in range(1, (df - 1) // 2):
        term *= c * (2 * k) / (2 * k + 1)
        total += term
    return 2 / math.pi * (theta + s * math.cos(theta) * total)


def t_quantile(prob: float, df: int) -> float:
    """The ``prob`` quantile of Student's t distribution with integer ``df`` degrees of freedom.

    Inverts the closed-form distribution function for integer ``df`` by bisection (torch's
    ``StudentT`` has no ``icdf``).

    Example:
        >>> round(t_quantile(0.975, 2), 4), round(t_quantile(0.025, 1), 4)
        (4.3027, -12.7062)
    """
    df = check_int("df", df)
    if not 0 < prob < 1:
        raise VarMixupError(f"prob must be in (0, 1), got {prob!r}")
    if prob < 0.5:
        return -t_quantile(1 - prob, df)
    lo, hi, target = 0.0, math.pi / 2, 2 * prob - 1
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _abs_t_cdf(mid, df) < target else (lo, mid)
    return math.sqrt(df) * math.tan((lo + hi) / 2)


def t_interval(values: Sequence[float], *, confidence: float = 0.95) -> tuple[float, float]:
    """Student's t interval of the mean of ``values`` (e.g. one difference per seed): ``mean -+ t * sd / sqrt(k)``.

    ``sd`` is the sample standard deviation and ``t`` the quantile with ``k - 1`` degrees of freedom.

    Example:
        >>> lo, hi = t_interval([1.0, 2.0, 3.0])
        >>> round(lo, 3), round(hi, 3)
        (-0.484, 4.484)
    """
    if len(values) < 2:
        raise VarMixupError(f"values must hold at least 2 numbers for a t interval, got {len(values)}")
    _z(confidence)
    v = torch.tensor(list(values), dtype=torch.float64)
    half = t_quantile((1 + confidence) / 2, len(values) - 1) * float(v.std()) / math.sqrt(len(values))
    return float(v.mean()) - half, float(v.mean()) + half
