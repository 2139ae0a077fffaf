"""``VarMixupDataset``: encode a dataset once, cache the posteriors, train without the encoder."""

from __future__ import annotations

import hashlib
import numbers
import os
import tempfile
import warnings
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from . import _fingerprint as fingerprints
from ._cache import (
    CACHE_VERSION,
    SHARD_BYTES,
    Layout,
    Spec,
    check_disk,
    find_manifest,
    missing_shards,
    open_shards,
    plan_shards,
    prepare_folder,
    read_owner,
    write_manifest,
    write_owner,
    write_shard,
)
from ._checks import check_int, check_vae
from ._collate import _check_key, collate_images, dict_item_pair
from ._errors import VarMixupError
from ._lock import file_lock
from ._mixup import Posterior
from ._random import StreamSource
from ._tensors import module_device_dtype, to_float_image
from ._vae import VAEProtocol, call_encode, check_fits_vae, eval_mode

__all__ = ["VarMixupDataset", "BatchRandomCropFlip"]

_FILE_MODES = ("stat", "content")
# Random-augmentation detector: _PROBE_ITEMS distinct items, each read _PROBE_READS times. A transform that
# changes an item with probability p on each read passes only if all reads of every probed item agree; for a
# p=0.5 flip of a non-symmetric image that is 0.5**((_PROBE_READS - 1) * _PROBE_ITEMS) = 0.5**24 < 1e-7.
_PROBE_ITEMS = 8
_PROBE_READS = 4


