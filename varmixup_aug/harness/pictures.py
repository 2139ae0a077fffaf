"""Picture grids: mixup rows (input vs. VarMixup vs. residual) and reconstructions."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw
from torch import Tensor

from varmixup_aug import MixupParams, varmixup
from varmixup_aug._io import atomic_path
from varmixup_aug._tensors import module_device_dtype, to_float_images

__all__ = ["mixup_grid", "reconstruction_grid", "write_pictures"]

_SCALE = 2
_GAP = 4
_HEADER = 14


def _to_pil(x: Tensor) -> Image.Image:
    arr = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    img = Image.fromarray(arr if arr.shape[2] == 3 else arr[:, :, 0])
    return img.resize((img.width * _SCALE, img.height * _SCALE), Image.Resampling.NEAREST)


def _compose(rows: list[list[Tensor | None]], headers: list[str], path: str | os.PathLike[str]) -> Path:
    cell = rows[0][0].shape[-1] * _SCALE  # type: ignore[union-attr]
    n_cols = len(rows[0])
    width = n_cols * (cell + _GAP) + _GAP
    height = _HEADER + len(rows) * (cell + _GAP) + _GAP
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for c, text in enumerate(headers):
        if text:
            draw.text((_GAP + c * (cell + _GAP), 1), text, fill="black")
    for r, row in enumerate(rows):
        for c, x in enumerate(row):
            if x is not None:
                canvas.paste(_to_pil(x), (_GAP + c * (cell + _GAP), _HEADER + _GAP + r * (cell + _GAP)))
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    with atomic_path(path) as tmp:
        canvas.save(tmp, format=fmt)
    return path


@torch.no_grad()
def mixup_grid(
    vae: Any,
    first: Tensor,
    second: Tensor,
    path: str | os.PathLike[str],
    *,
    lams: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
) -> Path:
    """One row per pair ``(first[k], second[k])``: the two originals, then plain input mixup,
    VarMixup (paper form) and VarMixup residual at each ``lam`` (weight of ``first``).

    Uses the posterior mean so the picture is deterministic. Images: ``(K, C, H, W)`` in [0, 1].
    """
    k = first.shape[0]
    device = module_device_dtype(vae)[0] or first.device
    x = torch.cat([first, second]).to(device).float()
    y = torch.zeros(2 * k, dtype=torch.long, device=device)
    index = torch.cat([torch.arange(k, 2 * k), torch.arange(k)])
    blocks: dict[str, list[Tensor]] = {"input": [], "latent": [], "residual": []}
    for lam in lams:
        lam_t = torch.full((2 * k,), float(lam))
        params = MixupParams(lam=lam_t, index=index, applied=torch.ones(2 * k, dtype=torch.bool), noise_seed=0)
        for name, kwargs in (("input", {"space": "input"}), ("latent", {}), ("residual", {"residual": True})):
            out, _ = varmixup(x, y, vae, num_classes=1, posterior="mean", params=params, **kwargs)
            blocks[name].append(out[:k].cpu())
    rows: list[list[Tensor | None]] = []
    for i in range(k):
        row: list[Tensor | None] = [first[i].cpu(), second[i].cpu(), None]
        for name in ("input", "latent", "residual"):
            row += [b[i] for b in blocks[name]] + [None]
        rows.append(row[:-1])
    headers = ["A", "B", ""]
    for name in ("input mixup", "VarMixup", "VarMixup residual"):
        headers += [f"{name}, lam = " + ", ".join(f"{lam:g}" for lam in lams)] + [""] * len(lams)
    return _compose(rows, headers[:-1], path)


@torch.no_grad()
def reconstruction_grid(vae: Any, images: Tensor, path: str | os.PathLike[str], *, per_row: int = 16) -> Path:
    """Originals (odd rows) above their reconstructions ``decode(mu)`` (even rows)."""
    device = module_device_dtype(vae)[0] or images.device
    x = images.to(device).float()
    recon = vae.decode(vae.encode(x)[0]).cpu()
    rows: list[list[Tensor | None]] = []
    for start in range(0, images.shape[0], per_row):
        orig = [t for t in images[start : start + per_row].float().cpu()]
        rec = [t for t in recon[start : start + per_row]]
        pad = per_row - len(orig)
        rows.append(orig + [None] * pad)
        rows.append(rec + [None] * pad)  # type: ignore[operator]
    return _compose(rows, ["original / reconstruction"] + [""] * (per_row - 1), path)


def write_pictures(vae: Any, source: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, pairs: int = 6,
                   offset: int = 0) -> tuple[Path, Path]:
    """Write ``varmixup_grid.png`` and ``reconstructions.png`` from real test images of ``source``.

    ``source`` is anything :func:`open_image_dataset` opens; images come from a fixed shuffle of the
    test split, starting at ``offset``.
    """
    from .data import load_tensor_dataset, open_image_dataset

    n = offset + max(2 * pairs, 32)
    images, _ = load_tensor_dataset(open_image_dataset(source, "test"), limit=n, progress=False)
    x = to_float_images(images[offset:])
    out = Path(out_dir)
    grid = mixup_grid(vae, x[0 : 2 * pairs : 2], x[1 : 2 * pairs : 2], out / "varmixup_grid.png")
    return grid, reconstruction_grid(vae, x[:32], out / "reconstructions.png")
