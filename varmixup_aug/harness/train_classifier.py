"""Training a classifier with ERM, input mixup, VarMixup or residual VarMixup, under one schedule.

Every method trains the same :class:`~varmixup_aug.harness.models.PreActResNet` (normalisation inside,
so it takes pixel-space images) with the same optimiser (SGD, Nesterov momentum, weight decay),
learning-rate schedule, per-image albumentations pad-and-crop plus flip, and loss
(``nn.CrossEntropyLoss``, no label smoothing; hard labels for ERM, mixed soft targets otherwise).
Only the ``collate_fn`` differs:

- ``erm``: ``collate_images`` (hard labels);
- ``mixup``: ``VarMixupCollate(None, space="input", alpha=...)``;
- ``varmixup``: ``VarMixupCollate(vae, alpha=...)``;
- ``varmixup-residual``: ``VarMixupCollate(vae, residual=True, alpha=...)``.

Checkpoints are one safetensors file (model, optimiser state and RNG state as tensors) with JSON
metadata (method, epoch, step, arguments, held-out split, history); no pickle.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from varmixup_aug import VarMixupCollate, VarMixupError
from varmixup_aug._checks import check_int, check_label_range, check_number
from varmixup_aug._collate import collate_images
from varmixup_aug._io import atomic_write_json
from varmixup_aug._random import derive_seed
from varmixup_aug._tensors import resolve_device, to_float_images
from .data import import_albumentations
from .classifier_checkpoint import (
    CHECKPOINT_NAME,
    read_classifier_metadata,
    restore_training_state,
    save_training_checkpoint,
)
from .models import PreActResNet
from .resume import changed_settings, check_resume_settings, data_changes, data_sha256, require_state

__all__ = [
    "METHODS",
    "AugmentedImages",
    "TrainClassifierConfig",
    "load_train_split",
    "split_holdout",
    "train_classifier",
]

METHODS = ("erm", "mixup", "varmixup", "varmixup-residual")


@dataclass
class TrainClassifierConfig:
    """Settings of :func:`train_classifier`; the ``train-classifier`` flags map onto these one to one.

    Attributes:
        out: run folder; holds ``checkpoint.safetensors``, ``holdout.json`` and ``train_report.json``.
        method: one of :data:`METHODS`.
        epochs: planned epochs; the learning-rate schedule spans them.
        batch_size: images per step (the last incomplete batch of an epoch is dropped).
        lr: peak learning rate of SGD.
        momentum, nesterov, weight_decay: SGD settings (weight decay on every parameter).
        schedule: ``"cosine"`` (linear warm-up over ``warmup_epochs``, then cosine to 0) or
            ``"onecycle"`` (linear from ``lr / 25`` to ``lr`` over the first 30%, then cosine to ``lr / 1e4``).
        warmup_epochs: warm-up of the cosine schedule, in epochs (capped at 10% of the run).
        alpha: Beta(alpha, alpha) of mixup and VarMixup.
        padding: pixels of zero padding before the random crop back to the image size.
        seed: seed of the model init, the shuffles, the augmentation and the mixing.
        max_steps: stop after this many steps in total (the schedule still spans ``epochs``).
        checkpoint_every: steps between checkpoints (also written at every epoch end and at the end).
        num_workers: DataLoader workers (exact resume needs 0).
        widths, blocks_per_stage: the :class:`PreActResNet`.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
    """

    out: str
    method: str = "erm"
    epochs: int = 2
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.5
    alpha: float = 1.0
    padding: int = 4
    seed: int = 0
    max_steps: int | None = None
    checkpoint_every: int = 200
    num_workers: int = 0
    widths: tuple[int, ...] = (32, 64, 128)
    blocks_per_stage: int = 1
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise VarMixupError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.schedule not in ("cosine", "onecycle"):
            raise VarMixupError(f"schedule must be 'cosine' or 'onecycle', got {self.schedule!r}")
        for name in ("epochs", "batch_size", "checkpoint_every", "blocks_per_stage"):
            check_int(name, getattr(self, name))
        check_int("max_steps", self.max_steps, allow_none=True)
        check_int("num_workers", self.num_workers, minimum=0)
        check_int("padding", self.padding, minimum=0)
        for name in ("lr", "alpha"):
            check_number(name, getattr(self, name), low=0, low_open=True)
        if not 0 <= self.momentum < 1 or self.weight_decay < 0 or self.warmup_epochs < 0:
            raise VarMixupError(
                f"need 0 <= momentum < 1, weight_decay >= 0 and warmup_epochs >= 0, got {self.momentum}, "
                f"{self.weight_decay}, {self.warmup_epochs}"
            )
        self.widths = tuple(int(w) for w in self.widths)

    @property
    def checkpoint_path(self) -> Path:
        return Path(self.out) / CHECKPOINT_NAME

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d


def split_holdout(n: int, holdout: int, *, seed: int = 0, limit_train: int | None = None
                  ) -> tuple[list[int], list[int]]:
    """Split ``range(n)`` into training and held-out indices with a fixed shuffle.

    The first ``holdout`` items of ``randperm(n)`` (seeded by ``seed``) are held out; the
    training set is the rest, or its first ``limit_train`` items. The same ``(n, holdout, seed)``
    gives the same held-out split whatever ``limit_train`` is, so every method trains on the same
    images and never on the held-out ones.

    Returns:
        ``(train_indices, holdout_indices)``, each sorted.

    Example:
        >>> train, held = split_holdout(10, 3, seed=0)
        >>> len(train), len(held), sorted(train + held) == list(range(10))
        (7, 3, True)
    """
    check_int("n", n, minimum=2, requirement="be an int >= 2 (the train split needs at least 2 images)")
    check_int("holdout", holdout, minimum=0, maximum=n - 1,
              requirement=f"be an int in [0, {n - 1}] (images of the train split)")
    check_int("limit_train", limit_train, allow_none=True)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    held, rest = perm[:holdout], perm[holdout:]
    if limit_train is not None:
        rest = rest[:limit_train]
    return sorted(rest), sorted(held)


class AugmentedImages(Dataset):
    """``uint8`` images with per-image albumentations augmentation: zero pad, random crop, horizontal flip.

    Items are ``(HWC uint8 numpy image, int label)``, which :func:`collate_images` and
    :class:`VarMixupCollate` turn into float batches in ``[0, 1]``.

    Seeding: item ``i`` in epoch ``e`` is augmented with an albumentations seed taken from a
    per-epoch table of seeds drawn with a torch generator seeded from ``(seed, e)``; the result
    depends only on ``(seed, e, i)``, not on workers or batch order. Call :meth:`set_epoch` before
    each epoch's DataLoader iterator is made.

    Args:
        images: ``(N, C, H, W)`` uint8.
        labels: ``(N,)`` int.
        padding: pixels of zero padding per side before cropping back to ``(H, W)``; 0 disables.
        flip: random horizontal flip.
        seed: base seed.
    """

    def __init__(self, images: Tensor, labels: Tensor, *, padding: int = 4, flip: bool = True, seed: int = 0) -> None:
        if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
            raise VarMixupError(
                f"images must be a uint8 tensor (N, C, H, W), got "
                f"{(images.dtype, tuple(images.shape)) if isinstance(images, Tensor) else type(images).__name__}"
            )
        if not isinstance(labels, Tensor) or labels.shape != (images.shape[0],):
            raise VarMixupError(f"labels must have shape (N,) = ({images.shape[0]},)")
        self.hwc = images.permute(0, 2, 3, 1).contiguous().numpy()
        self.labels = labels.long().tolist()
        self.padding, self.flip, self.seed = padding, flip, seed
        self._seeds = self._seed_table(0)
        self._compose: Any = None

    def _seed_table(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(derive_seed(self.seed, "augment", epoch))
        return torch.randint(0, 2**32, (len(self.labels),), generator=g, dtype=torch.int64).tolist()

    def set_epoch(self, epoch: int) -> None:
        """Use the augmentation seeds of ``epoch``."""
        self._seeds = self._seed_table(epoch)

    def _build(self) -> Any:
        import cv2

        A = import_albumentations()

        h, w = self.hwc.shape[1:3]
        ops: list[Any] = []
        if self.padding:
            ops += [A.Pad(padding=self.padding, fill=0, border_mode=cv2.BORDER_CONSTANT),
                    A.RandomCrop(height=h, width=w)]
        if self.flip:
            ops.append(A.HorizontalFlip(p=0.5))
        return A.Compose(ops, seed=0)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        if self._compose is None:
            self._compose = self._build()
        self._compose.set_random_seed(self._seeds[index])
        return self._compose(image=self.hwc[index])["image"], self.labels[index]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_compose"] = None  # rebuilt in each worker
        return state


def _lr_at(cfg: TrainClassifierConfig, step: int, planned: int, steps_per_epoch: int) -> float:
    t = min(step / max(1, planned), 1.0)
    if cfg.schedule == "onecycle":
        if t < 0.3:
            return cfg.lr / 25 + (cfg.lr - cfg.lr / 25) * t / 0.3
        u = (t - 0.3) / 0.7
        low = cfg.lr / 1e4
        return low + (cfg.lr - low) * 0.5 * (1 + math.cos(math.pi * u))
    warm = min(cfg.warmup_epochs * steps_per_epoch, 0.1 * planned)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    u = (step - warm) / max(1.0, planned - warm)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(u, 1.0)))


def _make_collate(cfg: TrainClassifierConfig, vae: Any, num_classes: int, epoch: int) -> Any:
    seed = derive_seed(cfg.seed, "mix", epoch)
    if cfg.method == "erm":
        return collate_images
    if cfg.method == "mixup":
        return VarMixupCollate(None, num_classes=num_classes, space="input", alpha=cfg.alpha, seed=seed)
    if vae is None:
        raise VarMixupError(f"method {cfg.method!r} needs a VAE; pass vae= (train-classifier --vae PATH)")
    return VarMixupCollate(vae, num_classes=num_classes, alpha=cfg.alpha, residual=cfg.method == "varmixup-residual",
                           seed=seed)


# ---- training -----------------------------------------------------------------------------------


@torch.no_grad()
def _accuracy(model: nn.Module, images: Tensor, labels: Tensor, device: torch.device, batch_size: int = 500) -> float:
    model.eval()
    correct = 0
    for s in range(0, images.shape[0], batch_size):
        x = to_float_images(images[s:s + batch_size].to(device))
        correct += int((model(x).argmax(1).cpu() == labels[s:s + batch_size]).sum())
    return correct / max(1, images.shape[0])


def train_classifier(cfg: TrainClassifierConfig, train_images: Tensor, train_labels: Tensor, *, num_classes: int,
                     vae: Any = None, holdout_images: Tensor | None = None, holdout_labels: Tensor | None = None,
                     data_info: dict[str, Any] | None = None, resume: bool = False,
                     allow_changed_settings: bool = False, progress: bool = True,
                     on_checkpoint: Callable[[], None] | None = None) -> dict[str, Any]:
    """Train a :class:`PreActResNet` on ``uint8`` images with ``cfg.method``; save and return a report.

    Args:
        cfg: the settings.
        train_images: ``(N, C, H, W)`` uint8 training images (the held-out images excluded).
        train_labels: ``(N,)`` int.
        num_classes: number of classes.
        vae: the VAE for ``varmixup``/``varmixup-residual`` (any :class:`VAEProtocol`, on the CPU).
        holdout_images, holdout_labels: optional held-out images for a final accuracy in the report.
        data_info: JSON-serialisable facts stored in the checkpoint metadata, e.g. ``{"holdout":
            {"indices": [...], "train_size": 50000, "seed": 0}, "data_dir": ...}``; its ``holdout``
            entry is what ``evaluate --select-lam`` uses.
        resume: continue from ``cfg.out/checkpoint.safetensors``. With ``num_workers=0`` the result
            equals an uninterrupted run on the same device. Other settings (batch size, lr, seed,
            schedule, ...) or other training images than the saved run's are refused unless
            ``allow_changed_settings``; so is another ``data_info["data_dir"]``.
        progress: tqdm bar.
        on_checkpoint: called after every checkpoint save.

    Returns:
        The report (also written to ``cfg.out/train_report.json``): steps, epochs, losses per epoch,
        wall time, seconds per step (total, data, compute), held-out accuracy.
    """
    _check_inputs(cfg, train_images, train_labels, num_classes, vae)
    run = _Training.start(cfg, train_images, num_classes, data_info)
    run.on_checkpoint = on_checkpoint
    run.info.setdefault("train_sha256", data_sha256(train_images, train_labels))
    if resume:
        _resume(run, allow_changed_settings)
    dataset = AugmentedImages(train_images, train_labels, padding=cfg.padding, seed=cfg.seed)
    loss_fn = nn.CrossEntropyLoss()
    run.t_start = time.perf_counter() - run.elapsed
    bar = tqdm(total=run.total, initial=run.global_step, desc=f"train-classifier ({cfg.method})", unit="step",
               disable=not progress)
    while run.global_step < run.total:
        _train_epoch(run, _epoch_loader(run, dataset, vae), loss_fn, bar)
        if run.step_in_epoch >= run.steps_per_epoch:
            _end_epoch(run)
    bar.close()
    _save(run)
    report = _report(run, holdout_images, holdout_labels)
    atomic_write_json(Path(cfg.out) / "train_report.json", report)
    return report


def _check_inputs(cfg: TrainClassifierConfig, train_images: Any, train_labels: Tensor, num_classes: Any, vae: Any
                  ) -> None:
    if not isinstance(train_images, Tensor) or train_images.dtype != torch.uint8 or train_images.ndim != 4:
        raise VarMixupError("train_images must be a uint8 tensor (N, C, H, W)")
    n = train_images.shape[0]
    if n < cfg.batch_size:
        raise VarMixupError(f"batch_size {cfg.batch_size} is larger than the {n} training images; lower --batch-size")
    check_int("num_classes", num_classes, minimum=2)
    check_label_range("train_labels", train_labels, num_classes)
    if cfg.method.startswith("varmixup") and vae is None:
        raise VarMixupError(f"method {cfg.method!r} needs a VAE; pass vae= (train-classifier --vae PATH)")


@dataclass
class _Training:
    """One run of :func:`train_classifier`: the model and optimiser, the position, the losses and the timings."""

    cfg: TrainClassifierConfig
    model: PreActResNet
    opt: torch.optim.Optimizer
    device: torch.device
    n: int
    num_classes: int
    info: dict[str, Any]
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    elapsed: float = 0.0  # seconds trained before this run, when resumed
    t_start: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    epoch_loss: dict[str, float] = field(default_factory=lambda: {"sum": 0.0, "count": 0})
    run_loss: float = 0.0
    run_count: int = 0
    data_time: float = 0.0
    compute_time: float = 0.0
    timed_steps: int = 0
    on_checkpoint: Callable[[], None] | None = None

    @classmethod
    def start(cls, cfg: TrainClassifierConfig, train_images: Tensor, num_classes: int,
              data_info: dict[str, Any] | None) -> _Training:
        device = resolve_device(cfg.device)
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        model = PreActResNet(num_classes=num_classes, channels=train_images.shape[1], widths=cfg.widths,
                             blocks_per_stage=cfg.blocks_per_stage).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                              weight_decay=cfg.weight_decay)
        return cls(cfg, model, opt, device, train_images.shape[0], num_classes, dict(data_info or {}))

    @property
    def steps_per_epoch(self) -> int:
        return self.n // self.cfg.batch_size

    @property
    def planned(self) -> int:  # the learning-rate schedule spans the planned steps
        return self.cfg.epochs * self.steps_per_epoch

    @property
    def total(self) -> int:
        return self.planned if self.cfg.max_steps is None else min(self.planned, self.cfg.max_steps)

    def count_step(self, loss: float, data_s: float, compute_s: float) -> None:
        if self.run_count:  # the first step of a run pays one-off start-up costs
            self.data_time += data_s
            self.compute_time += compute_s
            self.timed_steps += 1
        self.step_in_epoch += 1
        self.global_step += 1
        self.run_loss, self.run_count = self.run_loss + loss, self.run_count + 1
        self.epoch_loss["sum"] += loss
        self.epoch_loss["count"] += 1


_RESUME_SETTINGS = ("epochs", "batch_size", "lr", "momentum", "nesterov", "weight_decay", "schedule", "warmup_epochs",
                    "alpha", "padding", "seed")


def _resume(run: _Training, allow_changed_settings: bool = False) -> None:
    """Check that the checkpoint in ``cfg.out`` is of the same run, then continue from it."""
    cfg, path = run.cfg, run.cfg.checkpoint_path
    require_state(path, "checkpoint")
    meta = read_classifier_metadata(path)
    if meta.get("method") != cfg.method:
        raise VarMixupError(f"{path} was trained with --method {meta.get('method')}, not {cfg.method}; "
                            "resume with the same method or use another --out")
    if meta.get("model") != run.model.config():
        raise VarMixupError(f"{path} holds a model {meta.get('model')}, not {run.model.config()}; pass the same "
                            "--widths/--blocks-per-stage")
    saved_data = meta.get("data", {})
    if saved_data.get("train_images") != run.n or meta.get("holdout") != run.info.get("holdout"):
        raise VarMixupError(f"{path} was trained on another split ({saved_data.get('train_images')} training "
                            f"images); pass the same --data-dir, --holdout and --limit-train to resume")
    changes = changed_settings(meta.get("args", {}), cfg.to_dict(), _RESUME_SETTINGS)
    changes += data_changes({"data_dir": saved_data.get("data_dir")}, {"data_dir": run.info.get("data_dir")})
    saved_sha = saved_data.get("train_sha256")
    if saved_sha and saved_sha != run.info.get("train_sha256"):
        changes.append("training images or labels: other data (sha256 differs)")
    check_resume_settings(path, changes, allow_changed_settings)
    restore_training_state(path, run.model, run.opt, meta)
    run.epoch, run.step_in_epoch, run.global_step = meta["epoch"], meta["step_in_epoch"], meta["global_step"]
    run.elapsed, run.history = meta.get("elapsed_s", 0.0), meta.get("history", [])
    run.epoch_loss = dict(meta.get("epoch_loss", run.epoch_loss))


def _epoch_loader(run: _Training, dataset: AugmentedImages, vae: Any) -> DataLoader:
    """The epoch's batches from where the run stands: a seeded order, augmentation and mixing."""
    cfg, epoch = run.cfg, run.epoch
    perm = torch.randperm(run.n, generator=torch.Generator().manual_seed(derive_seed(cfg.seed, "perm", epoch)))
    order = perm[run.step_in_epoch * cfg.batch_size: run.steps_per_epoch * cfg.batch_size].tolist()
    dataset.set_epoch(epoch)
    collate = _make_collate(cfg, vae, run.num_classes, epoch)
    if isinstance(collate, VarMixupCollate) and cfg.num_workers == 0:
        for _ in range(run.step_in_epoch):  # replay the draws of the batches done before a resume
            collate.mixer.draw_params(cfg.batch_size)
    return DataLoader(dataset, batch_size=cfg.batch_size, sampler=order, drop_last=True, collate_fn=collate,
                      num_workers=cfg.num_workers, pin_memory=run.device.type == "cuda",
                      generator=torch.Generator().manual_seed(derive_seed(cfg.seed, "loader", epoch)))