def _file_samples(dataset: Any) -> list[tuple[Any, Any]] | None:
    samples = getattr(dataset, "samples", None)
    if samples is None:
        samples = getattr(dataset, "imgs", None)
    if not isinstance(samples, (list, tuple)) or len(samples) != len(dataset):
        return None
    if not all(isinstance(s, (tuple, list)) and len(s) == 2 and isinstance(s[0], (str, os.PathLike)) for s in samples):
        return None
    return list(samples)


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
    size, NaN/Inf, the VAE's value range); labels must be non-negative integers. The VAE is called
    through the package's VAE layer: ``encode`` may return ``(mu, logvar)`` or a
    ``torch.distributions.Normal``, and it runs in eval mode.

    Cache (``cache_path``, a manifest file or a folder that gets one manifest per fingerprint; see
    ``docs/latent-cache.md``): the posteriors are streamed to disk in shards of at most ``shard_bytes``
    (safetensors, each written atomically), so the builder holds one shard in memory, and are then read
    memory-mapped, by the builder as by any later process. The cache is keyed by a fingerprint of the
    data, the transforms and the VAE weights that is the same in every process and on every rank:

    - a file-backed dataset (``samples``/``imgs``, e.g. ImageFolder): every file's path, size, mtime, ctime
      and inode (``file_fingerprint="stat"``, one ``stat`` per file; a file replaced by ``cp -p`` gets a
      new ctime) or the sha256 of its bytes (``"content"``, one read of every file; the same on every
      machine), every label, and the dataset's other attributes: transforms and loader by their
      parameters and by code (bytecode, constants, closure values, the globals they read);
    - any other dataset: the bytes of every image and label it returns (one extra read, no encoding);
    - the VAE: every weight and buffer of every ``nn.Module`` it holds (attributes, bound methods, dicts,
      lists), plus ``cache_key``.

    What cannot be fingerprinted (an object with no visible state, a VAE without modules) is refused
    unless ``cache_key`` is given. A second process with the same arguments opens the cache without
    encoding; concurrent builders take a file lock (one builds, the others wait up to ``lock_timeout``
    seconds and reuse it); an interrupted build resumes from its finished shards; a truncated or corrupt
    cache of ours is reported in a warning and encoded again; an existing ``cache_path`` file not written
    by this class is refused, never overwritten. Before encoding, the folder must be writable and its
    file system must have room for the cache. Under ``torch.distributed`` every rank computes the
    fingerprint (they must agree), the ranks encode their share of the shards in parallel, and every rank
    then reads all of them; ``cache_path`` is then required, on a file system all ranks share.

    Dict items (Hugging Face ``datasets``): items may be dicts; the image is read from ``image_key``
    (default: the one of ``image``/``img``/``pixel_values`` present) and the label from ``label_key``
    (default: ``label``/``labels``), as in :class:`VarMixupCollate`; the other keys are ignored. Only
    the image is encoded, and items are still ``(Posterior(mu, logvar), label)`` tuples, so the batches
    from :class:`VarMixupCollate` are ``(images, targets)`` tuples, not dicts.

    Args:
        dataset: map-style dataset of ``(image, int label)`` pairs or of dicts (see above); images as
            tensors, PIL images or HWC numpy arrays (uint8 is scaled to [0, 1]), in the VAE's input range.
        vae: the VAE (:class:`VAEProtocol`).
        cache_path: where to cache the posteriors, or ``None`` (encode into memory).
        batch_size: encoding batch size.
        device: where to run the encoder (default: the VAE's device).
        num_workers: DataLoader workers for reading the dataset while encoding.
        progress: show a tqdm bar.
        cache_key: a string mixed into the fingerprint that changes whenever something it cannot see
            changes: needed for a VAE that holds no ``nn.Module``, and for transforms or dataset attributes
            that cannot be fingerprinted (those then count by their type only).
        image_key, label_key: the keys of dict items; ``None`` recognises the usual names.
        file_fingerprint: ``"stat"`` or ``"content"``, how the files of a file-backed dataset are checked.
        shard_bytes: the most bytes of posteriors per shard file (default 64 MiB).
        lock_timeout: seconds to wait for another process that is building the same cache.

    Shapes: ``mu``, ``logvar``: ``(N, *latent)`` in the encoder's dtype; ``labels``: ``(N,)`` int64.
    ``mu`` and ``logvar`` of a cache of several shards are concatenated (copied) when read; items are not.
    """

    def __init__(self, dataset: Dataset, vae: VAEProtocol, *, cache_path: str | os.PathLike[str] | None = None,
                 batch_size: int = 256, device: torch.device | str | None = None, num_workers: int = 0,
                 progress: bool = True, cache_key: str | None = None, image_key: Any = None,
                 label_key: Any = None, file_fingerprint: str = "stat", shard_bytes: int = SHARD_BYTES,
                 lock_timeout: float = 3600.0) -> None:
        check_vae(vae)
        self.image_key = _check_key("image_key", image_key)
        self.label_key = _check_key("label_key", label_key)
        check_int("batch_size", batch_size)
        check_int("num_workers", num_workers, minimum=0)
        check_int("shard_bytes", shard_bytes)
        if cache_key is not None and (not isinstance(cache_key, str) or not cache_key):
            raise VarMixupError(f"cache_key must be a non-empty string, got {cache_key!r}")
        if file_fingerprint not in _FILE_MODES:
            raise VarMixupError(f"file_fingerprint must be one of {_FILE_MODES}, got {file_fingerprint!r}")
        if isinstance(lock_timeout, bool) or not isinstance(lock_timeout, (int, float)) or not lock_timeout >= 0:
            raise VarMixupError(f"lock_timeout must be a number of seconds >= 0, got {lock_timeout!r}")
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
        self._shard_bytes, self._lock_timeout = shard_bytes, float(lock_timeout)
        first_images, _ = _checked_collate([(0, pairs[0])])
        _check_images(first_images, vae, 0)  # fail fast, before hashing or encoding
        self._device, self._dtype = self._encoder_device(device)
        world = _world_size()
        if world > 1 and cache_path is None:
            raise VarMixupError(
                "cache_path is required under torch.distributed so that each rank encodes a share once and every "
                "rank reads the files; pass cache_path on a filesystem all ranks share"
            )
        self.fingerprint: str | None = None
        if cache_path is not None:
            self.fingerprint = self._fingerprint(cache_key, file_fingerprint)
        self.cache_file = self._resolve_cache(cache_path)
        self._shards: list[dict[str, Tensor]] = []
        self._head: tuple[Tensor, Tensor, Tensor] | None = None  # the size probe's batch, until the build ends
        if self.cache_file is None:
            mu, logvar, labels = self._encode_range(0, n, None, None)
            self._set_shards([{"mu": mu, "logvar": logvar, "labels": labels}])
        else:
            self._open_or_build(Layout(self.cache_file))
            self._head = None

    # ------------------------------------------------------------------ fingerprint

    def _fingerprint(self, cache_key: str | None, mode: str) -> str:
        """The cache's key; under torch.distributed every rank computes it and they must agree."""
        vae_fp = fingerprints.vae_fingerprint(self.vae, cache_key)
        samples = _file_samples(self.dataset)
        if samples is not None:
            data_fp = fingerprints.file_fingerprint(self.dataset, samples, mode=mode, lenient=cache_key is not None)
        else:
            data_fp = self._content_fingerprint()
        fingerprint = hashlib.sha256(f"v{CACHE_VERSION}:{data_fp}:{vae_fp}".encode()).hexdigest()
        if _world_size() > 1:
            seen: list[Any] = [None] * _world_size()
            torch.distributed.all_gather_object(seen, (data_fp, vae_fp))
            for part, name in ((0, "data and transforms"), (1, "VAE weights")):
                ranks = [r for r, s in enumerate(seen) if s[part] != seen[0][part]]
                if ranks:
                    hint = (" (file_fingerprint='stat' sees each copy's inodes: use one shared copy of the files "
                            "or file_fingerprint='content')" if part == 0 and samples is not None else "")
                    raise VarMixupError(
                        f"ranks {ranks} see other {name} than rank 0, so they cannot share a latent cache{hint}"
                    )
        return fingerprint

    def _content_fingerprint(self) -> str:
        """A hash of every item's image and label (a dataset without files to stat): one read of the dataset."""
        n = len(self.dataset)  # type: ignore[arg-type]
        h = hashlib.sha256(f"content:{type(self.dataset).__qualname__}:{n}".encode())
        label_hash = hashlib.sha256()
        for _, images, labels in self._batches("hashing dataset", range(n), None):
            fingerprints.hash_tensor(h, "images", images.float(), batched=True)
            fingerprints.hash_tensor(label_hash, "labels", labels, batched=True)
        h.update(label_hash.digest())
        return h.hexdigest()

    # ------------------------------------------------------------------ encoding

    def _encoder_device(self, device: Any) -> tuple[torch.device, torch.dtype]:
        vae_device, vae_dtype = module_device_dtype(self.vae)
        vae_device = vae_device or torch.device("cpu")
        device = torch.device(device) if device is not None else vae_device
        if device != vae_device:
            raise VarMixupError(f"device={device} but the VAE is on {vae_device}; move the VAE with vae.to(device)")
        dtype = vae_dtype if vae_dtype is not None and vae_dtype.is_floating_point else torch.float32
        return device, dtype

    def _batches(self, desc: str, indices: range, bar: Any) -> Any:
        """``(first index, checked float images, int64 labels)`` over ``indices``, in order."""
        loader = DataLoader(Subset(_Indexed(self._pairs), indices), batch_size=self._batch_size, shuffle=False,
                            num_workers=self._num_workers, collate_fn=_checked_collate)
        own = bar is None
        if own:
            bar = tqdm(total=len(indices), desc=desc, unit="img", disable=not self._progress, leave=False)
        first = indices.start
        try:
            for images, labels in loader:
                _check_images(images, self.vae, first)
                yield first, images, labels
                first += images.shape[0]
                bar.update(images.shape[0])
        finally:
            if own:
                bar.close()

    @torch.no_grad()
    def _encode_range(self, start: int, stop: int, spec: Spec | None, bar: Any) -> tuple[Tensor, Tensor, Tensor]:
        """Encode items ``start..stop-1`` into preallocated CPU tensors (one shard's worth of memory); the
        items the size probe encoded already are copied from it."""
        out: list[Tensor] = []
        labels_out = torch.empty(stop - start, dtype=torch.int64)
        head = self._head if self._head is not None and start < self._head[2].shape[0] else None
        begin = start
        if head is not None:
            spec = spec or Spec(tuple(head[0].shape[1:]), head[0].dtype)
            begin = min(stop, head[2].shape[0])
            self._store(out, labels_out, spec, stop - start, 0, *(t[start:begin] for t in head))
            bar.update(begin - start)
        with eval_mode(self.vae):
            for first, images, labels in self._batches("encoding dataset", range(begin, stop), bar):
                mu, logvar = call_encode(self.vae, images.to(self._device, self._dtype, non_blocking=True))
                spec = spec or Spec(tuple(mu.shape[1:]), mu.dtype)
                if tuple(mu.shape[1:]) != spec.shape:
                    raise VarMixupError(
                        f"vae.encode returned latents of shape {tuple(mu.shape[1:])} for dataset items {first}.., but "
                        f"{spec.shape} for the items before; every image must give one latent shape"
                    )
                self._store(out, labels_out, spec, stop - start, first - start, mu, logvar, labels)
        return out[0], out[1], labels_out

    @staticmethod
    def _store(out: list[Tensor], labels_out: Tensor, spec: Spec, rows: int, at: int, mu: Tensor, logvar: Tensor,
               labels: Tensor) -> None:
        """Copy a batch into the preallocated ``out`` (allocated on the first batch)."""
        if not out:
            out.extend(torch.empty((rows, *spec.shape), dtype=spec.dtype) for _ in range(2))
        span = slice(at, at + mu.shape[0])
        out[0][span] = mu.detach().to("cpu", spec.dtype)
        out[1][span] = logvar.detach().to("cpu", spec.dtype)
        labels_out[span] = labels

    def _probe(self) -> Spec:
        """The latent shape and dtype, from encoding the first batch (kept: it is not encoded again)."""
        n = len(self.dataset)  # type: ignore[arg-type]
        self._head = None
        self._head = self._encode_range(0, min(n, self._batch_size), None, _NoBar())
        return Spec(tuple(self._head[0].shape[1:]), self._head[0].dtype)

    # ------------------------------------------------------------------ the cache

    def _resolve_cache(self, cache_path: str | os.PathLike[str] | None) -> Path | None:
        """The cache's manifest file; a folder ``cache_path`` gets one manifest per fingerprint."""
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
        return file

    def _open_or_build(self, layout: Layout) -> None:
        n = len(self.dataset)  # type: ignore[arg-type]
        assert self.fingerprint is not None
        fingerprint = self.fingerprint
        meta = _on_rank0(lambda: _found(layout, fingerprint, n))
        if meta is None:
            meta = self._build(layout)
        self._set_shards(open_shards(layout, meta))

    def _build(self, layout: Layout) -> dict[str, Any]:
        """Encode the missing shards (each rank its share) and write the manifest, under the file lock."""
        n = len(self.dataset)  # type: ignore[arg-type]
        fingerprint = self.fingerprint
        assert fingerprint is not None
        with ExitStack() as held:
            job = _on_rank0(lambda: self._start_build(layout, held))
            if job["meta"] is not None:
                return job["meta"]
            spec = Spec.from_json(job["spec"])
            missing = [tuple(r) for r in job["missing"]]
            rank, world = _rank(), _world_size()
            mine = missing[rank::world]
            error = None
            try:
                bar = tqdm(total=sum(b - a for a, b in mine), desc="encoding dataset", unit="img",
                           disable=not self._progress, leave=False)
                with bar:
                    for start, stop in mine:
                        mu, logvar, labels = self._encode_range(start, stop, spec, bar)
                        write_shard(layout, fingerprint, start, mu, logvar, labels)
                        del mu, logvar, labels
            except Exception as exc:
                if world == 1:
                    raise
                error = f"{type(exc).__name__}: {exc}"
            _raise_any(error)
            plan = [tuple(r) for r in job["plan"]]
            return _on_rank0(lambda: _finish(layout, fingerprint, n, spec, plan))  # type: ignore[arg-type]

    def _start_build(self, layout: Layout, held: ExitStack) -> dict[str, Any]:
        """Rank 0: take the lock; when another process finished the cache meanwhile, its manifest; else the
        shards still to encode, after checking that the folder is writable and the disk has room."""
        n = len(self.dataset)  # type: ignore[arg-type]
        assert self.fingerprint is not None
        prepare_folder(layout)
        held.enter_context(file_lock(layout.lock, timeout=self._lock_timeout,
                                     what=f"building the latent cache {layout.manifest.name}",
                                     hint="it is building this latent cache; wait for it, or raise lock_timeout"))
        meta = _found(layout, self.fingerprint, n)
        if meta is not None:
            return {"meta": meta}
        self._check_writable()
        resumed = read_owner(layout, self.fingerprint, n)
        spec, plan = resumed if resumed is not None else (None, None)
        if spec is None or plan is None:
            spec = self._probe()
            plan = plan_shards(n, spec, self._shard_bytes)
        notes: list[str] = []
        missing = missing_shards(layout, plan, self.fingerprint, notes)
        for note in notes:
            warnings.warn(note, UserWarning, stacklevel=5)
        check_disk(layout, spec, missing)
        write_owner(layout, self.fingerprint, n, spec, plan)
        return {"meta": None, "spec": spec.to_json(), "plan": plan, "missing": missing}

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

    # ------------------------------------------------------------------ reading

    def _set_shards(self, shards: list[dict[str, Tensor]]) -> None:
        self._shards = shards
        self._mus = [s["mu"] for s in shards]
        self._logvars = [s["logvar"] for s in shards]
        self.labels = shards[0]["labels"] if len(shards) == 1 else torch.cat([s["labels"] for s in shards])
        self._per = int(shards[0]["labels"].shape[0])
        self._n = int(self.labels.shape[0])
        self._labels = self.labels.numpy()  # indexing numpy is ~10x cheaper than a tensor, per item

    @property
    def mu(self) -> Tensor:
        return self._mus[0] if len(self._mus) == 1 else torch.cat(self._mus)

    @property
    def logvar(self) -> Tensor:
        return self._logvars[0] if len(self._logvars) == 1 else torch.cat(self._logvars)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (DataLoader workers under spawn): a cache's tensors are mapped again, not copied."""
        state = dict(self.__dict__)
        if self.cache_file is not None:
            for name in ("_shards", "_mus", "_logvars", "_labels", "labels"):
                state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "_shards" not in state:
            assert self.cache_file is not None and self.fingerprint is not None
            meta = _found(Layout(self.cache_file), self.fingerprint, self._n)
            if meta is None:
                raise VarMixupError(f"latent cache {self.cache_file} changed or vanished since it was opened")
            self._set_shards(open_shards(Layout(self.cache_file), meta))

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> tuple[Posterior, int]:
        i = index + self._n if index < 0 else index
        shard, row = divmod(i, self._per)
        if i < 0 or shard >= len(self._mus) or i >= self._n:
            raise IndexError(f"index {index} is out of range for {self._n} items")
        return Posterior(self._mus[shard][row], self._logvars[shard][row]), int(self._labels[i])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(items={len(self)}, latent={tuple(self._mus[0].shape[1:])}, "
                f"cache={str(self.cache_file) if self.cache_file else None})")


class _NoBar:
    def update(self, n: int) -> None:
        pass


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _world_size() -> int:
    return torch.distributed.get_world_size() if _distributed() else 1


def _rank() -> int:
    return torch.distributed.get_rank() if _distributed() else 0


def _on_rank0(fn: Callable[[], Any]) -> Any:
    """``fn()`` on rank 0, its result (or its error) sent to every rank; just ``fn()`` without distribution."""
    if _world_size() == 1:
        return fn()
    box: list[Any] = [None]
    error: BaseException | None = None
    if _rank() == 0:
        try:
            box = [("ok", fn())]
        except Exception as exc:  # every rank raises, so none waits at a collective for ever
            message = str(exc) if isinstance(exc, VarMixupError) else f"{type(exc).__name__}: {exc}"
            error, box = exc, [("error", message)]
    torch.distributed.broadcast_object_list(box, src=0)
    if error is not None:
        raise error
    kind, value = box[0]
    if kind == "error":
        raise VarMixupError(f"rank 0: {value}")
    return value


def _raise_any(error: str | None) -> None:
    """Under torch.distributed: every rank raises when any rank failed (named in the error)."""
    if _world_size() == 1:
        return
    errors: list[Any] = [None] * _world_size()
    torch.distributed.all_gather_object(errors, error)
    failed = [(r, e) for r, e in enumerate(errors) if e is not None]
    if failed:
        rank, message = failed[0]
        raise VarMixupError(f"rank {rank} failed to encode its latent cache shards: {message}")


def _found(layout: Layout, fingerprint: str, items: int) -> dict[str, Any] | None:
    """The finished cache's manifest, or None; warns about a cache of ours that is truncated or corrupt."""
    notes: list[str] = []
    meta = find_manifest(layout, fingerprint, items, notes)
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=4)
    return meta


def _finish(layout: Layout, fingerprint: str, items: int, spec: Spec, plan: list[tuple[int, int]]) -> dict[str, Any]:
    """Rank 0, once every shard is written: the manifest."""
    notes: list[str] = []
    missing = missing_shards(layout, plan, fingerprint, notes)
    if missing:
        raise VarMixupError(f"latent cache {layout.manifest}: shards of items {missing[:3]} were not written")
    write_manifest(layout, fingerprint, items, spec, plan)
    meta = find_manifest(layout, fingerprint, items, notes)
    if meta is None:
        raise VarMixupError(f"latent cache {layout.manifest} was written but cannot be read back: {notes}")
    return meta


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
