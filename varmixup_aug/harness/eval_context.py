"""What both evaluation commands share: one evaluation's checked inputs and the MI predictors built on them.

``evaluate`` (:mod:`.report`) and ``evidence`` (:mod:`.evidence`) each extend :class:`EvalContext` with their
settings; both check the images, labels and MI pool here, score the plain model here, and build every
:class:`~varmixup_aug.MIPredictor` through :meth:`EvalContext.make_mi`, whose draws are seeded by the run's
``seed`` and a tag naming the part, so a rerun repeats them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from torch import Tensor, nn

from varmixup_aug import MIPredictor, VarMixupError
from varmixup_aug._random import derive_seed

from .scoring import as_float_images, as_labels, check_pool, infer_num_classes, predict_logits

__all__ = ["EvalContext"]

_C = TypeVar("_C", bound="EvalContext")


@dataclass
class EvalContext:
    """One evaluation: the model (in eval mode), the checked images and labels, the MI pool, and the seed."""

    model: nn.Module
    x: Tensor
    y: Tensor
    pool: tuple[Tensor, Tensor] | None
    num_classes: int
    seed: int
    progress: bool

    @classmethod
    def start(cls: type[_C], model: nn.Module, images: Tensor, labels: Tensor, pool: tuple[Tensor, Tensor] | None, *,
              seed: int, progress: bool, **settings: Any) -> _C:
        """Check ``images`` (float in ``[0, 1]`` or uint8), ``labels`` and ``pool``; ``settings`` fill a subclass."""
        x = as_float_images(images)
        y = as_labels(labels, x.shape[0])
        pool_xy = check_pool(pool) if pool is not None else None
        model.eval()
        return cls(model, x, y, pool_xy, infer_num_classes(model, x), seed, progress, **settings)

    def make_mi(self, mode: Literal["ol", "pl", "combined"], *tag: Any, lam: float, num_samples: int,
                **options: Any) -> MIPredictor:
        """An :class:`MIPredictor` of ``mode`` on the pool, its draws seeded by ``(seed, "mi", *tag)``.

        ``options`` go to :class:`MIPredictor` as they are (``lam_ol``, ``num_samples_ol``, ``threshold``,
        ``chunk_size``).
        """
        if self.pool is None:
            raise VarMixupError("Mixup Inference needs a pool of clean training images, and this evaluation has none")
        return MIPredictor(self.model, self.pool, num_classes=self.num_classes, mode=mode, lam=float(lam),
                           num_samples=num_samples, seed=derive_seed(self.seed, "mi", *tag), **options)

    def logits(self, images: Tensor, batch_size: int) -> Tensor:
        """The plain model's logits ``(N, K)`` (float32, CPU), ``batch_size`` images per call."""
        return predict_logits(self.model, images, batch_size=batch_size)
