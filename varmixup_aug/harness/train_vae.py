"""Training a :class:`ConvVAE` on an image dataset, resumable, with a held-out report."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from varmixup_aug import ConvVAE, VAEConfig, VarMixupError, save_vae
from varmixup_aug._checks import check_int, check_number
from varmixup_aug._io import load_training_state, read_header, save_training_state
from varmixup_aug._tensors import module_device, resolve_device, to_float_images
from .resume import changed_settings, check_resume_settings, data_changes, data_record, data_sha256, require_state

__all__ = ["TrainVAEConfig", "train_vae", "evaluate_vae"]

_STATE_KEY = "varmixup_aug_train_state"


@dataclass
class TrainVAEConfig:
    """Settings of :func:`train_vae`; the CLI flags map onto these one to one."""

    out: str
    image_size: int = 32
    latent_dim: int = 256
    widths: tuple[int, ...] = (64, 128, 256)
    blocks_per_stage: int = 0
    beta: float = 0.01
    beta_warmup_epochs: float = 1.0
    epochs: int = 6
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0
    device: str = "auto"
    max_steps: int | None = None
    checkpoint_every: int = 200
    limit_train: int | None = None
    limit_eval: int | None = 2000
    hflip: bool = True
    num_workers: int = 0
    trained_on: str = "unknown"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("image_size", "latent_dim", "epochs", "batch_size", "checkpoint_every"):
            check_int(name, getattr(self, name))
        check_int("max_steps", self.max_steps, allow_none=True)
        check_int("blocks_per_stage", self.blocks_per_stage, minimum=0)
        for name in ("lr", "beta"):
            check_number(name, getattr(self, name), low=0, low_open=True)
        check_number("beta_warmup_epochs", self.beta_warmup_epochs, low=0)
        self.widths = tuple(self.widths)
        if not self.widths:
            raise VarMixupError("widths must name at least one stage")
        for w in self.widths:
            check_int("widths", w)

    @property
    def state_path(self) -> Path:
        return Path(self.out + ".train-state.safetensors")


def vae_loss(x: Tensor, recon: Tensor, mu: Tensor, logvar: Tensor, beta: float) -> tuple[Tensor, Tensor, Tensor]:
    """Per-image summed squared error plus ``beta`` times the KL, averaged over the batch.

    ``beta`` equals ``2 * sigma**2`` of a Gaussian decoder with fixed noise ``sigma``
    (on images in [0, 1]), so ``beta=0.01`` corresponds to ``sigma ~ 0.07``.
    """
    sse = (recon - x).pow(2).flatten(1).sum(1).mean()
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1).mean()
    return sse + beta * kl, sse, kl


# Settings that change the training trajectory: a resume with other values is refused unless allowed.
_RESUME_SETTINGS = ("epochs", "batch_size", "lr", "seed", "beta", "beta_warmup_epochs", "hflip", "image_size",
                    "latent_dim", "widths", "blocks_per_stage")


def _save_state(cfg: TrainVAEConfig, vae: ConvVAE, opt: torch.optim.Optimizer, epoch: int, step_in_epoch: int,
                global_step: int, elapsed: float, data: str = "", data_dir: dict[str, Any] | None = None) -> None:
    position = {"epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": global_step, "elapsed_s": elapsed,
                "data_sha256": data, "data": data_dir or {},
                "vae_config": vae.config.to_dict(),
                "train_config": {k: v for k, v in asdict(cfg).items() if k != "extra"}}
    save_training_state(cfg.state_path, vae, opt, _STATE_KEY, position)


def _load_state(cfg: TrainVAEConfig, vae: ConvVAE, opt: torch.optim.Optimizer, data: str = "",
                allow_changed_settings: bool = False, data_dir: dict[str, Any] | None = None) -> dict[str, Any]:
    path = require_state(cfg.state_path)
    try:
        meta = read_header(path, _STATE_KEY, writer="train-vae")
    except VarMixupError as exc:
        raise VarMixupError(f"{path}: cannot resume from this training state ({exc})") from exc
    if meta["vae_config"] != vae.config.to_dict():
        raise VarMixupError(
            f"{path}: saved run used VAE config {meta['vae_config']}, not {vae.config.to_dict()}; "
            "pass the same architecture flags to resume"
        )
    now = {k: v for k, v in asdict(cfg).items() if k != "extra"}
    changes = changed_settings(meta.get("train_config", {}), now, _RESUME_SETTINGS)
    changes += data_changes(meta.get("data"), data_dir)
    if meta.get("data_sha256") and data and meta["data_sha256"] != data:
        changes.append("training images: other data (sha256 differs)")
    check_resume_settings(path, changes, allow_changed_settings)
    load_training_state(path, vae, opt, _STATE_KEY, meta)
    return meta


@torch.no_grad()
def evaluate_vae(vae: Any, images: Tensor, *, batch_size: int = 500, progress: bool = False) -> dict[str, Any]:
    """Held-out report for a VAE on ``uint8`` or float images ``(N, C, H, W)`` in [0, 1].

    Returns reconstruction MSE and PSNR (from the posterior mean; PSNR of the split-wide
    MSE and the mean of per-image PSNRs), KL per latent dimension, the number of active
    latent dimensions (variance over the data of the posterior mean above 0.01, Burda et
    al. 2016), and the ELBO in bits/dim under a Gaussian decoder whose variance is the
    split-wide MSE, on the 256-level pixel scale.
    """
    device = module_device(vae)
    sse_total, n, n_pix = 0.0, 0, 0
    per_image_psnr: list[Tensor] = []
    kl_dims: Tensor | None = None
    mus = []
    for start in tqdm(range(0, images.shape[0], batch_size), desc="evaluating", disable=not progress, leave=False):
        x = to_float_images(images[start : start + batch_size].to(device)).float()
        mu, logvar = vae.encode(x)
        recon = vae.decode(mu)
        err = (recon - x).pow(2).flatten(1)
        sse_total += err.sum().item()
        per_image_psnr.append(10 * torch.log10(1.0 / err.mean(1).clamp_min(1e-12)))
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1)
        kl_dims = kl.sum(0) if kl_dims is None else kl_dims + kl.sum(0)
        mus.append(mu.flatten(1).cpu())
        n += x.shape[0]
        n_pix = x[0].numel()
    assert kl_dims is not None
    mse = sse_total / (n * n_pix)
    kl_per_dim = (kl_dims / n).cpu()
    kl_total = kl_per_dim.sum().item()
    active = int((torch.cat(mus).var(0) > 0.01).sum().item())
    # Gaussian NLL per image with variance = mse, in nats on [0, 1]; shift to the 256-level scale.
    nll = 0.5 * n_pix * (1.0 + math.log(2 * math.pi * mse))
    bits_per_dim = (nll + kl_total) / (n_pix * math.log(2)) + 8.0
    return {
        "images": n,
        "mse": mse,
        "psnr_db": 10 * math.log10(1.0 / mse),
        "mean_image_psnr_db": torch.cat(per_image_psnr).mean().item(),
        "kl_total_nats": kl_total,
        "kl_per_dim_mean_nats": kl_total / kl_per_dim.numel(),
        "kl_per_dim_nats": [round(v, 4) for v in kl_per_dim.tolist()],
        "active_dims": active,
        "latent_dim": kl_per_dim.numel(),
        "elbo_bits_per_dim": bits_per_dim,
    }


def train_vae(cfg: TrainVAEConfig, train_images: Tensor, eval_images: Tensor, *, resume: bool = False,
              allow_changed_settings: bool = False, progress: bool = True,
              data_dir: str | os.PathLike[str] | None = None,
              on_checkpoint: Callable[[], None] | None = None) -> dict[str, Any]:
    """Train a VAE on ``uint8 (N, C, H, W)`` images, save it to ``cfg.out``, return the report.

    A training state (model, Adam moments, RNG, position) is saved every
    ``cfg.checkpoint_every`` steps and at the end of each epoch to
    ``cfg.out + ".train-state.safetensors"``; ``resume=True`` continues from it, to the
    same result as an uninterrupted run on the same device. A resume whose settings (batch size,
    lr, seed, schedule, architecture) or training images differ from the saved run's is refused
    unless ``allow_changed_settings``; so is a resume with no training state, or (when ``data_dir`` is given
    both times) from another ``data_dir``. ``on_checkpoint`` is called after every training-state save.
    """
    run = _VAETraining.start(cfg, train_images)
    run.data_dir, run.on_checkpoint = data_record(data_dir), on_checkpoint
    if resume:
        meta = _load_state(cfg, run.vae, run.opt, run.data, allow_changed_settings, run.data_dir)
        run.epoch, run.step_in_epoch, run.global_step = meta["epoch"], meta["step_in_epoch"], meta["global_step"]
        run.elapsed = meta["elapsed_s"]
    run.t0 = time.perf_counter() - run.elapsed
    bar = tqdm(total=run.total, initial=run.global_step, desc="train-vae", unit="step", disable=not progress)
    run.vae.train()
    while run.global_step < run.total:
        _train_epoch(run, train_images, bar)
        if run.step_in_epoch >= run.steps_per_epoch:
            run.epoch, run.step_in_epoch = run.epoch + 1, 0
            run.save()
    bar.close()
    run.save()
    wall = time.perf_counter() - run.t0
    run.vae.eval()
    report = evaluate_vae(run.vae, eval_images, progress=progress)
    report.update({
        "train_images": run.n, "epochs_completed": run.global_step / run.steps_per_epoch, "steps": run.global_step,
        "wall_time_s": wall, "device": str(run.device), "torch_threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in run.vae.parameters()), "final_train_batch": run.last, "beta": cfg.beta,
    })
    extra = {"report": {k: v for k, v in report.items() if k != "kl_per_dim_nats"}, **cfg.extra}
    save_vae(run.vae.cpu(), cfg.out, trained_on=cfg.trained_on, extra=extra)
    return report


@dataclass
class _VAETraining:
    """One run of :func:`train_vae`: the model and optimiser, the position, the last batch's losses."""

    cfg: TrainVAEConfig
    vae: ConvVAE
    opt: torch.optim.Optimizer
    device: torch.device
    n: int
    data: str = ""  # sha256 of the training images
    data_dir: dict[str, Any] = field(default_factory=dict)  # the data_record of data_dir
    on_checkpoint: Callable[[], None] | None = None
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    elapsed: float = 0.0  # seconds trained before this run, when resumed
    t0: float = 0.0
    last: dict[str, float] = field(default_factory=lambda: {"loss": math.nan, "mse": math.nan, "kl": math.nan})

    @classmethod
    def start(cls, cfg: TrainVAEConfig, train_images: Tensor) -> _VAETraining:
        if train_images.dtype != torch.uint8 or train_images.ndim != 4:
            raise VarMixupError(
                f"train_images must be uint8 (N, C, H, W), got {train_images.dtype} {tuple(train_images.shape)}")
        device = resolve_device(cfg.device)
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        vae_cfg = VAEConfig(image_size=cfg.image_size, channels=train_images.shape[1], latent_dim=cfg.latent_dim,
                            widths=tuple(cfg.widths), blocks_per_stage=cfg.blocks_per_stage)
        if train_images.shape[-1] != cfg.image_size or train_images.shape[-2] != cfg.image_size:
            raise VarMixupError(f"images are {tuple(train_images.shape[-2:])}, but image_size is {cfg.image_size}")
        vae = ConvVAE(vae_cfg).to(device)
        return cls(cfg, vae, torch.optim.Adam(vae.parameters(), lr=cfg.lr), device, train_images.shape[0],
                   data_sha256(train_images))

    @property
    def steps_per_epoch(self) -> int:
        return max(1, self.n // self.cfg.batch_size)

    @property
    def planned(self) -> int:  # the lr schedule spans the planned run
        return self.cfg.epochs * self.steps_per_epoch

    @property
    def total(self) -> int:
        return self.planned if self.cfg.max_steps is None else min(self.planned, self.cfg.max_steps)

    def lr_at(self, step: int) -> float:  # cosine decay to 5% of lr
        t = min(step / max(1, self.planned), 1.0)
        return self.cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))

    def beta_at(self, step: int) -> float:  # linear KL warm-up
        warmup_steps = max(1, int(self.cfg.beta_warmup_epochs * self.steps_per_epoch))
        return self.cfg.beta * min(1.0, (step + 1) / warmup_steps)

    def save(self) -> None:
        _save_state(self.cfg, self.vae, self.opt, self.epoch, self.step_in_epoch, self.global_step,
                    time.perf_counter() - self.t0, self.data, self.data_dir)
        if self.on_checkpoint is not None:
            self.on_checkpoint()


