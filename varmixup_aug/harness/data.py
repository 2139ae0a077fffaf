"""Opening image datasets: ImageFolder directories, archives of them, torchvision names."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from varmixup_aug import VarMixupError

if TYPE_CHECKING:
    from torchvision.datasets import VisionDataset

__all__ = ["cache_dir", "dataset_labels", "import_albumentations", "load_tensor_dataset", "open_image_dataset"]

_TORCHVISION_NAMES = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "mnist": "MNIST", "fashionmnist": "FashionMNIST"}
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_HOLDOUT_FRACTION = 0.05


def cache_dir() -> Path:
    """Where archives are unpacked and downloads go: ``$VARMIXUP_AUG_CACHE`` or ``~/.cache/varmixup_aug``."""
    root = os.environ.get("VARMIXUP_AUG_CACHE") or Path.home() / ".cache" / "varmixup_aug"
    return Path(root)


def import_albumentations() -> Any:
    """The ``albumentations`` module, imported without its network check for updates."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations

    return albumentations


def _unpack_archive(archive: Path) -> Path:
    stat = archive.stat()
    key = hashlib.sha256(f"{archive.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    name = archive.name
    for suffix in _ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    target = cache_dir() / "unpacked" / f"{name}-{key}"
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}-"))
    try:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise VarMixupError(f"archive {archive} is corrupt or truncated ({type(exc).__name__}: {exc})") from exc
        # Archives often wrap everything in one top folder.
        entries = [p for p in tmp.iterdir() if not p.name.startswith(".")]
        root = entries[0] if len(entries) == 1 and entries[0].is_dir() and not _looks_like_classes(tmp) else tmp
        (root / ".complete").touch()
        try:
            os.replace(root, target)
        except OSError:  # another process finished first
            if not (target / ".complete").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _looks_like_classes(folder: Path) -> bool:
    subdirs = [p for p in folder.iterdir() if p.is_dir()]
    return len(subdirs) > 1


