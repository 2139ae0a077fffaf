"""``VarMixupDataset``: encode a dataset once, cache the posteriors, train without the encoder."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ._checks import check_int, check_vae
from ._collate import collate_images
from ._errors import VarMixupError
from ._io import read_header, read_tensors, write_safetensors
from ._mixup import Posterior
from ._random import StreamSource
from ._tensors import module_device, to_float_image
from ._vae import VAEProtocol

__all__ = ["VarMixupDataset", "BatchRandomCropFlip"]

_CACHE_KEY = "varmixup_aug_latents"
_CACHE_VERSION = 1


def _vae_fingerprint(vae: Any) -> str:
    h = hashlib.sha256(type(vae).__name__.encode())
    config = getattr(vae, "config", None)
    if config is not None:
        h.update(repr(config).encode())
    state = vae.state_dict() if isinstance(vae, torch.nn.Module) else {}
    for name in sorted(state):
        t = state[name].detach().to("cpu", torch.float32).contiguous()
        h.update(name.encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _dataset_fingerprint(dataset: Dataset) -> str:
    n = len(dataset)  # type: ignore[arg-type]
    h = hashlib.sha256(f"{type(dataset).__name__}:{n}".encode())
    samples = getattr(dataset, "samples", None)
    if samples is not None:
        h.update(json.dumps([[str(p), int(y)] for p, y in samples]).encode())
    for i in sorted({0, n // 2, n - 1}):
        image, label = dataset[i]
        h.update(to_float_image(image).to(torch.float32).contiguous().numpy().tobytes())
        h.update(str(label).encode())
    return h.hexdigest()


def _is_deterministic(dataset: Dataset) -> bool:
    n = len(dataset)  # type: ignore[arg-type]
    for i in sorted({0, n // 2}):
        a = to_float_image(dataset[i][0])
        b = to_float_image(dataset[i][0])
        if a.shape != b.shape or not torch.equal(a, b):
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
    refused. Apply geometric augmentation after decoding instead, batch-wise on the device,
    with :class:`BatchRandomCropFlip` (or any batch transform).

    Cache: with ``cache_path`` (a file, or a folder that gets one file per fingerprint),
    the posteriors are saved as safetensors, keyed by a fingerprint of the dataset and the
    VAE weights; a later run with the same data and VAE loads them instead of encoding.
    Under ``torch.distributed`` rank 0 encodes and writes the file while the other ranks
    wait and then read it, so the encoder runs once in total; ``cache_path`` is then required.

    Args:
        dataset: map-style dataset of ``(image, int label)``; images as tensors, PIL images
            or HWC numpy arrays (uint8 is scaled to [0, 1]), in the VAE's input range.
        vae: the VAE (:class:`VAEProtocol`).
        cache_path: where to cache the posteriors, or ``None``.
        batch_size: encoding batch size.
        device: where to run the encoder (default: the VAE's device).
        num_workers: DataLoader workers for reading the dataset while encoding.
        progress: show a tqdm bar.

    Shapes: ``mu``, ``logvar``: ``(N, *latent)``; ``labels``: ``(N,)``.
    """

    def __init__(self, dataset: Dataset, vae: VAEProtocol, *, cache_path: str | os.PathLike[str] | None = None,
                 batch_size: int = 256, device: torch.device | str | None = None, num_workers: int = 0,
                 progress: bool = True) -> None:
        check_vae(vae)
        try:
            n = len(dataset)  # type: ignore[arg-type]
        except TypeError as exc:
            raise VarMixupError("dataset must be a map-style dataset with __len__ and __getitem__") from exc
        if n == 0:
            raise VarMixupError("dataset is empty")
        if not _is_deterministic(dataset):
            raise VarMixupError(
                "dataset returns a different image each time the same index is read (random augmentation?); "
                "cached latents would describe only one draw. Wrap the un-augmented dataset and apply geometric "
                "augmentation after decoding, e.g. BatchRandomCropFlip on the mixed batch"
            )
        self.dataset = dataset
        self.vae = vae
        self.fingerprint = hashlib.sha256(
            (_dataset_fingerprint(dataset) + _vae_fingerprint(vae)).encode()).hexdigest()
        self.cache_file = self._resolve_cache(cache_path)
        self.mu, self.logvar, self.labels = self._load_or_encode(lambda: self._encode(batch_size, device, num_workers,
                                                                                      progress))

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
        if cache_path is None:
            return None
        path = Path(cache_path).expanduser()
        if path.is_dir() or str(cache_path).endswith(os.sep) or not path.suffix:
            path.mkdir(parents=True, exist_ok=True)
            return path / f"latents-{self.fingerprint[:16]}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _load_cache(self) -> tuple[Tensor, Tensor, Tensor] | None:
        assert self.cache_file is not None
        if not self.cache_file.is_file():
            return None
        try:
            meta = read_header(self.cache_file, _CACHE_KEY, writer="VarMixupDataset")
            if meta.get("fingerprint") != self.fingerprint or meta.get("version") != _CACHE_VERSION:
                return None
            tensors = read_tensors(self.cache_file)
            return tensors["mu"], tensors["logvar"], tensors["labels"]
        except Exception:  # unreadable or foreign file: encode again and overwrite it
            return None

    def _save_cache(self, mu: Tensor, logvar: Tensor, labels: Tensor) -> None:
        assert self.cache_file is not None
        meta = {"fingerprint": self.fingerprint, "version": _CACHE_VERSION, "items": int(labels.shape[0])}
        write_safetensors(self.cache_file, {"mu": mu, "logvar": logvar, "labels": labels}, _CACHE_KEY, meta)

    @torch.no_grad()
    def _encode(self, batch_size: int, device: Any, num_workers: int, progress: bool
                ) -> tuple[Tensor, Tensor, Tensor]:
        vae_device = module_device(self.vae)
        device = torch.device(device) if device is not None else vae_device
        if device != vae_device:
            raise VarMixupError(f"device={device} but the VAE is on {vae_device}; move the VAE with vae.to(device)")
        loader = DataLoader(self.dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                            collate_fn=collate_images, pin_memory=device.type == "cuda")
        if isinstance(self.vae, torch.nn.Module):
            self.vae.eval()
        mus, logvars, labels = [], [], []
        for images, y in tqdm(loader, desc="encoding dataset", unit="batch", disable=not progress, leave=False):
            if isinstance(images, Posterior) or not images.is_floating_point():
                raise VarMixupError("dataset images must be float or uint8 images")
            if y.is_floating_point():
                raise VarMixupError("VarMixupDataset needs integer class labels")
            mu, logvar = self.vae.encode(images.to(device, non_blocking=True))
            mus.append(mu.float().cpu())
            logvars.append(logvar.float().cpu())
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
