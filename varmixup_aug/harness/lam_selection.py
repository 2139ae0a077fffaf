"""Choosing Mixup Inference's ``lam`` per mode on held-out training images, never on the test split."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, cast

from torch import Tensor, nn
from tqdm.auto import tqdm

from varmixup_aug import MIPredictor, VarMixupError
from varmixup_aug._checks import check_number
from varmixup_aug._random import derive_seed, mix_seed
from .attacks import adversarial_examples
from .scoring import (
    accuracy_from_logits,
    as_float_images,
    as_labels,
    check_pool,
    eps_key,
    infer_num_classes,
    mi_correct,
    predict_logits,
)

__all__ = ["LAM_RULE", "select_mi_lam"]

LAM_RULE = (
    "for each MI mode, among the lam in the grid whose MI clean accuracy on the held-out images is at least "
    "the plain model's clean accuracy minus max_clean_drop, pick the one with the highest MI accuracy under "
    "oblivious PGD at eps (ties: the larger lam, i.e. the milder mix); if no lam meets the cap, pick the lam "
    "with the highest MI clean accuracy"
)


def select_mi_lam(model: nn.Module, images: Tensor, labels: Tensor, pool: tuple[Tensor, Tensor], *,
                  modes: Sequence[str] = ("pl", "ol"), grid: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
                  eps: float = 2 / 255, steps: int = 10, step_size: float | None = None, max_clean_drop: float = 0.05,
                  num_samples: int = 30, batch_size: int = 250, mi_batch_size: int = 50, seed: int = 0,
                  progress: bool = False) -> dict[str, Any]:
    """Choose Mixup Inference's ``lam`` per mode on held-out *training* images (never the test split).

    Rule (:data:`LAM_RULE`): among the ``lam`` whose MI clean accuracy is within ``max_clean_drop`` of
    the plain model's, the best under oblivious PGD at ``eps`` (ties: the larger ``lam``); if none is,
    the best clean one. The adversarial images are made once against the plain model (oblivious), so
    every ``lam`` is scored on the same images; each ``(mode, lam)`` draws MI mixes from its own seed.

    Args:
        model: classifier on pixel-space inputs.
        images, labels: ``(N, C, H, W)`` held-out training images in ``[0, 1]`` and ``(N,)``.
        pool: ``(images (P, C, H, W), labels (P,))`` clean training images for MI, disjoint from ``images``.
        modes: subset of ``("pl", "ol")``; grid: candidate ``lam`` values in ``(0, 1]``.
        eps, steps, step_size: the PGD attack; max_clean_drop: the cap on clean-accuracy loss, in ``[0, 1]``.
        num_samples: MI rounds per input; batch_size: attack batch; mi_batch_size: MI inputs per call.
        seed: seed of the attack and the MI draws; progress: tqdm bars.

    Returns:
        The rule, the settings, ``base_clean_accuracy``, ``base_pgd_accuracy`` and, per mode,
        ``{"lam", "constraint_met", "grid": [{"lam", "clean_accuracy", "pgd_accuracy"}, ...]}``.
    """
    modes, grid = _check_choices(modes, grid, max_clean_drop)
    x = as_float_images(images)
    y, pool, num_classes = as_labels(labels, x.shape[0]), check_pool(pool), infer_num_classes(model, x)  # eval mode
    adv = adversarial_examples(model, x, y, attack="pgd", eps=eps, steps=steps, step_size=step_size,
                               batch_size=batch_size, seed=mix_seed(seed, "select", "pgd"), progress=progress,
                               desc="lam selection: PGD")
    base_clean, base_adv = (accuracy_from_logits(predict_logits(model, t, batch_size=batch_size), y) for t in (x, adv))
    result: dict[str, Any] = {
        "rule": LAM_RULE, "eps": eps, "eps_key": eps_key(eps), "steps": steps,
        "step_size": eps / 4 if step_size is None else step_size, "max_clean_drop": max_clean_drop,
        "num_samples": num_samples, "n_images": int(x.shape[0]), "grid_values": list(grid),
        "base_clean_accuracy": base_clean, "base_pgd_accuracy": base_adv,
    }
    bar = tqdm(total=len(modes) * len(grid), desc="lam selection: MI", unit="lam", disable=not progress, leave=False)
    for mode in modes:
        rows = []
        for lam in grid:
            mi = MIPredictor(model, pool, num_classes=num_classes, mode=mode, num_samples=num_samples,
                             lam=float(lam), seed=derive_seed(seed, "select", mode, float(lam)))
            rows.append({"lam": float(lam), "clean_accuracy": _mi_accuracy(mi, x, y, mi_batch_size),
                         "pgd_accuracy": _mi_accuracy(mi, adv, y, mi_batch_size)})
            bar.update(1)
        result[mode] = _pick(rows, base_clean - max_clean_drop)
    bar.close()
    return result


def _mi_accuracy(mi: MIPredictor, x: Tensor, y: Tensor, batch_size: int) -> float:
    return float(mi_correct(mi, x, y, batch_size).double().mean())


def _check_choices(modes: Sequence[str], grid: Sequence[float], max_clean_drop: float
                   ) -> tuple[tuple[Literal["pl", "ol"], ...], tuple[float, ...]]:
    modes = tuple(modes)
    if not modes or any(m not in ("pl", "ol") for m in modes):
        raise VarMixupError(f"modes must be a non-empty subset of ('pl', 'ol'), got {modes!r}")
    grid_t = tuple(grid)
    if not grid_t or any(not isinstance(v, (int, float)) or not 0 < v <= 1 for v in grid_t):
        raise VarMixupError(f"grid must be a non-empty sequence of lam values in (0, 1], got {grid!r}")
    check_number("max_clean_drop", max_clean_drop, low=0, high=1)
    return cast("tuple[Literal['pl', 'ol'], ...]", modes), grid_t  # each checked above


def _pick(rows: list[dict[str, float]], min_clean: float) -> dict[str, Any]:
    """The rule of :data:`LAM_RULE` over one mode's grid rows."""
    ok = [r for r in rows if r["clean_accuracy"] >= min_clean - 1e-12]
    if ok:
        best = max(ok, key=lambda r: (r["pgd_accuracy"], r["lam"]))
    else:
        best = max(rows, key=lambda r: (r["clean_accuracy"], r["lam"]))
    return {"lam": best["lam"], "constraint_met": bool(ok), "grid": rows}
