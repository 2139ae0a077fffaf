"""``VarMixupDataset``: encode a dataset once, cache the posteriors, train without the encoder."""

from __future__ import annotations

import hashlib
import numbers
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ._checks import check_int, check_vae
from ._collate import _check_key, collate_images, dict_item_pair
from ._errors import VarMixupError
from ._io import read_header, read_tensors, remove_stale_temps, write_safetensors
from ._mixup import Posterior
from ._random import StreamSource
from ._tensors import module_device_dtype, to_float_image
from ._vae import VAEProtocol, check_fits_vae

__all__ = ["VarMixupDataset", "BatchRandomCropFlip"]

_CACHE_KEY = "varmixup_aug_latents"
_CACHE_VERSION = 2
# Random-augmentation detector: _PROBE_ITEMS distinct items, each read _PROBE_READS times. A transform that
# changes an item with probability p on each read passes only if all reads of every probed item agree; for a
# p=0.5 flip of a non-symmetric image that is 0.5**((_PROBE_READS - 1) * _PROBE_ITEMS) = 0.5**24 < 1e-7.
_PROBE_ITEMS = 8
_PROBE_READS = 4


def _hash_tensor(h: Any, name: str, t: Tensor, *, batched: bool = False) -> None:
    """Hash dtype, shape and bytes; with ``batched``, item by item, so the batch size does not matter."""
    t = t.detach().to("cpu").contiguous()
    for item in (t if batched else [t]):
        h.update(f"{name}:{item.dtype}:{tuple(item.shape)}".encode())
        if item.numel():
            h.update(item.reshape(-1).view(torch.uint8).numpy().tobytes())


def _find_modules(obj: Any, prefix: str, out: dict[str, Any], seen: set[int], depth: int) -> None:
    """The nn.Modules and tensors reachable from ``obj`` through attributes, lists, tuples and dicts."""
    if id(obj) in seen or depth > 4:
        return
    seen.add(id(obj))
    if isinstance(obj, (torch.nn.Module, Tensor)):
        out[prefix] = obj
        return
    if isinstance(obj, dict):
        items = [(str(k), v) for k, v in obj.items()]
    elif isinstance(obj, (list, tuple)):
        items = [(str(i), v) for i, v in enumerate(obj)]
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        items = list(vars(obj).items())
    else:
        return
    for key, value in items:
        _find_modules(value, f"{prefix}.{key}" if prefix else key, out, seen, depth + 1)


def _vae_fingerprint(vae: Any, cache_key: str | None) -> str:
    """A hash of the VAE's type, config and every weight and buffer, found inside any wrapper object.

    Raises when no weights can be found and no ``cache_key`` names them.
    """
    h = hashlib.sha256(f"{type(vae).__module__}.{type(vae).__qualname__}".encode())
    config = getattr(vae, "config", None)
    if config is not None:
        h.update(repr(config).encode())
    if cache_key is not None:
        h.update(b"cache_key:" + cache_key.encode())
    found: dict[str, Any] = {}
    _find_modules(vae, "", found, set(), 0)
    for prefix in sorted(found):
        obj = found[prefix]
        h.update(f"{prefix}:{type(obj).__qualname__}".encode())
        state = obj.state_dict(keep_vars=False) if isinstance(obj, torch.nn.Module) else {"": obj}
        for name in sorted(state):
            if isinstance(state[name], Tensor):
                _hash_tensor(h, f"{prefix}.{name}", state[name])
    if not found and cache_key is None:
        raise VarMixupError(
            f"cannot fingerprint the weights of the VAE ({type(vae).__name__}): it is not an nn.Module and holds "
            "no nn.Module or tensor in its attributes, so a cache could serve latents of other weights; pass "
            "cache_key='<a string that changes whenever the weights change>' or cache_path=None"
        )
    return h.hexdigest()


