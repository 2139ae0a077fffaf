"""VarMixup in Hugging Face's ``transformers.Trainer``: soft-target loss, HF's label key, unmixed evaluation.

``Trainer(data_collator=VarMixupCollate(...))`` alone trains with the wrong loss: float ``(B, C)`` labels make a
``*ForImageClassification`` model switch its config to multi-label BCE (for good, so a later evaluation with
integer labels fails), and the one collator also mixes the evaluation images. :class:`VarMixupTrainer` is the
``Trainer`` with that fixed:

- the loss is :func:`soft_target_loss` (soft-target cross-entropy; plain cross-entropy on integer labels), passed as
  ``compute_loss_func``, so the labels never reach the model's own loss;
- the label key becomes ``labels``, as ``transformers.DefaultDataCollator`` renames ``label``; ``(image, label)``
  pairs become ``{"pixel_values", "labels"}``;
- evaluation and prediction collate the same items without mixing: images as in training, ``(B,)`` int64 labels;
- ``label_smoothing_factor`` is refused (it would smooth the soft targets again): pass ``label_smoothing`` to the
  collate;
- ``set_epoch`` of the collate is called at each epoch start, so ``mixup_off_epoch`` works.

Importing this module imports ``transformers``; ``import varmixup_aug`` does not.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import transformers
from torch import Tensor

from .._collate import VarMixupCollate, collate_unmixed
from .._errors import VarMixupError

__all__ = ["VarMixupTrainer", "soft_target_loss"]


def _logits_of(outputs: Any) -> Tensor:
    if isinstance(outputs, Tensor):
        return outputs
    logits = outputs.get("logits") if isinstance(outputs, Mapping) else getattr(outputs, "logits", None)
    if logits is None and isinstance(outputs, (tuple, list)) and outputs:
        logits = outputs[0]
    if not isinstance(logits, Tensor) or logits.ndim != 2:
        raise VarMixupError(f"soft_target_loss needs the model's logits (B, C): a tensor, or outputs with .logits; got "
                            f"{type(outputs).__name__}")
    return logits


def soft_target_loss(outputs: Any, labels: Tensor | None, num_items_in_batch: Tensor | int | None = None) -> Tensor:
    """Cross-entropy for ``Trainer(compute_loss_func=soft_target_loss)``: ``-sum_c t_c log softmax(logits)_c``.

    ``labels``: ``(B, C)`` float soft targets (VarMixup's), or ``(B,)`` integer classes (``-100`` ignored, as in
    HF's losses). ``num_items_in_batch``, when the Trainer gives it, counts the label entries of the whole
    accumulated batch: ``B * C`` for soft targets, so it is divided by ``C`` to count samples. The loss is the sum
    over this batch divided by that count (the mean over this batch without it), so gradient accumulation gives the
    loss and gradients of one big batch.
    """
    logits = _logits_of(outputs)
    if not isinstance(labels, Tensor):
        raise VarMixupError(f"soft_target_loss needs labels, got {type(labels).__name__}; the batches must hold "
                            "'labels' (VarMixupTrainer renames the collate's label key)")
    log_p = torch.log_softmax(logits.float(), dim=-1)
    if labels.is_floating_point():
        if labels.shape != logits.shape:
            raise VarMixupError(f"soft labels must have the logits' shape {tuple(logits.shape)}, got "
                                f"{tuple(labels.shape)}; check num_classes against the model's num_labels")
        total = -(labels.to(log_p) * log_p).sum()
        count: Tensor | float = float(labels.shape[0])
        per_item = labels.shape[1]
    else:
        if labels.shape != logits.shape[:1]:
            raise VarMixupError(f"integer labels must have shape (B,) = ({logits.shape[0]},), got "
                                f"{tuple(labels.shape)}")
        total = torch.nn.functional.cross_entropy(log_p, labels.long(), ignore_index=-100, reduction="sum")
        count = (labels != -100).sum().clamp(min=1)
        per_item = 1
    if num_items_in_batch is not None:
        count = num_items_in_batch / per_item
    return total / count


class _HFBatches:
    """A collate whose batches follow HF's keys: the label key becomes ``labels``; pairs give ``pixel_values``."""

    def __init__(self, collate: Any, label_key: Any) -> None:
        self.collate, self.label_key = collate, label_key

    def __call__(self, features: Sequence[Any]) -> dict[Any, Any]:
        out = self.collate(features)
        if isinstance(out, (tuple, list)):
            return {"pixel_values": out[0], "labels": out[1]}
        key = self.label_key if self.label_key is not None else next(k for k in ("label", "labels") if k in out)
        return {("labels" if k == key else k): v for k, v in out.items()}


class _CollateEpochs(transformers.TrainerCallback):
    """Calls the collate's ``set_epoch`` at each epoch start (``mixup_off_epoch``, epoch-keyed streams)."""

    def __init__(self, collate: VarMixupCollate) -> None:
        self.collate = collate

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.collate.set_epoch(math.floor((state.epoch or 0) + 1e-6))


def _check_wiring(args: Any, model: Any, data_collator: Any) -> None:
    if not isinstance(data_collator, VarMixupCollate):
        raise VarMixupError(f"VarMixupTrainer needs data_collator=VarMixupCollate(vae, num_classes=..., ...), got "
                            f"{type(data_collator).__name__}; use transformers.Trainer for other collators")
    smoothing = getattr(args, "label_smoothing_factor", 0.0)
    if smoothing:
        raise VarMixupError(
            f"label_smoothing_factor={smoothing!r} is not supported with VarMixup: HF's LabelSmoother expects integer "
            f"labels and would smooth the soft targets again; set it to 0 and pass "
            f"VarMixupCollate(..., label_smoothing={smoothing!r}) instead"
        )
    config = getattr(model, "config", None)
    problem = getattr(config, "problem_type", None)
    if problem not in (None, "single_label_classification"):
        raise VarMixupError(
            f"model.config.problem_type={problem!r}: VarMixup's targets are class probabilities for a softmax "
            "cross-entropy; set model.config.problem_type = 'single_label_classification' (HF switches it to "
            "'multi_label_classification' for good once float labels reach the model's own loss)"
        )
    num_labels = getattr(config, "num_labels", None)
    if isinstance(num_labels, int) and num_labels != data_collator.mixer.num_classes:
        raise VarMixupError(f"the collate's num_classes={data_collator.mixer.num_classes} differs from the model's "
                            f"config.num_labels={num_labels}; make them equal")


class VarMixupTrainer(transformers.Trainer):
    """``transformers.Trainer`` for a ``VarMixupCollate``: soft-target cross-entropy, HF's ``labels`` key, unmixed
    evaluation (see the module docstring).

    Takes what ``Trainer`` takes (``model`` and ``args`` positionally, the rest by keyword); ``data_collator`` must be a
    :class:`~varmixup_aug.VarMixupCollate`. ``compute_loss_func`` defaults to :func:`soft_target_loss`.
    ``eval_data_collator`` (optional) replaces the unmixed evaluation collate.

    Example (``model`` a ``ViTForImageClassification``, datasets of ``{"pixel_values", "label"}`` items)::

        trainer = VarMixupTrainer(model, args, train_dataset=train_set, eval_dataset=test_set,
                                  data_collator=VarMixupCollate(vae, num_classes=10, seed=0))
    """

    def __init__(self, model: Any = None, args: Any = None, *, data_collator: Any = None,
                 compute_loss_func: Any = soft_target_loss, eval_data_collator: Any = None, **kwargs: Any) -> None:
        _check_wiring(args, model, data_collator)
        self.varmixup_collate = data_collator
        keys = dict(image_key=data_collator.image_key, label_key=data_collator.label_key)
        self.eval_data_collator = eval_data_collator if eval_data_collator is not None else _HFBatches(
            functools.partial(collate_unmixed, **keys), data_collator.label_key)
        callbacks = [*(kwargs.pop("callbacks", None) or []), _CollateEpochs(data_collator)]
        super().__init__(model, args, data_collator=_HFBatches(data_collator, data_collator.label_key),
                         compute_loss_func=compute_loss_func, callbacks=callbacks, **kwargs)
        _check_wiring(self.args, self.model, data_collator)  # args=None: the Trainer's defaults

    @contextlib.contextmanager
    def _unmixed_batches(self) -> Iterator[None]:
        mixed, self.data_collator = self.data_collator, self.eval_data_collator
        try:
            yield
        finally:
            self.data_collator = mixed

    def get_eval_dataloader(self, eval_dataset: Any = None) -> Any:
        """The evaluation DataLoader, with the unmixed collate."""
        with self._unmixed_batches():
            return super().get_eval_dataloader(eval_dataset)

    def get_test_dataloader(self, test_dataset: Any) -> Any:
        """The prediction DataLoader, with the unmixed collate."""
        with self._unmixed_batches():
            return super().get_test_dataloader(test_dataset)