def _train_epoch(run: _Training, loader: DataLoader, loss_fn: nn.Module, bar: Any) -> None:
    """Train on ``loader``'s batches until the epoch or the run ends, checkpointing on the way."""
    run.model.train()
    t_data = time.perf_counter()
    for x, t in loader:
        t_compute = time.perf_counter()
        loss = _step(run, loss_fn, x, t)
        run.count_step(loss, t_compute - t_data, time.perf_counter() - t_compute)
        bar.update(1)
        bar.set_postfix(epoch=run.epoch, loss=f"{loss:.3f}", lr=f"{run.opt.param_groups[0]['lr']:.4f}")
        if run.global_step % run.cfg.checkpoint_every == 0 and run.global_step < run.total:
            _save(run)
        t_data = time.perf_counter()
        if run.global_step >= run.total:
            break


def _step(run: _Training, loss_fn: nn.Module, x: Tensor, t: Tensor) -> float:
    for g in run.opt.param_groups:
        g["lr"] = _lr_at(run.cfg, run.global_step, run.planned, run.steps_per_epoch)
    loss = loss_fn(run.model(x.to(run.device, non_blocking=True)), t.to(run.device, non_blocking=True))
    if not torch.isfinite(loss):
        raise VarMixupError(f"training diverged at step {run.global_step} (loss {loss.item()}); lower --lr")
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    run.opt.step()
    return loss.item()


