"""``VarMixupCollate`` (a drop-in ``collate_fn``) and ``VarMixupLoader`` (VarMixup on the GPU)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import default_collate

from ._errors import VarMixupError
from ._mixup import Posterior, VarMixup
from ._options import MixupOptions
from ._tensors import module_device, resolve_device, to_float_image, to_float_images
from ._vae import VAEProtocol

__all__ = ["VarMixupCollate", "VarMixupLoader", "collate_images", "collate_unmixed", "dict_item_pair",
           "resolve_item_keys", "to_uint8_images"]

IMAGE_KEYS = ("image", "img", "pixel_values")
LABEL_KEYS = ("label", "labels")


def _check_key(name: str, key: Any) -> Any:
    if key is not None and (isinstance(key, bool) or not isinstance(key, (str, int))):
        raise VarMixupError(f"{name} must be a dict key (a str) or None, got {type(key).__name__} {key!r}")
    return key


def _pick_key(item: Mapping[Any, Any], given: Any, candidates: tuple[str, ...], what: str, arg: str) -> Any:
    seen = sorted(map(repr, item.keys()))
    if given is not None:
        if given not in item:
            raise VarMixupError(f"{arg}={given!r} is not a key of the dataset items; their keys are {', '.join(seen)}")
        return given
    found = [k for k in candidates if k in item]
    if len(found) == 1:
        return found[0]
    if not found:
        raise VarMixupError(
            f"dict dataset items need {what} key: none of {', '.join(map(repr, candidates))} among their keys "
            f"{', '.join(seen)}; name it with {arg}=..."
        )
    raise VarMixupError(
        f"dict dataset items hold several {what} keys ({', '.join(map(repr, found))}; keys seen: "
        f"{', '.join(seen)}); choose one with {arg}=..."
    )


def resolve_item_keys(item: Mapping[Any, Any], image_key: Any = None, label_key: Any = None) -> tuple[Any, Any]:
    """The image and label keys of a dict dataset item (as ``datasets`` returns them).

    A key given is used as is (and must be present); otherwise exactly one of ``image``/``img``/
    ``pixel_values`` (images) and of ``label``/``labels`` (labels) must be present. A missing or
    ambiguous key is a :class:`VarMixupError` that lists the item's keys.
    """
    return (_pick_key(item, image_key, IMAGE_KEYS, "an image", "image_key"),
            _pick_key(item, label_key, LABEL_KEYS, "a label", "label_key"))


def dict_item_pair(item: Any, image_key: Any = None, label_key: Any = None) -> Any:
    """A dict item as an ``(image, label)`` pair (see :func:`resolve_item_keys`); any other item unchanged."""
    if not isinstance(item, Mapping):
        return item
    ik, lk = resolve_item_keys(item, image_key, label_key)
    return item[ik], item[lk]


def _collate_other(batch: Sequence[Mapping[Any, Any]], key: Any) -> tuple[bool, Any]:
    """``default_collate`` of one key's values, or ``(False, None)`` where it cannot batch them."""
    if not all(key in item for item in batch):
        return False, None
    try:
        return True, default_collate([item[key] for item in batch])
    except (TypeError, RuntimeError, ValueError):
        return False, None


def _class_index(y: Any) -> int:
    """One class label as an int: a Python or numpy integer, a 0-d integer tensor, or a whole-number float;
    a fractional value (2.7), a bool or a string is refused rather than truncated or parsed."""
    value = y
    if isinstance(y, Tensor) or type(y).__module__ == "numpy":
        if getattr(y, "ndim", 0) != 0:
            raise VarMixupError(f"labels must be class indices or 1-d soft-label vectors, got shape {tuple(y.shape)}")
        value = y.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        hint = "; map class names to indices first (e.g. ImageFolder's class_to_idx)" if isinstance(value, str) else ""
        raise VarMixupError(f"labels must be integer class indices, got {type(y).__name__} {y!r}{hint}")
    if isinstance(value, numbers.Integral):
        return int(value)
    number = float(value)  # a Real: numbers.Real promises __float__, not __int__
    if not (math.isfinite(number) and number.is_integer()):
        raise VarMixupError(
            f"labels must be integer class indices, got {value!r}; a fractional label is not truncated: pass "
            "integer classes, or one soft-label vector per item"
        )
    return int(number)


