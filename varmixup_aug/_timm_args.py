"""timm's ``mixup_args`` (the dict ``train.py`` builds for ``Mixup``/``FastCollateMixup``) as VarMixup's options."""

from __future__ import annotations

from typing import Any

from ._checks import check_bool, check_number
from ._errors import VarMixupError

__all__ = ["TIMM_DEFAULTS", "cutmix_active", "timm_to_varmixup_kwargs"]

# timm.data.Mixup's own defaults, so that ``from_timm_args(**mixup_args)`` means what ``Mixup(**mixup_args)`` means.
TIMM_DEFAULTS: dict[str, Any] = dict(mixup_alpha=1.0, cutmix_alpha=0.0, cutmix_minmax=None, prob=1.0, switch_prob=0.5,
                                     mode="batch", correct_lam=True, label_smoothing=0.1, num_classes=1000,
                                     multi_label=False)
_MODES = {"batch": False, "elem": True}
_RENAMED = {"alpha": "mixup_alpha", "lam_per_sample": "mode"}


def cutmix_active(args: dict[str, Any]) -> bool:
    """Whether timm's arguments ask for CutMix (``cutmix_alpha > 0`` or a ``cutmix_minmax``)."""
    return args["cutmix_minmax"] is not None or check_number(
        "cutmix_alpha", args["cutmix_alpha"], low=0, requirement="be a number >= 0 (0 switches CutMix off)") > 0


def timm_to_varmixup_kwargs(timm_args: dict[str, Any], extra: dict[str, Any], *, with_cutmix: bool,
                            batch_prob: bool) -> dict[str, Any]:
    """VarMixup's keyword arguments for timm's ``mixup_args`` (missing ones take timm's defaults) plus ``extra``
    (VarMixup's own options: ``seed``, ``residual``, ``input_normalization``, ...).

    ``with_cutmix``: the caller runs CutMix itself (the mixup/CutMix switch), so CutMix arguments are accepted.
    ``batch_prob``: the caller applies ``prob`` per batch itself, so ``mode="batch"`` with ``prob < 1`` is accepted.
    Whatever VarMixup cannot do is a ``VarMixupError`` that names the argument.
    """
    unknown = sorted(set(timm_args) - set(TIMM_DEFAULTS))
    if unknown:
        raise VarMixupError(f"unknown timm Mixup argument(s) {', '.join(unknown)}; timm's are "
                            f"{', '.join(TIMM_DEFAULTS)}")
    args = {**TIMM_DEFAULTS, **timm_args}
    for ours, theirs in _RENAMED.items():
        if ours in extra:
            raise VarMixupError(f"{ours} is set by timm's {theirs} here; pass {theirs}=... "
                                f"(got {ours}={extra[ours]!r})")
    mixup_alpha = check_number("mixup_alpha", args["mixup_alpha"], low=0,
                               requirement="be a number >= 0 (timm's --mixup)")
    if mixup_alpha <= 0:
        raise VarMixupError("mixup_alpha must be > 0 for VarMixup, got 0; VarMixup replaces the mixup half of timm's "
                            "recipe (with mixup_alpha=0 there is nothing to replace: use timm's Mixup as it is)")
    if cutmix_active(args) and not with_cutmix:
        raise VarMixupError(
            f"cutmix_alpha={args['cutmix_alpha']!r}, cutmix_minmax={args['cutmix_minmax']!r}: VarMixup has no CutMix "
            "half; for timm's mixup/CutMix recipe use varmixup_aug.integrations.timm.VarMixupCutMix(vae, **mixup_args) "
            "(VarMixup for mixup, timm's CutMix for the rest, switch_prob honoured), or pass cutmix_alpha=0.0"
        )
    mode = args["mode"]
    if mode not in _MODES:
        raise VarMixupError(f"mode must be 'batch' or 'elem' for VarMixup, got {mode!r}; timm's 'pair' and 'half' "
                            "modes mix fixed pairs, VarMixup draws a random partner: use mode='elem'")
    prob = check_number("prob", args["prob"], low=0, high=1, requirement="lie in [0, 1]")
    if mode == "batch" and prob < 1 and not batch_prob:
        raise VarMixupError(
            f"prob={prob:g} with mode='batch': timm then mixes the whole batch or none of it, VarMixup's prob is a "
            "fraction of samples; pass mode='elem' (per-sample prob), or use "
            "varmixup_aug.integrations.timm.VarMixupCutMix, which draws per batch"
        )
    check_number("switch_prob", args["switch_prob"], low=0, high=1, requirement="lie in [0, 1]")
    check_bool("correct_lam", args["correct_lam"])
    if check_bool("multi_label", args["multi_label"]):
        raise VarMixupError("multi_label=True (dense multi-label targets) is not supported by VarMixup; its targets "
                            "are class probabilities for a softmax cross-entropy")
    return {**extra, "num_classes": args["num_classes"], "alpha": mixup_alpha, "lam_per_sample": _MODES[mode],
            "prob": 1.0 if (mode == "batch" or batch_prob) else prob, "label_smoothing": args["label_smoothing"]}