def _end_epoch(run: _Training) -> None:
    run.history.append({"epoch": run.epoch, "mean_loss": run.epoch_loss["sum"] / max(1, run.epoch_loss["count"]),
                        "steps": run.global_step})
    run.epoch_loss = {"sum": 0.0, "count": 0}
    run.epoch, run.step_in_epoch = run.epoch + 1, 0
    if run.global_step < run.total:
        _save(run)


def _save(run: _Training) -> None:
    cfg = run.cfg
    meta = {
        "architecture": "PreActResNet", "model": run.model.config(), "method": cfg.method, "epoch": run.epoch,
        "step_in_epoch": run.step_in_epoch, "global_step": run.global_step, "planned_steps": run.planned,
        "steps_per_epoch": run.steps_per_epoch, "finished": run.global_step >= run.planned, "args": cfg.to_dict(),
        "elapsed_s": time.perf_counter() - run.t_start, "history": run.history, "epoch_loss": run.epoch_loss,
        "data": {"train_images": run.n, "num_classes": run.num_classes,
                 **{k: v for k, v in run.info.items() if k != "holdout"}},
        "holdout": run.info.get("holdout"),
    }
    save_training_checkpoint(cfg.checkpoint_path, run.model, run.opt, meta)
    if run.on_checkpoint is not None:
        run.on_checkpoint()