def _is_row(y: Any) -> bool:
    return isinstance(y, (Tensor, np.ndarray)) and y.ndim == 1


def _same_label_kind(labels_in: Sequence[Any]) -> None:
    """Every label of a batch a class index, or every label a soft-label row: a mix has no one target form."""
    rows = [_is_row(y) for y in labels_in]
    if any(rows) and not all(rows):
        i, j = rows.index(False), rows.index(True)
        raise VarMixupError(
            f"labels in a batch must be all class indices or all soft-label (e.g. one-hot) vectors, got a class "
            f"index at item {i} ({labels_in[i]!r}) and a vector of shape {tuple(labels_in[j].shape)} at item {j}; "
            "make the dataset return one kind (e.g. int(row.argmax()) for one-hot rows)"
        )


def collate_labels(labels_in: Sequence[Any]) -> Tensor:
    """Labels of a batch: ``(B,)`` int64 class indices, or ``(B, K)`` float soft labels from 1-d tensors or
    numpy arrays (e.g. one-hot rows). Soft rows are checked by the mixing op (>= 0, summing to 1)."""
    first = labels_in[0]
    _same_label_kind(labels_in)
    if isinstance(first, (Tensor, np.ndarray)) and first.ndim == 1:
        rows = []
        for y in labels_in:
            if not (isinstance(y, (Tensor, np.ndarray)) and y.ndim == 1 and y.shape == first.shape):
                raise VarMixupError(
                    f"soft labels in a batch must all be 1-d vectors of length {first.shape[0]}, got "
                    f"{type(y).__name__} of shape {tuple(getattr(y, 'shape', ()))}"
                )
            t = torch.as_tensor(y)
            if t.dtype == torch.bool or t.is_complex():
                raise VarMixupError(f"soft labels must be float or integer vectors, got {t.dtype}")
            rows.append(t.float())
        return torch.stack(rows)
    return torch.tensor([_class_index(y) for y in labels_in], dtype=torch.long)


def collate_images(batch: Sequence[Any]) -> tuple[Tensor | Posterior, Tensor]:
    """Stack ``(image, label)`` pairs into ``(images, labels)``.

    Images may be tensors ``(C, H, W)`` (float, or uint8 scaled to [0, 1]), PIL images, HWC
    numpy arrays (e.g. from albumentations; uint8 scaled to [0, 1]), or :class:`Posterior`
    items from :class:`VarMixupDataset`. Labels may be ints, 0-d tensors or soft-label vectors.
    """
    if len(batch) == 0:
        raise VarMixupError("batch is empty")
    first = batch[0]
    if not isinstance(first, (tuple, list)) or len(first) != 2:
        raise VarMixupError(
            f"each dataset item must be an (image, label) pair, got {type(first).__name__}"
            + (f" of length {len(first)}" if isinstance(first, (tuple, list)) else "")
        )
    labels = collate_labels([item[1] for item in batch])
    if isinstance(first[0], Posterior):
        mu = torch.stack([item[0].mu for item in batch])
        logvar = torch.stack([item[0].logvar for item in batch])
        return Posterior(mu, logvar), labels
    images = [to_float_image(item[0]) for item in batch]
    shapes = {tuple(im.shape) for im in images}
    if len(shapes) > 1:
        raise VarMixupError(f"images in a batch must share one shape (C, H, W), got {sorted(shapes)}; resize them")
    dtypes = {im.dtype for im in images}
    dtype = images[0].dtype if len(dtypes) == 1 else torch.float32
    return torch.stack([im.to(dtype) for im in images]), labels