def _file_samples(dataset: Any) -> list[tuple[Any, Any]] | None:
    samples = getattr(dataset, "samples", None)
    if samples is None:
        samples = getattr(dataset, "imgs", None)
    if not isinstance(samples, (list, tuple)) or len(samples) != len(dataset):
        return None
    if not all(isinstance(s, (tuple, list)) and len(s) == 2 and isinstance(s[0], (str, os.PathLike)) for s in samples):
        return None
    return list(samples)


def _file_fingerprint(dataset: Any, samples: list[tuple[Any, Any]]) -> str:
    """Every file's path, size and modification time, every label, and the transforms' repr."""
    h = hashlib.sha256(f"files:{type(dataset).__qualname__}:{len(samples)}".encode())
    for name in ("transform", "target_transform", "transforms", "loader"):
        h.update(f"{name}={getattr(dataset, name, None)!r}".encode())
    for path, label in samples:
        try:
            st = os.stat(path)
        except OSError as exc:
            raise VarMixupError(f"dataset file {path} cannot be read ({exc})") from exc
        h.update(f"{os.fspath(path)}\0{st.st_size}\0{st.st_mtime_ns}\0{label!r}\n".encode())
    return h.hexdigest()


def _check_label(label: Any, index: int) -> int:
    """An integral class label as an int; float, bool, soft or negative labels are refused."""
    if isinstance(label, Tensor):
        if label.ndim != 0 or label.is_floating_point() or label.is_complex() or label.dtype == torch.bool:
            raise VarMixupError(
                f"dataset item {index}: VarMixupDataset needs integer class labels, got a {label.dtype} tensor of "
                f"shape {tuple(label.shape)}"
            )
        value = int(label)
    elif isinstance(label, numbers.Integral) and not isinstance(label, bool):
        value = int(label)
    else:
        raise VarMixupError(
            f"dataset item {index}: VarMixupDataset needs integer class labels, got {label!r} "
            f"({type(label).__name__}); float labels are not truncated"
        )
    if value < 0:
        raise VarMixupError(f"dataset item {index}: class label {value} is negative")
    return value


def _checked_collate(batch: list[tuple[int, Any]]) -> tuple[Tensor, Tensor]:
    """``(index, (image, label))`` items to float images and int64 labels, labels checked to be integral."""
    items = []
    for index, item in batch:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise VarMixupError(f"dataset item {index} must be an (image, label) pair, got {type(item).__name__}")
        items.append((item[0], _check_label(item[1], index)))
    images, labels = collate_images(items)
    if isinstance(images, Posterior):
        raise VarMixupError("dataset items are already Posteriors; wrap the image dataset, not a VarMixupDataset")
    return images, labels


def _check_images(images: Tensor, vae: Any, first: int) -> None:
    """Dtype, shape, channels, size, finiteness and value range, as the mixing op checks a batch."""
    from ._validate import check_image_values, float_images, image_stats, read_host  # the package's one validator

    where = f"dataset items {first}..{first + images.shape[0] - 1}"
    if isinstance(images, Tensor) and images.ndim != 4:
        raise VarMixupError(f"{where}: images must be (C, H, W), got {tuple(images.shape[1:])}")
    images = float_images(images, name=f"{where}: images")
    check_fits_vae(images, vae, where=where, resize_hint="resize them in the dataset's transform")
    low, high = getattr(vae, "input_range", (0.0, 1.0))
    seen_low, seen_high = read_host(image_stats(images))
    check_image_values(f"{where}: images", (seen_low, seen_high), (float(low), float(high)),
                       message="{name} hold values in [{min:.3g}, {max:.3g}] but the VAE expects [{low:g}, {high:g}]; "
                       "cached latents need un-normalised images (drop Normalize from the transform)")


class _Pairs(Dataset):
    """A dataset of dict items (Hugging Face ``datasets``) read as ``(image, label)`` pairs; tuples unchanged."""

    def __init__(self, base: Dataset, image_key: Any, label_key: Any) -> None:
        self.base, self.image_key, self.label_key = base, image_key, label_key

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Any:
        return dict_item_pair(self.base[i], self.image_key, self.label_key)