def _load_image(path: str) -> Any:
    """ImageFolder's loader, with an error naming the file when it is not a readable image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f:
            image = Image.open(f)
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise VarMixupError(f"{path} is not a readable image ({type(exc).__name__}: {exc})") from exc


def _image_folder(root: Path, transform: Callable[..., Any] | None) -> VisionDataset:
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(str(root), transform=transform, loader=_load_image)
    except (FileNotFoundError, RuntimeError) as exc:
        raise VarMixupError(f"data_dir {root} is not an ImageFolder tree ({exc})") from exc


def open_image_dataset(source: str | os.PathLike[str], split: str, *, transform: Callable[..., Any] | None = None,
                       download: bool = True) -> VisionDataset | Subset[Any]:
    """Open the ``split`` (``"train"`` or ``"test"``) of an image dataset.

    ``source`` is one of:

    - an ImageFolder directory; if it has ``train/`` and ``test/`` (or ``val/``) sub-folders
      those are the splits, otherwise a fixed 5% of it is held out as ``"test"``;
    - a ``.tar.gz``/``.tgz``/``.tar`` archive of such a directory, unpacked once into
      :func:`cache_dir`;
    - a torchvision dataset name (``cifar10``, ``cifar100``, ``mnist``, ``fashionmnist``),
      downloaded into :func:`cache_dir` when online.

    Items are ``(PIL image, int label)`` unless ``transform`` says otherwise.
    """
    if split not in ("train", "test"):
        raise VarMixupError(f"split must be 'train' or 'test', got {split!r}")
    text = str(source)
    path = Path(text).expanduser()
    if path.exists():
        return _folder_split(path, split, transform)
    key = text.lower().replace("-", "").replace("_", "")
    if key in _TORCHVISION_NAMES:
        return _torchvision_split(_TORCHVISION_NAMES[key], text, split, transform, download)
    raise VarMixupError(
        f"data_dir {text!r} is neither an existing folder/archive nor a known torchvision dataset "
        f"({', '.join(sorted(_TORCHVISION_NAMES))})"
    )


def _folder_split(path: Path, split: str, transform: Callable[..., Any] | None) -> VisionDataset | Subset[Any]:
    if path.is_file():
        if not str(path).endswith(_ARCHIVE_SUFFIXES):
            raise VarMixupError(
                f"data_dir {path} is a file but not a .tar.gz/.tgz/.tar archive; pass a folder or an archive"
            )
        path = _unpack_archive(path)
    for name in ((split,) if split == "train" else ("test", "val")):
        if (path / name).is_dir():
            return _image_folder(path / name, transform)
    _refuse_half_split(path)
    return _holdout_split(_image_folder(path, transform), split)


def _refuse_half_split(path: Path) -> None:
    """A folder with ``train/`` but no ``test/`` (or the reverse) is not one dataset whose classes are ``train``."""
    has = {name for name in ("train", "test", "val") if (path / name).is_dir()}
    if not has:
        return
    if "train" in has:
        raise VarMixupError(
            f"--data-dir {path} has train/ but no test/ (or val/) folder, so it has no test split; add "
            f"{path / 'test'} with the same class folders, or pass --data-dir {path / 'train'} to hold out a fixed "
            f"{_HOLDOUT_FRACTION:.0%} of train/ as the test split"
        )
    raise VarMixupError(
        f"--data-dir {path} has {'/, '.join(sorted(has))}/ but no train/ folder; add {path / 'train'} with the same "
        "class folders"
    )


def _torchvision_split(class_name: str, text: str, split: str, transform: Callable[..., Any] | None,
                       download: bool) -> VisionDataset:
    import torchvision.datasets as tvd

    root = cache_dir() / "torchvision"
    try:
        return getattr(tvd, class_name)(str(root), train=split == "train", download=download, transform=transform)
    except Exception as exc:  # URLError, RuntimeError("Dataset not found"), ...
        raise VarMixupError(
            f"could not open or download torchvision dataset {text!r} ({type(exc).__name__}: {exc}). "
            "Offline? Pass --data-dir with an ImageFolder directory or a .tar.gz of one, "
            "e.g. --data-dir ../shared/data/cifar10-jpg.tar.gz"
        ) from exc


def _holdout_split(full: VisionDataset, split: str) -> Subset[Any]:
    n = len(full)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(n, generator=g).tolist()
    n_test = max(1, int(round(n * _HOLDOUT_FRACTION)))
    idx = sorted(perm[:n_test]) if split == "test" else sorted(perm[n_test:])
    subset = Subset(full, idx)
    subset.classes = getattr(full, "classes", None)  # type: ignore[attr-defined]
    return subset


def _uint8_collate(batch: list[tuple[Any, ...]]) -> tuple[Tensor, Tensor]:
    import numpy as np
    from PIL import Image

    images = []
    for img, *_ in batch:
        if isinstance(img, Image.Image):
            from torchvision.transforms.v2.functional import pil_to_tensor

            images.append(pil_to_tensor(img.convert("RGB") if img.mode not in ("RGB", "L") else img))
        elif isinstance(img, np.ndarray):
            images.append(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1))
        else:
            images.append(img)
    shapes = [tuple(x.shape) for x in images]
    if len(set(shapes)) > 1:
        other = next(i for i, shape in enumerate(shapes) if shape != shapes[0])
        raise VarMixupError(_size_message(shapes[0], shapes[other], _name(batch[0]), _name(batch[other])))
    return torch.stack(images), torch.tensor([int(item[1]) for item in batch])


def _name(item: tuple[Any, ...]) -> str:
    return str(item[2]) if len(item) > 2 else "an image"


def _size_message(first: tuple[int, ...], other: tuple[int, ...], first_name: str, other_name: str) -> str:
    def size(shape: tuple[int, ...]) -> str:
        return "x".join(str(d) for d in shape[-2:]) + (f" with {shape[0]} channels" if len(shape) == 3 else "")

    return (f"--data-dir images differ in size: {first_name} is {size(first)}, {other_name} is {size(other)}; "
            "resize the images to one size first (train-vae resizes them with --image-size)")


def _item_name(dataset: Any, index: int) -> str:
    """The file behind item ``index`` (through Subsets and mapped views), or ``item <index>``."""
    i = index
    while True:
        if isinstance(dataset, Subset):
            i, dataset = int(dataset.indices[i]), dataset.dataset
        elif isinstance(dataset, _Mapped):
            dataset = dataset.base
        else:
            break
    samples = getattr(dataset, "samples", None)
    try:
        return str(samples[i][0]) if samples is not None else f"item {index}"
    except (IndexError, TypeError, KeyError):
        return f"item {index}"


class _Named(Dataset):
    """Items ``(image, label, name)``: the name of the file (or item) goes with the image, for errors."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Any, Any, str]:
        x, y = self.base[i]
        return x, y, _item_name(self.base, i)