def collate_unmixed(batch: Sequence[Any], image_key: Any = None, label_key: Any = None) -> Any:
    """What :class:`VarMixupCollate` collates, without mixing: ``(images, labels)`` for pairs, a dict for dict items
    (images under the image key, ``(B,)`` int64 labels under the label key, every other key as in
    :class:`VarMixupCollate`). For evaluation batches that must match the training batches' preprocessing."""
    if len(batch) and isinstance(batch[0], Mapping):
        ik, lk = resolve_item_keys(batch[0], image_key, label_key)
        images, labels = collate_images([(item[ik], item[lk]) for item in batch])
        out: dict[Any, Any] = {}
        for key in batch[0]:
            if key in (ik, lk):
                out[key] = images if key == ik else labels
            else:
                kept, value = _collate_other(batch, key)
                if kept:
                    out[key] = value
        return out
    return collate_images(batch)


def to_uint8_images(images: Tensor) -> Tensor:
    """Float images in [0, 1] as ``uint8`` 0..255 (rounded, clamped), as timm's ``fast_collate`` and
    ``FastCollateMixup`` hand them to timm's ``PrefetchLoader``, which normalises with ``mean * 255, std * 255``."""
    if not images.is_floating_point():
        raise VarMixupError(f"images must be float in [0, 1] to become uint8, got {images.dtype}")
    return images.mul(255).round_().clamp_(0, 255).to(torch.uint8)