class _Indexed(Dataset):
    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[int, Any]:
        return i, self.base[i]


def _is_deterministic(dataset: Dataset) -> bool:
    """Read ``_PROBE_ITEMS`` items spread over the dataset ``_PROBE_READS`` times each; False if any read differs."""
    n = len(dataset)  # type: ignore[arg-type]
    count = min(n, _PROBE_ITEMS)
    indices = sorted({(k * n) // count for k in range(count)})
    for i in indices:
        first = to_float_image(dataset[i][0])
        for _ in range(_PROBE_READS - 1):
            again = to_float_image(dataset[i][0])
            if again.shape != first.shape or again.dtype != first.dtype or not torch.equal(  # bitwise: NaN == NaN
                    again.contiguous().reshape(-1).view(torch.uint8), first.contiguous().reshape(-1).view(torch.uint8)):
                return False
    return True


class VarMixupDataset(Dataset):
    """Wraps a labeled map-style dataset and serves the VAE posterior of every item.

    On construction it encodes every image once (batched, with a progress bar) and keeps
    ``mu`` and ``logvar``. Items are ``(Posterior(mu, logvar), label)``, which
    :class:`VarMixupCollate`, :class:`VarMixupLoader` and :class:`VarMixup` turn into
    decoded VarMixup batches: the encoder never runs during training.

    Augmentation: a cached latent describes one image, so the wrapped dataset must return
    the same image for the same index. A dataset with random per-sample augmentation is
    refused: 8 items spread over the dataset are each read 4 times, so a transform that changes an
    item on half of the reads (a p=0.5 flip) passes with probability 0.5**24 < 1e-7. Apply geometric
    augmentation after decoding instead, batch-wise on the device, with :class:`BatchRandomCropFlip`.
    Every batch is checked before it is encoded as the mixing op checks one (dtype, shape, channels,
    size, NaN/Inf, the VAE's value range); labels must be non-negative integers.

    Cache: with ``cache_path`` (a file, or a folder that gets one file per fingerprint),
    the posteriors are saved as safetensors, keyed by a fingerprint of the dataset and the
    VAE weights; a later run with the same data and VAE loads them instead of encoding. The
    dataset fingerprint covers every item: for a file-backed dataset (``samples``/``imgs``, e.g.
    ImageFolder) every file's path, size and mtime, every label and the transforms' repr (one
    ``stat`` per file); for any other dataset the bytes of every image and label (one extra read
    of the dataset, no encoding). The VAE fingerprint covers every weight and buffer of every
    ``nn.Module`` (or tensor) found in the VAE's attributes, plus ``cache_key``; a VAE with none
    needs ``cache_key``. An existing ``cache_path`` file not written by this class is refused,
    never overwritten; the folder is checked for writability before encoding; the write is atomic.
    Under ``torch.distributed`` rank 0 encodes and writes the file while the other ranks
    wait and then read it, so the encoder runs once in total; ``cache_path`` is then required.

    Dict items (Hugging Face ``datasets``): items may be dicts; the image is read from ``image_key``
    (default: the one of ``image``/``img``/``pixel_values`` present) and the label from ``label_key``
    (default: ``label``/``labels``), as in :class:`VarMixupCollate`; the other keys are ignored. Only
    the image is encoded, and items are still ``(Posterior(mu, logvar), label)`` tuples, so the batches
    from :class:`VarMixupCollate` are ``(images, targets)`` tuples, not dicts.

    Args:
        dataset: map-style dataset of ``(image, int label)`` pairs or of dicts (see above); images as
            tensors, PIL images or HWC numpy arrays (uint8 is scaled to [0, 1]), in the VAE's input range.
        vae: the VAE (:class:`VAEProtocol`).
        cache_path: where to cache the posteriors, or ``None``.
        batch_size: encoding batch size.
        device: where to run the encoder (default: the VAE's device).
        num_workers: DataLoader workers for reading the dataset while encoding.
        progress: show a tqdm bar.
        cache_key: a string that identifies the VAE's weights, mixed into the fingerprint; needed
            for a VAE that holds no ``nn.Module`` or tensor the fingerprint can find.
        image_key, label_key: the keys of dict items; ``None`` recognises the usual names.

    Shapes: ``mu``, ``logvar``: ``(N, *latent)``; ``labels``: ``(N,)``.
    """

    def __init__(self, dataset: Dataset, vae: VAEProtocol, *, cache_path: str | os.PathLike[str] | None = None,
                 batch_size: int = 256, device: torch.device | str | None = None, num_workers: int = 0,
                 progress: bool = True, cache_key: str | None = None, image_key: Any = None,
                 label_key: Any = None) -> None:
        check_vae(vae)
        self.image_key = _check_key("image_key", image_key)
        self.label_key = _check_key("label_key", label_key)
        check_int("batch_size", batch_size)
        check_int("num_workers", num_workers, minimum=0)
        if cache_key is not None and (not isinstance(cache_key, str) or not cache_key):
            raise VarMixupError(f"cache_key must be a non-empty string, got {cache_key!r}")
        try:
            n = len(dataset)  # type: ignore[arg-type]
        except TypeError as exc:
            raise VarMixupError("dataset must be a map-style dataset with __len__ and __getitem__") from exc
        if n == 0:
            raise VarMixupError("dataset is empty")
        pairs = _Pairs(dataset, image_key, label_key)  # dict items read as (image, label); tuples unchanged
        if not _is_deterministic(pairs):
            raise VarMixupError(
                "dataset returns a different image each time the same index is read (random augmentation?); "
                "cached latents would describe only one draw. Wrap the un-augmented dataset and apply geometric "
                "augmentation after decoding, e.g. BatchRandomCropFlip on the mixed batch"
            )
        self.dataset = dataset
        self._pairs = pairs
        self.vae = vae
        self._batch_size, self._num_workers, self._progress = batch_size, num_workers, progress
        first_images, _ = _checked_collate([(0, pairs[0])])
        _check_images(first_images, vae, 0)  # fail fast, before hashing or encoding
        self.fingerprint: str | None = None
        if cache_path is not None:
            vae_fp = _vae_fingerprint(vae, cache_key)
            samples = _file_samples(dataset)
            data_fp = _file_fingerprint(dataset, samples) if samples is not None else self._content_fingerprint()
            self.fingerprint = hashlib.sha256(f"v{_CACHE_VERSION}:{data_fp}:{vae_fp}".encode()).hexdigest()
        self.cache_file = self._resolve_cache(cache_path)
        self.mu, self.logvar, self.labels = self._load_or_encode(lambda: self._encode(batch_size, device, num_workers,
                                                                                      progress))

    def _batches(self, desc: str) -> Any:
        """``(first index, checked float images, int64 labels)`` over the whole dataset, in order."""
        loader = DataLoader(_Indexed(self._pairs), batch_size=self._batch_size, shuffle=False,
                            num_workers=self._num_workers, collate_fn=_checked_collate)
        first = 0
        for images, labels in tqdm(loader, desc=desc, unit="batch", disable=not self._progress, leave=False):
            _check_images(images, self.vae, first)
            yield first, images, labels
            first += images.shape[0]

    def _content_fingerprint(self) -> str:
        """A hash of every item's image and label (a dataset without files to stat): one read of the dataset."""
        h = hashlib.sha256(f"content:{type(self.dataset).__qualname__}:{len(self.dataset)}".encode())  # type: ignore[arg-type]
        label_hash = hashlib.sha256()
        for _, images, labels in self._batches("hashing dataset"):
            _hash_tensor(h, "images", images.float(), batched=True)
            _hash_tensor(label_hash, "labels", labels, batched=True)
        h.update(label_hash.digest())
        return h.hexdigest()

    def _load_or_encode(self, encode: Any) -> tuple[Tensor, Tensor, Tensor]:
        """Read the cache, or encode (and write the cache). Under torch.distributed only rank 0 encodes."""
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        world = torch.distributed.get_world_size() if distributed else 1
        if world > 1 and self.cache_file is None:
            raise VarMixupError(
                "cache_path is required under torch.distributed so that rank 0 encodes once and the other ranks "
                "read the file; pass cache_path on a filesystem all ranks share"
            )
        loaded = self._load_cache() if self.cache_file is not None else None
        if loaded is not None:
            if world > 1:
                torch.distributed.barrier()  # rank 0 waits for nothing here; keep the barrier count equal
            return loaded
        if world > 1 and torch.distributed.get_rank() != 0:
            torch.distributed.barrier()  # rank 0 is encoding
            loaded = self._load_cache()
            if loaded is None:
                raise VarMixupError(f"rank 0 did not write a usable latent cache at {self.cache_file}")
            return loaded
        loaded = encode()
        if self.cache_file is not None:
            self._save_cache(*loaded)
        if world > 1:
            torch.distributed.barrier()  # cache is written
        return loaded

    def _resolve_cache(self, cache_path: str | os.PathLike[str] | None) -> Path | None:
        """The cache file; refuses a file we did not write and a folder that cannot be created."""
        if cache_path is None:
            return None
        assert self.fingerprint is not None
        path = Path(cache_path).expanduser()
        try:
            if path.exists() and not path.is_dir():
                file = path
            elif path.is_dir() or str(cache_path).endswith(os.sep) or not path.suffix:
                path.mkdir(parents=True, exist_ok=True)
                file = path / f"latents-{self.fingerprint[:16]}.safetensors"
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                file = path
        except OSError as exc:
            raise VarMixupError(f"cache_path {path}: cannot create its folder ({exc})") from exc
        if file.is_dir():
            raise VarMixupError(f"cache_path {file} is a folder where the cache file should go; pass another path")
        if file.exists():
            try:
                read_header(file, _CACHE_KEY, writer="VarMixupDataset")
            except VarMixupError as exc:
                raise VarMixupError(
                    f"cache_path {file} exists and is not a latent cache written by VarMixupDataset; it is not "
                    f"overwritten. Delete it or pass another cache_path ({exc})"
                ) from exc
        remove_stale_temps(file)
        return file

    def _check_writable(self) -> None:
        """Before encoding: the cache's folder must accept a new file."""
        assert self.cache_file is not None
        try:
            with tempfile.NamedTemporaryFile(dir=self.cache_file.parent, prefix=".varmixup-write-test-"):
                pass
        except OSError as exc:
            raise VarMixupError(
                f"cache_path {self.cache_file}: its folder is not writable ({exc}); nothing was encoded. "
                "Pass a writable cache_path or cache_path=None"
            ) from exc

    def _load_cache(self) -> tuple[Tensor, Tensor, Tensor] | None:
        """The cached posteriors when the file is ours and its fingerprint matches; None to encode again."""
        assert self.cache_file is not None
        if not self.cache_file.is_file():
            return None
        try:
            meta = read_header(self.cache_file, _CACHE_KEY, writer="VarMixupDataset")
            if meta.get("fingerprint") != self.fingerprint or meta.get("version") != _CACHE_VERSION:
                return None
            tensors = read_tensors(self.cache_file)
            mu, logvar, labels = tensors["mu"], tensors["logvar"], tensors["labels"]
        except Exception:  # our file, but unreadable: encode again and replace it
            return None
        n = len(self.dataset)  # type: ignore[arg-type]
        if mu.shape[0] != n or logvar.shape != mu.shape or labels.shape != (n,):
            return None
        return mu, logvar, labels

    def _save_cache(self, mu: Tensor, logvar: Tensor, labels: Tensor) -> None:
        assert self.cache_file is not None
        meta = {"fingerprint": self.fingerprint, "version": _CACHE_VERSION, "items": int(labels.shape[0])}
        write_safetensors(self.cache_file, {"mu": mu, "logvar": logvar, "labels": labels}, _CACHE_KEY, meta)

    @torch.no_grad()
    def _encode(self, batch_size: int, device: Any, num_workers: int, progress: bool
                ) -> tuple[Tensor, Tensor, Tensor]:
        vae_device, vae_dtype = module_device_dtype(self.vae)
        vae_device = vae_device or torch.device("cpu")
        device = torch.device(device) if device is not None else vae_device
        if device != vae_device:
            raise VarMixupError(f"device={device} but the VAE is on {vae_device}; move the VAE with vae.to(device)")
        if self.cache_file is not None:
            self._check_writable()
        dtype = vae_dtype if vae_dtype is not None and vae_dtype.is_floating_point else torch.float32
        if isinstance(self.vae, torch.nn.Module):
            self.vae.eval()
        mus, logvars, labels = [], [], []
        for first, images, y in self._batches("encoding dataset"):
            out = self.vae.encode(images.to(device, dtype, non_blocking=True))
            if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(t, Tensor) for t in out)
                    and out[0].shape == out[1].shape and out[0].shape[0] == images.shape[0]):
                raise VarMixupError(
                    f"vae.encode must return (mu, logvar), two tensors of one shape (B, ...) for B images; for "
                    f"dataset items {first}.. it returned {type(out).__name__}")
            mus.append(out[0].float().cpu())
            logvars.append(out[1].float().cpu())
            labels.append(y)
        return torch.cat(mus), torch.cat(logvars), torch.cat(labels)

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, index: int) -> tuple[Posterior, int]:
        return Posterior(self.mu[index], self.logvar[index]), int(self.labels[index])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(items={len(self)}, latent={tuple(self.mu.shape[1:])}, "
                f"cache={str(self.cache_file) if self.cache_file else None})")


