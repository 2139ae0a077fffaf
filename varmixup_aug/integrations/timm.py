"""VarMixup in timm's ``train.py``: the mixup/CutMix recipe, and the prefetcher path's collate.

``train.py`` builds ``mixup_args`` (``mixup_alpha``, ``cutmix_alpha``, ``cutmix_minmax``, ``prob``, ``switch_prob``,
``mode``, ``label_smoothing``, ``num_classes``) and then, on its default path (the prefetcher), passes
``FastCollateMixup(**mixup_args)`` as the loader's ``collate_fn``; with ``--no-prefetcher`` it calls
``Mixup(**mixup_args)`` on each batch. The drop-ins take the same dict, plus the VAE and VarMixup's own options:

- ``Mixup(**mixup_args)`` -> :class:`VarMixupCutMix` ``(vae, **mixup_args)``: VarMixup for the mixup half, timm's
  CutMix (or any ``(images, labels) -> (images, targets)`` callable, e.g. ``torchvision.transforms.v2.CutMix``)
  for the other, chosen per batch with ``switch_prob``; ``prob`` per batch; ``mixup_enabled`` as in timm. Without
  CutMix in the arguments it is VarMixup alone (``VarMixup.from_timm_args`` does that too). The inputs are
  normalised on this path: pass ``input_normalization=(mean, std)``.
- ``FastCollateMixup(**mixup_args)`` -> :class:`VarMixupFastCollate` ``(vae, **mixup_args)``: takes the uint8
  ``(C, H, W)`` items of timm's prefetcher transforms, mixes in [0, 1] and returns uint8 0..255 images, which
  ``PrefetchLoader`` normalises with ``mean * 255``, ``std * 255`` as it does timm's own. It is a
  ``FastCollateMixup``, so ``loader.mixup_enabled = False`` (train.py at ``--mixup-off-epoch``) reaches it, in every
  worker.

Importing this module imports ``timm``; ``import varmixup_aug`` does not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from timm.data import FastCollateMixup, Mixup
from torch import Tensor
from torch.utils.data import default_collate

from .._collate import to_uint8_images
from .._errors import VarMixupError
from .._mixup import VarMixup
from .._tensors import to_float_images
from .._timm_args import TIMM_DEFAULTS, cutmix_active, timm_to_varmixup_kwargs
from .._vae import VAEProtocol

__all__ = ["VarMixupCutMix", "VarMixupFastCollate"]


def _split(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    return ({k: v for k, v in kwargs.items() if k in TIMM_DEFAULTS},
            {k: v for k, v in kwargs.items() if k not in TIMM_DEFAULTS})


class VarMixupCutMix:
    """timm's ``Mixup`` with VarMixup as its mixup half: ``VarMixupCutMix(vae, **mixup_args, seed=0)``.

    Per batch, with probability ``prob``: CutMix with probability ``switch_prob`` (when ``cutmix_alpha > 0`` or
    ``cutmix_minmax`` is set), VarMixup otherwise; else the batch passes with one-hot, label-smoothed targets.
    These choices come from VarMixup's seeded stream; timm's CutMix draws its ``lam`` and box from numpy, as in timm.

    Args:
        vae: VarMixup's VAE (``None`` with ``space="input"``).
        cutmix: the CutMix half, ``(images, labels) -> (images, targets)``; default: timm's ``Mixup`` set to CutMix
            only, with the given ``cutmix_alpha``, ``cutmix_minmax``, ``correct_lam``, ``label_smoothing`` and
            ``num_classes``. It gets a copy of the images (timm's mixes in place).
        **kwargs: timm's ``mixup_args`` (timm's defaults where missing; ``mode`` must be ``"batch"``) and VarMixup's
            own options (``seed``, ``residual``, ``input_normalization``, ``mixup_off_epoch``, ...).
    """

    def __init__(self, vae: VAEProtocol | None, *, cutmix: Callable[[Tensor, Tensor], Any] | None = None,
                 **kwargs: Any) -> None:
        timm_args, extra = _split(kwargs)
        args = {**TIMM_DEFAULTS, **timm_args}
        if args["mode"] != "batch":
            raise VarMixupError(f"mode must be 'batch' for VarMixupCutMix (it switches per batch), got "
                                f"{args['mode']!r}; for per-sample mixing without CutMix use "
                                "VarMixup.from_timm_args(vae, mode='elem', ...)")
        self.varmixup = VarMixup(vae, **timm_to_varmixup_kwargs(timm_args, extra, with_cutmix=True, batch_prob=True))
        self.prob, self.switch_prob = float(args["prob"]), float(args["switch_prob"])
        self.cutmix_active = cutmix_active(args)
        if cutmix is not None and not callable(cutmix):
            raise VarMixupError(f"cutmix must be a callable (images, labels) -> (images, targets), got "
                                f"{type(cutmix).__name__}")
        if cutmix is None and self.cutmix_active:
            cutmix = Mixup(mixup_alpha=0.0, cutmix_alpha=args["cutmix_alpha"], cutmix_minmax=args["cutmix_minmax"],
                           prob=1.0, mode="batch", correct_lam=args["correct_lam"],
                           label_smoothing=args["label_smoothing"], num_classes=args["num_classes"])
        self.cutmix = cutmix if self.cutmix_active else None
        self.last_choice = "none"  # "varmixup", "cutmix" or "none": what the last call in this process did

    @property
    def mixup_enabled(self) -> bool:
        """timm's switch (train.py sets it to False at ``--mixup-off-epoch``); shared with DataLoader workers."""
        return self.varmixup.mixup_enabled

    @mixup_enabled.setter
    def mixup_enabled(self, value: bool) -> None:
        self.varmixup.mixup_enabled = value

    def set_epoch(self, epoch: int) -> None:
        """:meth:`VarMixup.set_epoch`: epoch-keyed streams, and ``mixup_off_epoch``."""
        self.varmixup.set_epoch(epoch)

    def __call__(self, x: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        mixer = self.varmixup
        if not mixer.mixing:
            self.last_choice = "none"
            return mixer(x, target)
        u = torch.rand(2, generator=mixer._streams.get()).tolist()
        if u[0] >= self.prob:
            self.last_choice = "none"
            return mixer._unmixed(x, target)
        if self.cutmix is not None and u[1] < self.switch_prob:
            self.last_choice = "cutmix"
            images, targets = self.cutmix(x.clone(), target)
            return images, targets
        self.last_choice = "varmixup"
        return mixer(x, target)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.varmixup!r}, prob={self.prob}, switch_prob={self.switch_prob}, "
                f"cutmix={self.cutmix!r})")