class VarMixupCollate:
    """A ``collate_fn`` that returns VarMixup batches ``(images, soft_targets)``.

    It takes what ``default_collate`` takes for image classification: a list of
    ``(image, label)`` pairs (see :func:`collate_images` for the accepted image types),
    stacks them, and applies :class:`VarMixup` with the arguments given here.

    Shapes: images ``(B, C, H, W)`` float, targets ``(B, num_classes)``.

    Workers: the collate pickles and runs in DataLoader workers under fork, spawn and
    forkserver, with the VAE on the CPU. Each worker, distributed rank and epoch draws from
    its own random stream derived from ``seed`` alone: worker ``k`` of the ``e``-th epoch of
    non-persistent workers draws stream ``(seed, rank, k, e)`` (a shared-memory counter per worker
    id, made at construction, counts the epochs), a persistent worker's stream moves on across
    epochs, so the same ``seed`` repeats a run without seeding torch and no epoch repeats another.
    :meth:`set_epoch` (optional) keys the streams by the epoch number instead. A CUDA ``device`` is refused
    inside a worker, because initialising CUDA in a forked process breaks it; to generate on the GPU with
    workers, collate with workers and mix in the main process with :class:`VarMixupLoader`.

    Dict items (Hugging Face ``datasets``): items may be dicts such as ``{"img": PIL image, "label": 3,
    ...}``. The image key is ``image_key``, or else the one of ``image``/``img``/``pixel_values`` that is
    present; the label key is ``label_key``, or else the one of ``label``/``labels`` (none present, or two,
    is an error that lists the keys). The batch is then a dict: the image key holds the mixed images
    ``(B, C, H, W)`` and the label key the soft targets ``(B, num_classes)``. Every other key is passed,
    with the values of all items, to ``torch.utils.data.default_collate``: it is **kept** (as
    ``default_collate`` batches it: tensors, numpy arrays and numbers stacked into a tensor, strings
    as a list, dicts and sequences recursively) when every item has it and ``default_collate`` accepts
    the values, and **dropped** otherwise (``None``, PIL images, tensors of differing shapes, a key
    missing from some items: whatever makes ``default_collate`` raise). Kept keys stay on the CPU and
    come in the first item's key order; they are not mixed (a mixed sample is two items). Tuple
    items ``(image, label)`` work as before and give ``(images, targets)``.

    Switching mixing off (timm's ``--mixup-off-epoch`` and ``Mixup.mixup_enabled``): with
    ``mixup_off_epoch=e``, batches of the epochs ``>= e`` given to :meth:`set_epoch` pass through
    unmixed; setting ``collate.mixup_enabled = False`` does the same from the next batch. Both live in
    shared memory, so persistent workers see a change made in the main process. An unmixed batch has
    its images as given (not reconstructed) and one-hot, label-smoothed targets; a batch of cached
    latents (:class:`Posterior`) has no pixels, so it is decoded from the posterior mean.

    Args:
        vae: the VAE (any :class:`VAEProtocol`); ``None`` only with ``space="input"``.
        num_classes, alpha, lam_per_sample, prob, posterior, space, residual, label_smoothing,
            input_normalization, autocast_dtype, mixup_off_epoch: the options, as in :func:`varmixup`
            (``mixup_off_epoch``: see above).
        seed, generator: the random streams, as in :class:`VarMixup`.
        device: where to run the VAE; moves the VAE there. ``None`` keeps the VAE where it
            is and expects the images there (the CPU for plain DataLoader batches).
            Outputs are returned on this device.
        image_key, label_key: the keys of dict items (see above); ``None`` recognises the usual names.

    Example:
        >>> import torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> from varmixup_aug import VarMixupCollate
        >>> ds = TensorDataset(torch.rand(8, 3, 32, 32), torch.arange(8) % 4)
        >>> collate = VarMixupCollate(None, num_classes=4, space="input", seed=0)
        >>> loader = DataLoader(ds, batch_size=4, collate_fn=collate)
        >>> x, t = next(iter(loader))
        >>> tuple(x.shape), tuple(t.shape)
        ((4, 3, 32, 32), (4, 4))
    """

    def __init__(self, vae: VAEProtocol | None, *, num_classes: int, alpha: float = 1.0, lam_per_sample: bool = True,
                 prob: float = 1.0, posterior: Literal["sample", "mean"] = "sample",
                 space: Literal["latent", "input"] = "latent", residual: bool = False, label_smoothing: float = 0.0,
                 input_normalization: tuple[Sequence[float], Sequence[float]] | None = None,
                 autocast_dtype: torch.dtype | None = None, mixup_off_epoch: int | None = None,
                 seed: int | None = None, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None, image_key: Any = None, label_key: Any = None) -> None:
        options = MixupOptions(num_classes=num_classes, alpha=alpha, lam_per_sample=lam_per_sample, prob=prob,
                               posterior=posterior, space=space, residual=residual, label_smoothing=label_smoothing,
                               input_normalization=input_normalization, autocast_dtype=autocast_dtype,
                               mixup_off_epoch=mixup_off_epoch)
        self.image_key = _check_key("image_key", image_key)
        self.label_key = _check_key("label_key", label_key)
        self.device = resolve_device(device) if device is not None else None
        if self.device is not None and isinstance(vae, torch.nn.Module):
            vae = vae.to(self.device)
        self.mixer = VarMixup(vae, **options.as_kwargs(), seed=seed, generator=generator)

    def set_epoch(self, epoch: int) -> None:
        """Key the seeded streams by ``epoch`` in every worker (see :meth:`VarMixup.set_epoch`), and switch
        mixing off from ``mixup_off_epoch`` on; call it before ``iter(loader)`` of that epoch, like
        ``DistributedSampler.set_epoch``."""
        self.mixer.set_epoch(epoch)

    @property
    def mixup_enabled(self) -> bool:
        """The switch of :attr:`VarMixup.mixup_enabled`, seen by every DataLoader worker (persistent ones too)."""
        return self.mixer.mixup_enabled

    @mixup_enabled.setter
    def mixup_enabled(self, value: bool) -> None:
        self.mixer.mixup_enabled = value

    def __call__(self, batch: Sequence[Any]) -> Any:
        if len(batch) and isinstance(batch[0], Mapping):
            return self._call_dicts(batch)
        return self._call_pairs(batch)

    def _call_dicts(self, batch: Sequence[Any]) -> dict[Any, Any]:
        first = batch[0]
        image_key, label_key = resolve_item_keys(first, self.image_key, self.label_key)
        pairs = []
        for i, item in enumerate(batch):
            if not isinstance(item, Mapping) or image_key not in item or label_key not in item:
                raise VarMixupError(
                    f"batch item {i} is not a dict with the keys {image_key!r} and {label_key!r} of the first item; "
                    f"got {type(item).__name__}" + (f" with keys {sorted(map(repr, item))}" if isinstance(item, Mapping)
                                                     else ""))
            pairs.append((item[image_key], item[label_key]))
        images, targets = self._call_pairs(pairs)
        out: dict[Any, Any] = {}
        for key in first:
            if key == image_key:
                out[key] = images
            elif key == label_key:
                out[key] = targets
            else:
                kept, value = _collate_other(batch, key)
                if kept:
                    out[key] = value
        return out

    def _call_pairs(self, batch: Sequence[Any]) -> tuple[Tensor, Tensor]:
        if self.device is not None and self.device.type != "cpu" and torch.utils.data.get_worker_info() is not None:
            raise VarMixupError(
                f"VarMixupCollate(device={str(self.device)!r}) cannot run inside a DataLoader worker: CUDA must not "
                "be initialised in a worker process. Use num_workers=0, or collate on the CPU in the workers and "
                "mix on the GPU with VarMixupLoader(loader, VarMixup(vae.cuda(), ...), device='cuda')"
            )
        images, labels = collate_images(batch)
        if self.device is not None:
            nb = self.device.type == "cuda"
            images = images.to(self.device, non_blocking=nb)
            labels = labels.to(self.device, non_blocking=nb)
        return self.mixer(images, labels)

    def __repr__(self) -> str:
        keys = ("" if self.image_key is None and self.label_key is None
                else f", image_key={self.image_key!r}, label_key={self.label_key!r}")
        return f"{type(self).__name__}({self.mixer!r}, device={self.device}{keys})"