def _report(run: _Training, holdout_images: Tensor | None, holdout_labels: Tensor | None) -> dict[str, Any]:
    cfg, timed = run.cfg, run.timed_steps
    report: dict[str, Any] = {
        "method": cfg.method, "steps": run.global_step, "planned_steps": run.planned,
        "steps_per_epoch": run.steps_per_epoch, "epochs_completed": run.global_step / run.steps_per_epoch,
        "train_images": run.n, "batch_size": cfg.batch_size, "wall_time_s": time.perf_counter() - run.t_start,
        "device": str(run.device), "torch_threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in run.model.parameters()), "history": run.history,
        "mean_loss_this_run": run.run_loss / max(1, run.run_count),
        "s_per_step": (run.data_time + run.compute_time) / timed if timed else None,
        "s_per_step_data": run.data_time / timed if timed else None,
        "s_per_step_compute": run.compute_time / timed if timed else None,
        "checkpoint": str(cfg.checkpoint_path),
    }
    if holdout_images is not None and holdout_labels is not None and holdout_images.shape[0]:
        report["holdout_accuracy"] = _accuracy(run.model, holdout_images, holdout_labels.long(), run.device)
        report["holdout_images"] = int(holdout_images.shape[0])
    return report


def load_train_split(
    data_dir: str | os.PathLike[str], *, holdout: int = 2000, holdout_seed: int = 0, limit_train: int | None = None,
    num_workers: int = 0, progress: bool = True,
) -> dict[str, Any]:
    """Open the train split of ``data_dir``, hold out ``holdout`` images, decode both parts to ``uint8``.

    Returns:
        ``{"train": (images (N, C, H, W) uint8, labels (N,)), "holdout": (images, labels),
        "holdout_info": {"indices", "train_size", "seed", "count"}, "classes": [...], "data_dir": str}``.
    """
    from torch.utils.data import Subset

    from .data import load_tensor_dataset, open_image_dataset

    ds = open_image_dataset(data_dir, "train")
    named = getattr(ds, "classes", None)
    if named is not None and len(named) < 2:
        raise VarMixupError(
            f"--data-dir {data_dir} has {len(named)} class folder{'' if len(named) == 1 else 's'} "
            f"({', '.join(map(repr, named)) or 'none'}); a classifier needs at least 2: put each class's images in "
            "its own sub-folder (train/<class>/..., test/<class>/...)"
        )
    n = len(ds)  # type: ignore[arg-type]
    train_idx, held_idx = split_holdout(n, holdout, seed=holdout_seed, limit_train=limit_train)
    train = load_tensor_dataset(Subset(ds, train_idx), num_workers=num_workers, desc="decoding train",
                                progress=progress)
    if held_idx:
        held = load_tensor_dataset(Subset(ds, held_idx), num_workers=num_workers, desc="decoding held-out",
                                   progress=progress)
    else:
        held = (torch.empty(0, *train[0].shape[1:], dtype=torch.uint8), torch.empty(0, dtype=torch.long))
    classes = list(getattr(ds, "classes", None) or range(int(train[1].max()) + 1))
    return {
        "train": train, "holdout": held, "classes": classes, "data_dir": str(data_dir),
        "holdout_info": {"indices": held_idx, "train_size": n, "seed": holdout_seed, "count": len(held_idx)},
    }

