"""VarMixup's options, defined once for ``varmixup``, ``VarMixup`` and ``VarMixupCollate``.

:class:`MixupOptions` holds the names, types, defaults and checks. The three public signatures
spell the options out as keyword-only parameters (so type checkers and IDEs see them) and gather
them into one checked :class:`MixupOptions`; ``tests/core/test_options.py`` fails when a signature
and the fields here disagree in a name, an annotation or a default. Adding an option means adding
a field (and its check) here, then the same parameter (and its ``Args:`` line) in the three
signatures, then using it in the op.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ._checks import check_bool, check_int, check_number
from ._errors import VarMixupError

__all__ = ["MixupOptions", "check_alpha_prob"]


def check_alpha_prob(alpha: Any, prob: Any) -> tuple[float, float]:
    """``(alpha, prob)`` as floats: alpha > 0, prob in [0, 1] (numpy and 0-d torch scalars accepted)."""
    return (check_number("alpha", alpha, low=0, low_open=True, hint="alpha=1.0 draws lam uniformly"),
            check_number("prob", prob, low=0, high=1, requirement="lie in [0, 1]"))


_AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
                    "fp16": torch.float16, "half": torch.float16}


def _check_autocast_dtype(value: Any) -> torch.dtype | None:
    """None, torch.bfloat16 or torch.float16; the strings ``"bfloat16"``/``"float16"`` (also ``"torch.bfloat16"``,
    ``"bf16"``, ``"fp16"``, ``"half"``) are mapped to those dtypes."""
    if value is None:
        return None
    if isinstance(value, str):
        key = value.strip().lower().removeprefix("torch.")
        if key in _AUTOCAST_DTYPES:
            return _AUTOCAST_DTYPES[key]
    elif value in (torch.bfloat16, torch.float16):
        return value
    raise VarMixupError(
        f"autocast_dtype must be torch.bfloat16, torch.float16 (or the strings 'bfloat16', 'float16') or None, "
        f"got {value!r}"
    )


@dataclass(frozen=True)
class MixupOptions:
    """The options of VarMixup; the ``Args:`` of :func:`varmixup` say what each one does.

    Attributes:
        num_classes: width of the soft targets.
        alpha: ``lam ~ Beta(alpha, alpha)``, > 0.
        lam_per_sample: one ``lam`` per sample, or one per batch.
        prob: fraction of samples that are mixed, in [0, 1].
        posterior: ``"sample"`` draws ``z`` from the posterior, ``"mean"`` uses ``mu``.
        space: ``"latent"`` (VarMixup) or ``"input"`` (plain mixup).
        residual: add back what the VAE does not reconstruct.
        label_smoothing: in [0, 1), applied to the one-hot labels before mixing.
        input_normalization: ``(mean, std)`` per channel if the images are normalised: the op mixes in
            pixel space and returns normalised images; without it, images must be in the VAE's range.
        autocast_dtype: run the VAE under ``torch.autocast`` with this dtype, or None.
        mixup_off_epoch: from this epoch on (as given to ``set_epoch``), batches pass through unmixed with
            their one-hot, label-smoothed targets, like timm's ``--mixup-off-epoch``; None: never.
    """

    num_classes: int
    alpha: float = 1.0
    lam_per_sample: bool = True
    prob: float = 1.0
    posterior: Literal["sample", "mean"] = "sample"
    space: Literal["latent", "input"] = "latent"
    residual: bool = False
    label_smoothing: float = 0.0
    input_normalization: tuple[Sequence[float], Sequence[float]] | None = None
    autocast_dtype: torch.dtype | None = None
    mixup_off_epoch: int | None = None

    def __post_init__(self) -> None:
        # Each check returns the value in its plain Python type (numpy and 0-d torch scalars are accepted);
        # bools are refused where a number is expected, and strings and numbers where a bool is.
        alpha, prob = check_alpha_prob(self.alpha, self.prob)
        checked = {
            "alpha": alpha,
            "prob": prob,
            "label_smoothing": check_number("label_smoothing", self.label_smoothing, low=0, high=1,
                                            high_open=True, requirement="lie in [0, 1)"),
            "num_classes": check_int("num_classes", self.num_classes, requirement="be a positive int"),
            "lam_per_sample": check_bool("lam_per_sample", self.lam_per_sample),
            "residual": check_bool("residual", self.residual),
            "autocast_dtype": _check_autocast_dtype(self.autocast_dtype),
            "mixup_off_epoch": check_int("mixup_off_epoch", self.mixup_off_epoch, minimum=0, allow_none=True,
                                         requirement="be an int >= 0 (an epoch number) or None"),
        }
        if not isinstance(self.space, str) or self.space not in ("latent", "input"):
            raise VarMixupError(f"space must be 'latent' or 'input', got {self.space!r}")
        if not isinstance(self.posterior, str) or self.posterior not in ("sample", "mean"):
            raise VarMixupError(f"posterior must be 'sample' or 'mean', got {self.posterior!r}")
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    def as_kwargs(self) -> dict[str, Any]:
        """The options as keyword arguments of ``varmixup``, ``VarMixup`` or ``VarMixupCollate``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