def _item_images(batch: Sequence[Any]) -> Tensor:
    images = [torch.as_tensor(item[0]) for item in batch]
    if images[0].dtype != torch.uint8 or images[0].ndim != 3:
        raise VarMixupError(
            f"VarMixupFastCollate takes timm's prefetcher items, uint8 (C, H, W) images, got {images[0].dtype} of "
            f"shape {tuple(images[0].shape)}; for float images (use_prefetcher=False) use VarMixupCollate, or "
            "VarMixupCutMix on the batches"
        )
    return to_float_images(torch.stack(images))


class VarMixupFastCollate(FastCollateMixup):
    """timm's ``FastCollateMixup`` with VarMixup: ``collate_fn=VarMixupFastCollate(vae, **mixup_args, seed=0)``.

    The items (``(uint8 (C, H, W) array or tensor, int label)``, as timm's transforms give them with
    ``use_prefetcher=True``) are stacked, scaled to [0, 1], mixed by :class:`VarMixupCutMix` and returned as uint8
    0..255 with soft targets ``(B, num_classes)``: what ``PrefetchLoader`` expects (it normalises after the collate).
    ``input_normalization`` is refused here, since the images are not normalised yet. ``mixup_enabled`` (set
    through ``PrefetchLoader.mixup_enabled``) and ``set_epoch`` reach every worker.

    Args: as :class:`VarMixupCutMix`.
    """

    def __init__(self, vae: VAEProtocol | None, *, cutmix: Callable[[Tensor, Tensor], Any] | None = None,
                 **kwargs: Any) -> None:
        if kwargs.get("input_normalization") is not None:
            raise VarMixupError(
                f"input_normalization={kwargs['input_normalization']!r}: on timm's prefetcher path the collate sees "
                "uint8 0..255 images and PrefetchLoader normalises after it; leave input_normalization out (it is "
                "for the --no-prefetcher path, where the batches are normalised)"
            )
        self.mixer = VarMixupCutMix(vae, cutmix=cutmix, **kwargs)
        timm_args, _ = _split(kwargs)
        super().__init__(**timm_args)

    @property  # type: ignore[override]
    def mixup_enabled(self) -> bool:
        return self.mixer.mixup_enabled

    @mixup_enabled.setter
    def mixup_enabled(self, value: bool) -> None:
        self.mixer.mixup_enabled = value

    def set_epoch(self, epoch: int) -> None:
        """:meth:`VarMixup.set_epoch` (epoch-keyed streams, ``mixup_off_epoch``) in every worker."""
        self.mixer.set_epoch(epoch)

    def __call__(self, batch: Sequence[Any], _: Any = None) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        if len(batch) == 0:
            raise VarMixupError("batch is empty")
        labels = default_collate([item[1] for item in batch])
        images, targets = self.mixer(_item_images(batch), torch.as_tensor(labels))
        return to_uint8_images(images), targets

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.mixer!r})"