def _worker_message(exc: VarMixupError) -> VarMixupError:
    """A ``VarMixupError`` raised in a DataLoader worker comes back with the worker's traceback; keep its message."""
    text = str(exc)
    if "Original Traceback" not in text:
        return exc
    last = [line for line in text.strip().splitlines() if line.strip()][-1]
    return VarMixupError(last.split("VarMixupError: ", 1)[-1].strip())


def dataset_labels(dataset: Any) -> Tensor:
    """Every item's label ``(N,)``, from the dataset's ``targets`` (ImageFolder, torchvision datasets and
    :class:`~torch.utils.data.Subset` of them) without decoding an image; other datasets are read item by item."""
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[torch.as_tensor(list(dataset.indices), dtype=torch.long)]
    targets = getattr(dataset, "targets", None)
    if targets is not None and len(targets) == len(dataset):
        return torch.as_tensor(targets).long().flatten()
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)


def load_tensor_dataset(
    dataset: Dataset,
    *,
    image_size: int | None = None,
    limit: int | None = None,
    num_workers: int = 0,
    desc: str = "decoding images",
    progress: bool = True,
) -> tuple[Tensor, Tensor]:
    """Decode a whole (PIL or uint8) image dataset into ``uint8 (N, C, H, W)`` and labels ``(N,)``.

    Images are resized with a center crop to ``image_size`` when given. ``limit`` keeps the
    first ``limit`` items of a fixed shuffle of the dataset, so small subsets still cover
    every class.
    """
    n = len(dataset)  # type: ignore[arg-type]
    if limit is not None and limit < n:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:limit]
        dataset = Subset(dataset, sorted(perm.tolist()))
        n = limit
    if image_size is not None:
        from torchvision.transforms import v2

        resize = v2.Compose([v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)])
        dataset = _Mapped(dataset, resize)
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise VarMixupError(f"num_workers (--num-workers) must be an int >= 0 (0: decode in this process), "
                            f"got {num_workers!r}")
    loader = DataLoader(_Named(dataset), batch_size=512, num_workers=num_workers, collate_fn=_uint8_collate)
    xs: list[Tensor] = []
    ys: list[Tensor] = []
    try:
        for x, y in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
            if xs and x.shape[1:] != xs[0].shape[1:]:
                start = sum(t.shape[0] for t in xs)
                raise VarMixupError(_size_message(tuple(xs[0].shape[1:]), tuple(x.shape[1:]),
                                                  _item_name(dataset, 0), _item_name(dataset, start)))
            xs.append(x)
            ys.append(y)
    except VarMixupError as exc:
        raise _worker_message(exc) from None
    if not xs:
        raise VarMixupError("dataset is empty")
    return torch.cat(xs), torch.cat(ys)


class _Mapped(Dataset):
    def __init__(self, base: Dataset, fn: Callable[[Any], Any]) -> None:
        self.base, self.fn = base, fn

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        x, y = self.base[i]
        return self.fn(x), y