def _train_epoch(run: _VAETraining, train_images: Tensor, bar: Any) -> None:
    """The steps of one epoch (or of its rest after a resume), saving the state every ``checkpoint_every``."""
    cfg = run.cfg
    perm = torch.randperm(run.n, generator=torch.Generator().manual_seed(cfg.seed * 100003 + run.epoch))
    while run.step_in_epoch < run.steps_per_epoch and run.global_step < run.total:
        idx = perm[run.step_in_epoch * cfg.batch_size : (run.step_in_epoch + 1) * cfg.batch_size]
        x = to_float_images(train_images[idx].to(run.device, non_blocking=True))
        if cfg.hflip:
            flip = torch.rand(x.shape[0], device=run.device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        beta = run.beta_at(run.global_step)
        run.last = _step(run, x, beta)
        run.step_in_epoch += 1
        run.global_step += 1
        bar.update(1)
        bar.set_postfix(epoch=run.epoch, mse=f"{run.last['mse']:.4f}", kl=f"{run.last['kl']:.1f}", beta=f"{beta:.3g}")
        if run.global_step % cfg.checkpoint_every == 0:
            run.save()


def _step(run: _VAETraining, x: Tensor, beta: float) -> dict[str, float]:
    for g in run.opt.param_groups:
        g["lr"] = run.lr_at(run.global_step)
    recon, mu, logvar = run.vae(x)
    loss, sse, kl = vae_loss(x, recon, mu, logvar, beta)
    if not torch.isfinite(loss):
        raise VarMixupError(f"training diverged at step {run.global_step} (loss {loss.item()}); lower --lr")
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run.vae.parameters(), 100.0)
    run.opt.step()
    return {"loss": loss.item(), "mse": sse.item() / x[0].numel(), "kl": kl.item()}
