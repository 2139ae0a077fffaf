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

Every function takes per-image correctness vectors, so "A is better than B" means outside the
noise of the images that were drawn.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from fractions import Fraction
from itertools import combinations
from typing import Any

import torch
from torch import Tensor

from varmixup_aug import VarMixupError
from varmixup_aug._checks import check_int

__all__ = [
    "bootstrap_index_blocks",
    "bootstrap_indices",
    "compare_pairwise",
    "mcnemar_exact",
    "paired_bootstrap_interval",
    "paired_bootstrap_mean_interval",
    "percentile_interval",
    "wilson_interval",
]


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
    ``"no significant difference"`` at p < 0.05).
    """
    vectors = {k: _as_bool_vector(k, v) for k, v in correct_by_name.items()}
    rows = []
    for a, b in combinations(vectors, 2):
        test = mcnemar_exact(vectors[a], vectors[b])
        lo, hi = paired_bootstrap_interval(vectors[a], vectors[b], seed=seed)
        acc_a, acc_b = float(vectors[a].double().mean()), float(vectors[b].double().mean())
        verdict = "no significant difference"
        if test["p_value"] < 0.05:
            verdict = "a better" if acc_a > acc_b else "b better"
        rows.append({"a": a, "b": b, "acc_a": acc_a, "acc_b": acc_b, "diff": acc_a - acc_b,
                     "diff_ci95": [lo, hi], **test, "verdict": verdict})
    return rows