class BatchRandomCropFlip:
    """Per-sample random crop (after zero padding) and horizontal flip of a batch, on its device.

    For augmenting decoded VarMixup batches, where per-item transforms cannot run.
    Shapes: ``(B, C, H, W)`` in and out; dtype and device are kept.

    Args:
        padding: pixels of padding on each side before cropping back to ``(H, W)``.
        flip: flip each sample horizontally with probability 0.5.
        fill: padding value (in the images' value space).
        seed, generator: as in :class:`VarMixup`.

    Example:
        >>> import torch
        >>> aug = BatchRandomCropFlip(padding=4, seed=0)
        >>> aug(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 3, 32, 32])
    """

    def __init__(self, *, padding: int = 4, flip: bool = True, fill: float = 0.0, seed: int | None = None,
                 generator: torch.Generator | None = None) -> None:
        check_int("padding", padding, minimum=0)
        self.padding, self.flip, self.fill = padding, flip, float(fill)
        self._streams = StreamSource(seed=seed, generator=generator)

    def __call__(self, images: Tensor) -> Tensor:
        if not isinstance(images, Tensor) or images.ndim != 4:
            raise VarMixupError(f"images must be a (B, C, H, W) tensor, got {getattr(images, 'shape', type(images))}")
        b, _, h, w = images.shape
        g = self._streams.get()
        p = self.padding
        out = images
        if p:
            padded = torch.nn.functional.pad(images, (p, p, p, p), value=self.fill)
            oy = torch.randint(0, 2 * p + 1, (b,), generator=g).to(images.device)
            ox = torch.randint(0, 2 * p + 1, (b,), generator=g).to(images.device)
            rows = (oy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]
            cols = (ox[:, None] + torch.arange(w, device=images.device))[:, None, None, :]
            bidx = torch.arange(b, device=images.device)[:, None, None, None]
            cidx = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
            out = padded[bidx, cidx, rows, cols]
        if self.flip:
            flips = (torch.rand(b, generator=g) < 0.5).to(images.device)[:, None, None, None]
            out = torch.where(flips, out.flip(-1), out)
        return out
