"""VarMixup in a Lightning project: train with ``VarMixupCollate``, validate with Mixup Inference.

- :class:`VarMixupDataModule`: its train DataLoader uses
  ``collate_fn=VarMixupCollate(vae, num_classes=..., seed=...)``, so every batch arrives as
  ``(images, soft_targets)``. Lightning adds the ``DistributedSampler`` under DDP and keeps the
  collate; each rank (and each DataLoader worker) draws its own ``lam`` and pairs from ``seed``.
- :class:`VarMixupClassifier`: cross-entropy on the soft targets; validation reports clean
  accuracy and the accuracy of ``MIPredictor`` (MI-OL) around the same network.

Examples (from the repository root)::

    python examples/lightning_varmixup.py --synthetic --max-steps 20
    python examples/lightning_varmixup.py --data-dir ../shared/data/cifar10-jpg.tar.gz --epochs 2 --limit 5000
    python examples/lightning_varmixup.py --data-dir ../shared/data/cifar10-jpg.tar.gz --devices 2 --strategy ddp

``--data-dir`` is anything ``varmixup_aug.harness.open_image_dataset`` opens: an ImageFolder root
with ``train/`` and ``test/``, a ``.tar.gz`` of one, or a torchvision name. An archive is unpacked
once (on local rank 0, in ``prepare_data``) into ``$VARMIXUP_AUG_CACHE`` (default
``~/.cache/varmixup_aug``). The shipped VAE (``--vae cifar10``) reads 32x32 RGB images in [0, 1].
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import lightning as L
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from varmixup_aug import MIPredictor, VAEProtocol, VarMixupCollate, list_pretrained, load_pretrained_vae, load_vae
from varmixup_aug.harness import open_image_dataset

from _synthetic import synthetic_dataset  # a sibling module: Python puts a script's folder on its import path


class VarMixupDataModule(L.LightningDataModule):
    """Train batches mixed by ``VarMixupCollate``; clean validation batches; a clean pool for MI.

    Args:
        data_dir: what ``open_image_dataset`` opens (an ImageFolder root with ``train/`` and
            ``test/``, a ``.tar.gz`` of one, a torchvision name); ``None`` for synthetic data.
        vae: a shipped VAE name (``"cifar10"``), a checkpoint path, or a VAE module.
        num_classes: classes of synthetic data (an ImageFolder sets its own).
        batch_size: per process.
        num_workers: DataLoader workers per process (the VAE runs in them, on the CPU).
        alpha, residual: VarMixup's options.
        seed: VarMixup's seed; ranks and workers derive their own streams from it.
        limit, limit_val: fixed subsets of the train and test splits.
        pool_size: clean training images kept for Mixup Inference.
    """

    def __init__(
        self,
        data_dir: str | None = None,
        *,
        vae: str | VAEProtocol = "cifar10",
        num_classes: int = 10,
        image_size: int = 32,
        batch_size: int = 64,
        num_workers: int = 2,
        alpha: float = 1.0,
        residual: bool = False,
        seed: int = 0,
        limit: int | None = None,
        limit_val: int | None = 1000,
        pool_size: int = 500,
    ) -> None:
        super().__init__()
        self.data_dir, self.vae_source = data_dir, vae
        self.num_classes, self.image_size = num_classes, image_size
        self.batch_size, self.num_workers = batch_size, num_workers
        self.alpha, self.residual, self.seed = alpha, residual, seed
        self.limit, self.limit_val, self.pool_size = limit, limit_val, pool_size

    def prepare_data(self) -> None:
        """Runs once per node (local rank 0): an archive is unpacked into the cache (once; later calls reuse it)."""
        if self.data_dir is not None:
            open_image_dataset(self.data_dir, "train")

    def setup(self, stage: str | None = None) -> None:
        """Runs on every rank: datasets, the VAE and the collate."""
        if self.data_dir is None:
            n = self.limit or 512
            self.train_set: Dataset = synthetic_dataset(n, self.num_classes, self.image_size, seed=self.seed)
            self.val_set: Dataset = synthetic_dataset(self.limit_val or 256, self.num_classes, self.image_size,
                                                      seed=self.seed, split=1)
            self.pool_set: Dataset = Subset(self.train_set, range(min(self.pool_size, n)))
        else:
            self._setup_image_folder()
        vae = self.vae_source
        if isinstance(vae, str):
            vae = load_pretrained_vae(vae) if vae in list_pretrained() else load_vae(vae)
        self.vae = vae.eval() if isinstance(vae, nn.Module) else vae
        self.collate = self.train_collate()

    def _setup_image_folder(self) -> None:
        from torchvision.transforms import v2

        to_tensor = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
        size = self.image_size
        train_tf = v2.Compose([v2.Resize(size, antialias=True), v2.RandomCrop(size, padding=size // 8),
                               v2.RandomHorizontalFlip(), *to_tensor])
        clean_tf = v2.Compose([v2.Resize(size, antialias=True), v2.CenterCrop(size), *to_tensor])
        train = open_image_dataset(self.data_dir, "train", transform=train_tf)  # type: ignore[arg-type]
        self.num_classes = len(train.classes)  # type: ignore[union-attr]  # a held-out Subset carries .classes too
        g = torch.Generator().manual_seed(0)  # the same subsets on every rank
        order = torch.randperm(len(train), generator=g).tolist()
        chosen = order[: self.limit] if self.limit else order
        self.train_set = Subset(train, sorted(chosen))
        # The MI pool: clean training images outside the trained subset when there are any.
        rest = order[len(chosen):] or chosen
        clean_train = open_image_dataset(self.data_dir, "train", transform=clean_tf)  # type: ignore[arg-type]
        self.pool_set = Subset(clean_train, rest[: self.pool_size])
        val = open_image_dataset(self.data_dir, "test", transform=clean_tf)  # type: ignore[arg-type]
        if self.limit_val is not None and self.limit_val < len(val):
            val = Subset(val, sorted(torch.randperm(len(val), generator=g)[: self.limit_val].tolist()))
        self.val_set = val

    # -- what Lightning asks for

    def train_collate(self) -> VarMixupCollate:
        """The train ``collate_fn``: ``(image, label)`` items to ``(images (B, C, H, W), soft targets (B, K))``."""
        return VarMixupCollate(self.vae, num_classes=self.num_classes, alpha=self.alpha, residual=self.residual,
                               seed=self.seed)

    def train_dataloader(self) -> DataLoader:
        # shuffle=True becomes a DistributedSampler under DDP; collate_fn is kept.
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, drop_last=True,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          collate_fn=self.collate)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=2 * self.batch_size, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def mi_pool(self) -> Dataset:
        """Clean labelled images for :class:`~varmixup_aug.MIPredictor`, ``(image (C, H, W) in [0, 1], label)``."""
        return self.pool_set


def small_cnn(channels: int, num_classes: int, width: int = 32) -> nn.Module:
    """A small CNN on [0, 1] images ``(B, C, H, W)`` -> logits ``(B, num_classes)``."""
    w = width
    return nn.Sequential(
        nn.Conv2d(channels, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, num_classes),
    )


class VarMixupClassifier(L.LightningModule):
    """Trains on VarMixup's soft targets; validates clean and with Mixup Inference (MI-OL).

    Logged: ``train_loss`` (soft-target cross-entropy), ``val_loss``, ``val_acc`` (clean) and
    ``val_mi_acc`` (``MIPredictor`` around the same network), averaged over ranks.

    Args:
        num_classes: classes.
        width: CNN width.
        lr: SGD learning rate (cosine schedule over the run).
        mi_mode, mi_samples, mi_lam: ``MIPredictor``'s ``mode``, ``num_samples`` and ``lam``.
        seed: ``MIPredictor``'s seed (the same draws in every validation epoch).
    """

    def __init__(self, num_classes: int = 10, *, width: int = 32, lr: float = 0.05, mi_mode: str = "ol",
                 mi_samples: int = 8, mi_lam: float = 0.5, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = small_cnn(3, num_classes, width)

    mi: MIPredictor  # built for each validation epoch; the checkpoint stores the network once, under net.

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, soft_targets = batch  # (B, C, H, W), (B, num_classes) rows summing to 1
        loss = F.cross_entropy(self.net(images), soft_targets)
        self.log("train_loss", loss, prog_bar=True, sync_dist=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        datamodule = self.trainer.datamodule  # type: ignore[attr-defined]  # set by Trainer.fit(datamodule=...)
        hp = self.hparams
        # A submodule like any other: built here, where Lightning has put the network in eval mode.
        self.mi = MIPredictor(self.net, pool=datamodule.mi_pool(), num_classes=hp["num_classes"], mode=hp["mi_mode"],
                              num_samples=hp["mi_samples"], lam=hp["mi_lam"], seed=hp["seed"])

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self.net(images)
        mi_log_probs = self.mi(images)
        self.log_dict({
            "val_loss": F.cross_entropy(logits, labels),
            "val_acc": (logits.argmax(1) == labels).float().mean(),
            "val_mi_acc": (mi_log_probs.argmax(1) == labels).float().mean(),
        }, prog_bar=True, sync_dist=True)

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams["lr"], momentum=0.9, nesterov=True,
                                    weight_decay=5e-4)
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data-dir", help="ImageFolder root with train/ and test/, a .tar.gz of one, or a "
                     "torchvision name")
    src.add_argument("--synthetic", action="store_true", help="small learnable random images")
    p.add_argument("--num-classes", type=int, default=10, help="classes of --synthetic data")
    p.add_argument("--limit", type=int, default=None, help="train on a fixed subset of this many images")
    p.add_argument("--limit-val", type=int, default=1000)
    p.add_argument("--pool-size", type=int, default=500, help="clean images kept for Mixup Inference")
    p.add_argument("--vae", default="cifar10", help=f"a shipped VAE {list_pretrained()} or a checkpoint file")
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--residual", action="store_true")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=-1, help="-1: run all epochs")
    p.add_argument("--limit-val-batches", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=64, help="per process")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers per process")
    p.add_argument("--mi-samples", type=int, default=8)
    p.add_argument("--accelerator", default="cpu")
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--strategy", default="auto", help="e.g. ddp (gloo on the CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/lightning_varmixup", help="Lightning's default_root_dir")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None, *, callbacks: Sequence[L.Callback] = ()) -> L.Trainer:
    args = parse_args(argv)
    L.seed_everything(args.seed, workers=True, verbose=False)  # the same initial weights on every rank
    datamodule = VarMixupDataModule(
        None if args.synthetic else args.data_dir, vae=args.vae, num_classes=args.num_classes,
        batch_size=args.batch_size, num_workers=args.workers, alpha=args.alpha, residual=args.residual,
        seed=args.seed, limit=args.limit, limit_val=args.limit_val, pool_size=args.pool_size)
    if not args.synthetic:
        datamodule.prepare_data()  # the class count is read from the folder; Lightning calls it again (a no-op)
        datamodule.setup("fit")
    model = VarMixupClassifier(datamodule.num_classes, lr=args.lr, mi_samples=args.mi_samples, seed=args.seed)
    trainer = L.Trainer(
        accelerator=args.accelerator, devices=args.devices, strategy=args.strategy, max_epochs=args.epochs,
        max_steps=args.max_steps, limit_val_batches=args.limit_val_batches, default_root_dir=args.out,
        callbacks=list(callbacks), num_sanity_val_steps=0, log_every_n_steps=1, enable_model_summary=False,
    )
    trainer.fit(model, datamodule=datamodule)
    return trainer


if __name__ == "__main__":
    main()