class VarMixupLoader:
    """Wraps a DataLoader of plain ``(images, labels)`` batches and applies VarMixup on ``device``.

    The pattern for generating on the GPU with many workers: the workers decode and
    collate on the CPU (``pin_memory=True`` helps), this wrapper copies each batch with
    ``non_blocking=True`` and runs the VAE on the GPU in the main process.

    Args:
        loader: any iterable of ``(images, labels)`` batches (``images (B, C, H, W)``
            float, or a :class:`Posterior`).
        mixer: a :class:`VarMixup` whose VAE lives on ``device``.
        device: where to move batches; default: the VAE's device.

    Example:
        >>> import torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> from varmixup_aug import VarMixup, VarMixupLoader
        >>> ds = TensorDataset(torch.rand(8, 3, 8, 8), torch.arange(8) % 2)
        >>> loader = VarMixupLoader(DataLoader(ds, batch_size=4), VarMixup(None, num_classes=2, space="input"))
        >>> len(loader), tuple(next(iter(loader))[1].shape)
        (2, (4, 2))
    """

    def __init__(self, loader: Iterable[Any], mixer: VarMixup, *, device: torch.device | str | None = None) -> None:
        if not isinstance(mixer, VarMixup):
            raise VarMixupError(f"mixer must be a VarMixup, got {type(mixer).__name__}")
        self.loader, self.mixer = loader, mixer
        self.device = module_device(mixer.vae) if device is None else resolve_device(device)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        nb = self.device.type == "cuda"
        for batch in self.loader:
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise VarMixupError("VarMixupLoader expects the loader to yield (images, labels) batches")
            images, labels = batch
            if isinstance(images, Posterior):
                images = images.to(self.device, non_blocking=nb)
            else:
                images = to_float_images(images.to(self.device, non_blocking=nb))
            yield self.mixer(images, labels.to(self.device, non_blocking=nb))
