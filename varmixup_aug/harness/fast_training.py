"""A fast CIFAR-10 network and its training schedule, for the evidence runs on the CPU.

The shape and the schedule follow two published fast-training recipes, written here in our own
code: Keller Jordan's airbench94 (94.0% in 9.9 epochs) and David Page's ResNet-9 "bag of tricks".

- Network: :class:`~varmixup_aug.harness.models.FastCifarNet`.
- Schedule (:class:`FastTrainConfig`): SGD with Nesterov momentum on the summed loss, a larger
  learning rate for the batch-norm shifts, label smoothing 0.2, a linear warm-up then a linear
  decay, and a lookahead average of the weights every 5 steps that the model ends on.
- Precision (``FastTrainConfig.precision``): ``"auto"`` trains under ``torch.autocast("cpu",
  dtype=torch.bfloat16)`` with fp32 weights, optimiser and loss where the CPU has bf16 units
  (:func:`cpu_bf16_units`), and in fp32 elsewhere; the VAE methods decode in bf16 too.
- Data: the training set stays in memory as ``uint8``; each batch is cropped (reflect padding)
  and flipped as a whole (:func:`batch_crop_flip`); the flips alternate between epochs.

There is no test-time augmentation: the model that is reported is the model that is attacked.
Every method (:data:`FAST_METHODS`) trains the same network with the same schedule and seed; only
the batch transform differs (:func:`make_batch_transform`). ``adv-train`` is the baseline of fast
adversarial training with one gradient step per batch, computed on the network being trained
(:func:`fgsm_random_start`), by ``adv_attack``:

- ``"fgsm-rs"`` (Wong, Rice and Kolter 2020, "Fast is better than free"): FGSM from a uniform random start
  in the ``adv_eps`` ball, one step of 1.25 eps, clipped to the ball and to [0, 1]. In this recipe it
  overfits catastrophically (the model resists that one step and nothing else; ``examples/single_step_check.py``);
- ``"n-fgsm"`` (de Jorge et al. 2022, "Make some noise"): a start uniform in twice the ball, one step of
  eps, not clipped to the ball (only to [0, 1]); as cheap, and made to avoid that failure.
"""

from __future__ import annotations

import warnings
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from varmixup_aug import MixupParams, VarMixupError, draw_mixup_params, varmixup
from varmixup_aug._checks import check_int
from varmixup_aug._io import atomic_write_json, load_training_state, read_header, save_training_state, write_safetensors
from varmixup_aug._random import derive_seed
from .resume import data_changes, data_record, require_state
from .classifier_checkpoint import CHECKPOINT_NAME, FORMAT_NAME, FORMAT_VERSION, METADATA_KEY
from .models import FastCifarNet

__all__ = [
    "ADV_ATTACKS",
    "FAST_METHODS",
    "FastTrainConfig",
    "PRECISIONS",
    "batch_crop_flip",
    "VAE_METHODS",
    "cpu_bf16_units",
    "fgsm_random_start",
    "make_batch_transform",
    "train_fast_classifier",
    "warn_if_bf16_emulated",
]

FAST_METHODS = ("erm", "mixup", "varmixup", "varmixup-residual", "vae-recon", "adv-train")
# adv-train's single step: the start's radius and the step (multiples of eps), and whether it is clipped to the ball
ADV_ATTACKS: dict[str, dict[str, Any]] = {
    "fgsm-rs": {"start_fraction": 1.0, "step_fraction": 1.25, "project": True},
    "n-fgsm": {"start_fraction": 2.0, "step_fraction": 1.0, "project": False},
}
VAE_METHODS = ("varmixup", "varmixup-residual", "vae-recon")
PRECISIONS = ("auto", "fp32", "bf16")
STATE_NAME = "train_state.safetensors"
_STATE_KEY = "varmixup_aug_fast_state"

_BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")  # x86 AMX, x86 AVX-512, Arm (the 'Features' line)


def cpu_bf16_units() -> tuple[str, ...]:
    """The bf16 compute units of this CPU, by their ``/proc/cpuinfo`` flags: ``amx_bf16`` (AMX tiles),
    ``avx512_bf16`` (AVX-512 BF16 dot products), ``bf16`` (Arm). Empty: bf16 would be emulated (slower
    than fp32). Without ``/proc/cpuinfo`` (not Linux), torch's own CPU checks answer for x86."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        checks = (("amx_bf16", "_is_amx_tile_supported"), ("avx512_bf16", "_is_avx512_bf16_supported"))
        return tuple(name for name, fn in checks if getattr(torch.cpu, fn, lambda: False)())
    flags = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return tuple(f for f in _BF16_FLAGS if f in flags)


def resolve_precision(precision: str, setting: str = "precision") -> str:
    """``"fp32"`` or ``"bf16"``: ``"auto"`` is bf16 where the CPU has bf16 units (:func:`cpu_bf16_units`)."""
    if precision not in PRECISIONS:
        raise VarMixupError(f"{setting} must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bf16" if cpu_bf16_units() else "fp32"
    if precision == "bf16":
        warn_if_bf16_emulated(setting)
    return precision


def warn_if_bf16_emulated(setting: str) -> None:
    """A ``RuntimeWarning`` when bf16 was asked for on a CPU without bf16 units (:func:`cpu_bf16_units`)."""
    if not cpu_bf16_units():
        warnings.warn(f"{setting}='bf16' on a CPU without bf16 units: bf16 is emulated there, many times slower "
                      "than fp32; use 'auto' (fp32 here) or 'fp32'", RuntimeWarning, stacklevel=3)


def batch_crop_flip(padded: Tensor, index: Tensor, *, size: int, flip: Tensor, generator: torch.Generator
                    ) -> Tensor:
    """Random crops of ``size`` from pre-padded ``uint8`` images, flipped where ``flip`` says; one batch at once.

    Args:
        padded: ``(N, C, size + 2p, size + 2p)`` uint8, the whole padded training set.
        index: ``(B,)`` rows of ``padded`` to take.
        size: output height and width.
        flip: ``(B,)`` bool, which crops to mirror left-right.
        generator: draws the crop offsets.

    Returns:
        ``(B, C, size, size)`` uint8.
    """
    span = padded.shape[-1] - size + 1
    b = index.shape[0]
    dy = torch.randint(0, span, (b,), generator=generator)
    dx = torch.randint(0, span, (b,), generator=generator)
    ar = torch.arange(size)
    rows = (dy[:, None] + ar)[:, :, None]                      # (B, size, 1)
    cols = dx[:, None] + ar                                    # (B, size)
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, :]  # (B, 1, size)
    src = padded[index]                                        # (B, C, P, P)
    return src[torch.arange(b)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)


@dataclass
class FastTrainConfig:
    """Settings of :func:`train_fast_classifier` (defaults: the airbench94 recipe, batch 1024).

    ``lr`` and ``weight_decay`` are per 1024 examples on the summed loss, as in that recipe;
    ``bias_lr_scale`` multiplies the learning rate (not the decay) of the batch-norm shifts.
    ``label_smoothing`` 0.2 is airbench's; the papers' regime trains with 0. ``adv_attack``
    (:data:`ADV_ATTACKS`), ``adv_eps`` and ``adv_step_fraction`` (step = fraction x eps; ``None``: the
    attack's own, 1.25 for ``"fgsm-rs"`` and 1.0 for ``"n-fgsm"``, resolved at construction) are read by
    ``adv-train`` only.
    ``precision`` (``"auto"``, ``"fp32"``, ``"bf16"``) is resolved at construction: ``"auto"`` becomes
    ``"bf16"`` where the CPU has bf16 units and ``"fp32"`` elsewhere, so the saved settings (and a
    resume's check of them) name the precision the run used.
    """

    out: str
    method: str = "erm"
    epochs: int = 10
    batch_size: int = 1024
    lr: float = 11.5
    momentum: float = 0.85
    weight_decay: float = 0.0153
    bias_lr_scale: float = 64.0
    label_smoothing: float = 0.2
    warmup_fraction: float = 0.23
    final_lr_fraction: float = 0.07
    whiten_bias_epochs: int = 3
    lookahead_every: int = 5
    translate: int = 2
    alpha: float = 1.0
    adv_attack: str = "fgsm-rs"
    adv_eps: float = 8 / 255
    adv_step_fraction: float | None = None
    widths: tuple[int, ...] = (64, 256, 256)
    seed: int = 0
    checkpoint_every: int = 25
    max_steps: int | None = None
    precision: str = "auto"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in FAST_METHODS:
            raise VarMixupError(f"method must be one of {FAST_METHODS}, got {self.method!r}")
        for name in ("epochs", "batch_size", "checkpoint_every", "lookahead_every"):
            setattr(self, name, check_int(name, getattr(self, name)))
        if self.adv_attack not in ADV_ATTACKS:
            raise VarMixupError(f"adv_attack must be one of {tuple(ADV_ATTACKS)}, got {self.adv_attack!r}")
        if self.adv_step_fraction is None:
            self.adv_step_fraction = ADV_ATTACKS[self.adv_attack]["step_fraction"]
        for name in ("lr", "alpha", "adv_eps", "adv_step_fraction"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise VarMixupError(f"{name} must be a finite number > 0, got {v!r}")
        ls = self.label_smoothing
        if not isinstance(ls, (int, float)) or not 0 <= ls < 1:
            raise VarMixupError(f"label_smoothing must be a number in [0, 1), got {ls!r}; 0 trains on one-hot targets")
        self.widths = tuple(int(w) for w in self.widths)
        self.precision = resolve_precision(self.precision)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """``torch.bfloat16`` for a bf16 run, None for fp32."""
        return torch.bfloat16 if self.precision == "bf16" else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d


def _param_groups(model: FastCifarNet, cfg: FastTrainConfig) -> list[dict[str, Any]]:
    # lr on the summed loss per example; decoupled decay expressed through SGD's coupled decay.
    per_step = 1024 * (1 + 1 / (1 - cfg.momentum))
    lr = cfg.lr / per_step
    decay = cfg.weight_decay * cfg.batch_size / per_step
    norm_shifts = [m.bias for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    whiten_bias = [model.whiten.bias]
    taken = {id(p) for p in norm_shifts + whiten_bias}
    others = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]
    bias_lr = lr * cfg.bias_lr_scale
    return [
        {"params": norm_shifts, "lr": bias_lr, "weight_decay": decay / bias_lr, "base_lr": bias_lr},
        {"params": whiten_bias, "lr": bias_lr, "weight_decay": decay / bias_lr, "base_lr": bias_lr},
        {"params": others, "lr": lr, "weight_decay": decay / lr, "base_lr": lr},
    ]


_RESUMABLE_CHANGES = ("out", "max_steps", "checkpoint_every")  # may differ between a run and its resume


# settings added later, as runs saved before them trained
_DEFAULTS_BEFORE = {"precision": "fp32", "adv_eps": 8 / 255, "adv_step_fraction": 1.25, "adv_attack": "fgsm-rs"}


def _changed_settings(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    saved = {**{k: v for k, v in _DEFAULTS_BEFORE.items() if k in now}, **saved}
    keys = (set(saved) | set(now)) - set(_RESUMABLE_CHANGES)
    return sorted(k for k in keys if saved.get(k) != now.get(k))


def _lr_factor(cfg: FastTrainConfig, step: int, total: int) -> float:
    warm = max(1, int(cfg.warmup_fraction * total))
    if step < warm:
        t = step / warm
        return 0.2 * (1 - t) + t
    t = (step - warm) / max(1, total - warm)
    return (1 - t) + cfg.final_lr_fraction * t


def make_batch_transform(cfg: FastTrainConfig, num_classes: int, vae: Any
                         ) -> Callable[[Tensor, Tensor, torch.Generator], tuple[Tensor, Tensor]]:
    """The method's batch transform: ``(images [0, 1], labels, generator) -> (images, soft targets)``.

    ``erm`` and ``adv-train``: smoothed one-hot targets (``adv-train`` perturbs the images later, in the
    step, as it needs the network); ``mixup``: input mixup; ``varmixup``: the paper form;
    ``varmixup-residual``: the residual form; ``vae-recon``: the VAE's reconstruction of one
    posterior sample ``D(z_i)``, no mixing (``lam = 1``). Targets carry the label smoothing.
    """
    if cfg.method in VAE_METHODS and vae is None:
        raise VarMixupError(f"method {cfg.method!r} needs a VAE; pass vae=")
    ls = cfg.label_smoothing

    def transform(x: Tensor, y: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        if cfg.method in ("erm", "adv-train"):
            return x, F.one_hot(y, num_classes).float() * (1 - ls) + ls / num_classes
        params = draw_mixup_params(x.shape[0], alpha=cfg.alpha, generator=g)
        if cfg.method == "vae-recon":
            params = MixupParams(lam=torch.ones_like(params.lam), index=torch.arange(x.shape[0]),
                                 applied=torch.ones_like(params.applied), noise_seed=params.noise_seed)
        space: Literal["latent", "input"] = "input" if cfg.method == "mixup" else "latent"
        return varmixup(x, y, None if space == "input" else vae, num_classes=num_classes, space=space,
                        residual=cfg.method == "varmixup-residual", label_smoothing=ls, params=params,
                        autocast_dtype=cfg.autocast_dtype)

    return transform


def fgsm_random_start(model: nn.Module, images: Tensor, targets: Tensor, *, eps: float, step_size: float,
                      generator: torch.Generator, autocast_dtype: torch.dtype | None = None,
                      start_radius: float | None = None, project: bool = True) -> Tensor:
    """FGSM from a uniform random start (Wong, Rice and Kolter 2020): the training images of ``adv-train``.

    The start is uniform in the L-inf ball of ``start_radius`` (default ``eps``); one signed-gradient step
    of ``step_size`` on the soft-target cross-entropy, then the result is clipped to the ball of ``eps``
    (unless ``project=False``) and to ``[0, 1]``. N-FGSM (de Jorge et al. 2022) is ``start_radius=2 * eps,
    step_size=eps, project=False``. The network stays in the mode it is in (training, as in those papers' code).

    Args:
        model: ``(B, C, H, W)`` images in ``[0, 1]`` -> logits ``(B, K)``.
        images: ``(B, C, H, W)`` float in ``[0, 1]``.
        targets: ``(B, K)`` soft targets.
        eps, step_size: the radius and the step, in pixel units (8/255 and 10/255 in that paper).
        generator: draws the random start.
        autocast_dtype: ``torch.bfloat16`` to run the forward pass under CPU autocast.

    Returns:
        ``(B, C, H, W)`` adversarial images, detached, in ``images``' memory format.
    """
    noise = torch.rand(images.shape, generator=generator, dtype=images.dtype)
    delta = ((noise * 2 - 1) * (eps if start_radius is None else start_radius)).to(images.device)
    delta = ((images + delta).clamp(0, 1) - images).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast_dtype is torch.bfloat16):
        logits = model(images + delta)
    loss = torch.sum(-targets * F.log_softmax(logits.float(), dim=1))
    (grad,) = torch.autograd.grad(loss, delta)
    step = delta.detach() + step_size * grad.sign()
    step = step.clamp(-eps, eps) if project else step
    return (images + step).clamp(0, 1).contiguous(memory_format=torch.channels_last)


class _Lookahead(nn.Module):
    """An average of every float state tensor that the model is pulled back onto every few steps.

    Its averages are buffers, so a training state saves and restores them with the model.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.names = [k for k, v in model.state_dict().items() if v.is_floating_point()]
        state = model.state_dict()
        for i, k in enumerate(self.names):
            self.register_buffer(f"avg{i}", state[k].detach().clone())

    @torch.no_grad()
    def pull(self, model: nn.Module, decay: float) -> None:
        """Move the average ``1 - decay`` of the way to the model, then set the model to the average."""
        state = model.state_dict()
        for i, k in enumerate(self.names):
            avg = getattr(self, f"avg{i}")
            avg.lerp_(state[k], 1 - decay)
            state[k].copy_(avg)


class _TrainingState(nn.Module):
    """The network and its lookahead average, saved and restored together."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.lookahead = _Lookahead(net)


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` on ``uint8`` images ``(N, C, H, W)``, no test-time augmentation."""
    model.eval()
    correct = 0
    for s in range(0, images.shape[0], batch_size):
        x = images[s:s + batch_size].float().div_(255).contiguous(memory_format=torch.channels_last)
        correct += int((model(x).argmax(1) == labels[s:s + batch_size]).sum())
    return correct / max(1, images.shape[0])


def _write_final(cfg: FastTrainConfig, model: FastCifarNet, meta: dict[str, Any]) -> Path:
    """The compact checkpoint that :func:`load_classifier` reads: fp16 weights, no optimiser state."""
    tensors = {f"model.{k}": (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "architecture": "FastCifarNet",
              "model": model.config(), "storage_dtype": "float16", **meta}
    return write_safetensors(Path(cfg.out) / CHECKPOINT_NAME, tensors, METADATA_KEY, header)


class _Run:
    """One training run's moving parts: the network, optimiser, lookahead, data and position."""

    def __init__(self, cfg: FastTrainConfig, images: Tensor, labels: Tensor, num_classes: int, vae: Any) -> None:
        torch.manual_seed(cfg.seed)
        self.cfg, self.images, self.labels = cfg, images, labels.long()
        self.n, self.size = images.shape[0], images.shape[-1]
        net = FastCifarNet(num_classes=num_classes, channels=images.shape[1], widths=cfg.widths)
        net.init_whitening(images[:5000])
        self.net = net.to(memory_format=torch.channels_last)
        self.opt = torch.optim.SGD(_param_groups(self.net, cfg), momentum=cfg.momentum, nesterov=True)
        self.state = _TrainingState(self.net)
        self.steps_per_epoch = self.n // cfg.batch_size
        self.total = cfg.epochs * self.steps_per_epoch
        p = cfg.translate
        self.padded = F.pad(images, (p, p, p, p), mode="reflect") if p else images
        flip_seed = derive_seed(cfg.seed, "flip")
        self.base_flip = torch.rand(self.n, generator=torch.Generator().manual_seed(flip_seed)) < 0.5
        self.transform = make_batch_transform(cfg, num_classes, vae)
        self.history: list[dict[str, Any]] = []
        self.global_step, self.elapsed = 0, 0.0

    def resume_from(self, path: Path, allow_changed_settings: bool = False, data: dict[str, Any] | None = None
                    ) -> None:
        meta = read_header(require_state(path), _STATE_KEY, writer="train-fast")
        changed = _changed_settings(meta["args"], self.cfg.to_dict()) + data_changes(meta.get("data"), data)
        if changed and allow_changed_settings:
            warnings.warn(f"resuming {path} with changed settings: {', '.join(changed)}", stacklevel=3)
        elif changed:
            raise VarMixupError(f"{path} was written with other settings ({', '.join(changed)}); resume with "
                                "the same ones or use another out folder")
        load_training_state(path, self.state, self.opt, _STATE_KEY, meta)
        self.global_step, self.history, self.elapsed = meta["global_step"], meta["history"], meta["elapsed_s"]

    def batch(self) -> tuple[Tensor, Tensor]:
        """The augmented, transformed batch of the current step; every draw is seeded by its position."""
        cfg = self.cfg
        epoch, step = divmod(self.global_step, self.steps_per_epoch)
        perm_seed = derive_seed(cfg.seed, "perm", epoch)
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(perm_seed))
        idx = perm[step * cfg.batch_size:(step + 1) * cfg.batch_size]
        g = torch.Generator().manual_seed(derive_seed(cfg.seed, "step", self.global_step))
        if cfg.translate:
            flip = self.base_flip[idx] ^ bool(epoch % 2)  # each image flips every other epoch
            x = batch_crop_flip(self.padded, idx, size=self.size, flip=flip, generator=g)
        else:
            x = self.images[idx]
        x = x.float().div_(255).contiguous(memory_format=torch.channels_last)
        x, target = self.transform(x, self.labels[idx], g)
        return x.contiguous(memory_format=torch.channels_last), target

    def step(self) -> float:
        """One optimiser step; returns the mean loss per image."""
        cfg = self.cfg
        epoch = self.global_step // self.steps_per_epoch
        factor = _lr_factor(cfg, self.global_step, self.total)
        for i, group in enumerate(self.opt.param_groups):
            frozen = i == 1 and epoch >= cfg.whiten_bias_epochs  # the whitening bias trains only at first
            group["lr"] = 0.0 if frozen else group["base_lr"] * factor
        self.net.train()
        x, target = self.batch()
        if cfg.method == "adv-train":
            g = torch.Generator().manual_seed(derive_seed(cfg.seed, "adv", self.global_step))
            attack, fraction = ADV_ATTACKS[cfg.adv_attack], cfg.adv_step_fraction
            assert fraction is not None  # resolved at construction
            x = fgsm_random_start(self.net, x, target, eps=cfg.adv_eps, step_size=fraction * cfg.adv_eps,
                                  generator=g, autocast_dtype=cfg.autocast_dtype,
                                  start_radius=attack["start_fraction"] * cfg.adv_eps, project=attack["project"])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
            logits = self.net(x)
        loss = torch.sum(-target * F.log_softmax(logits.float(), dim=1))  # the loss in fp32 either way
        if not torch.isfinite(loss):
            raise VarMixupError(f"training diverged at step {self.global_step}; lower lr")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.global_step += 1
        if self.global_step % cfg.lookahead_every == 0:
            decay = 0.95 ** cfg.lookahead_every * (self.global_step / self.total) ** 3
            self.state.lookahead.pull(self.net, decay)
        return float(loss.detach()) / x.shape[0]


def train_fast_classifier(
    cfg: FastTrainConfig,
    train_images: Tensor,
    train_labels: Tensor,
    *,
    num_classes: int,
    vae: Any = None,
    test_images: Tensor | None = None,
    test_labels: Tensor | None = None,
    data_info: dict[str, Any] | None = None,
    resume: bool = False,
    allow_changed_settings: bool = False,
    progress: bool = True,
    on_checkpoint: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Train :class:`FastCifarNet` with ``cfg.method``; write the checkpoint and report into ``cfg.out``.

    Args:
        cfg: the settings.
        train_images: ``(N, C, H, W)`` uint8, held in memory.
        train_labels: ``(N,)`` int.
        num_classes: number of classes.
        vae: the VAE for the VAE methods (on the CPU).
        test_images, test_labels: for the final clean accuracy in the report (no augmentation).
        data_info: JSON facts stored in the checkpoint (``holdout``, ``data_dir``, ``classes``).
        resume: continue from ``cfg.out/train_state.safetensors`` (refused when it is missing); the result
            equals an uninterrupted run (every draw is seeded from ``(seed, epoch, step)``). Other settings,
            another ``data_info["data_dir"]`` or other training images (sha256) are refused.
        allow_changed_settings: resume even if the settings or data differ from the saved ones (with a warning).
        progress: tqdm bar.
        on_checkpoint: called after every training-state save.

    Returns:
        The report, also written to ``cfg.out/train_report.json``.
    """
    _check_sizes(cfg, train_images, train_labels)
    run = _Run(cfg, train_images, train_labels, num_classes, vae)
    state_path = Path(cfg.out) / STATE_NAME
    data = data_record((data_info or {}).get("data_dir"), train_images, train_labels)
    if resume:
        run.resume_from(state_path, allow_changed_settings, data)
    stop_at = run.total if cfg.max_steps is None else min(run.total, cfg.max_steps)
    t0 = time.perf_counter() - run.elapsed
    epoch_loss = 0.0
    bar = tqdm(total=stop_at, initial=run.global_step, desc=f"train-fast ({cfg.method})", unit="step",
               disable=not progress)
    while run.global_step < stop_at:
        loss = run.step()
        epoch_loss += loss
        bar.update(1)
        bar.set_postfix(epoch=(run.global_step - 1) // run.steps_per_epoch, loss=f"{loss:.3f}")
        if run.global_step % run.steps_per_epoch == 0:
            run.history.append({"epoch": run.global_step // run.steps_per_epoch - 1,
                                "mean_loss": epoch_loss / run.steps_per_epoch, "steps": run.global_step,
                                "elapsed_s": time.perf_counter() - t0})
            epoch_loss = 0.0
        at_end = run.global_step == stop_at  # a stop at max_steps keeps its progress
        if at_end or run.global_step % cfg.checkpoint_every == 0 or run.global_step % run.steps_per_epoch == 0:
            meta = {"args": cfg.to_dict(), "global_step": run.global_step, "history": run.history,
                    "elapsed_s": time.perf_counter() - t0, "data": data}
            save_training_state(state_path, run.state, run.opt, _STATE_KEY, meta)
            if on_checkpoint is not None:
                on_checkpoint()
    bar.close()
    run.elapsed = time.perf_counter() - t0
    return finish_run(run, num_classes, test_images, test_labels, data_info)


def _check_sizes(cfg: FastTrainConfig, images: Any, labels: Any) -> None:
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        got = getattr(images, "dtype", type(images).__name__)
        raise VarMixupError(f"train_images must be a uint8 tensor (N, C, H, W), got {got}")
    n = images.shape[0]
    if n < cfg.batch_size:
        raise VarMixupError(f"batch_size {cfg.batch_size} is larger than the {n} training images (one step needs a "
                            f"full batch); lower --batch-size to {n} or less, or train on more images")
    if not isinstance(labels, Tensor) or labels.shape != (n,):
        raise VarMixupError(f"train_labels must be a tensor of {n} labels, got {getattr(labels, 'shape', labels)!r}")


def finish_run(run: _Run, num_classes: int, test_images: Tensor | None, test_labels: Tensor | None,
               data_info: dict[str, Any] | None) -> dict[str, Any]:
    """End on the lookahead average (when the schedule is done), score, write the checkpoint and report."""
    cfg = run.cfg
    if run.global_step >= run.total:
        run.state.lookahead.pull(run.net, 1.0)  # the run ends on the average
    report: dict[str, Any] = {
        "method": cfg.method, "architecture": "FastCifarNet", "steps": run.global_step,
        "planned_steps": run.total, "epochs_completed": run.global_step / run.steps_per_epoch,
        "train_images": run.n, "batch_size": cfg.batch_size, "wall_time_s": run.elapsed,
        "torch_threads": torch.get_num_threads(), "history": run.history,
        "precision": cfg.precision, "cpu_bf16_units": list(cpu_bf16_units()),
        "parameters": sum(q.numel() for q in run.net.parameters()), "args": cfg.to_dict(),
    }
    if test_images is not None and test_labels is not None:
        report["test_accuracy"] = accuracy(run.net, test_images, test_labels.long())
        report["test_images"] = int(test_images.shape[0])
    info = dict(data_info or {})
    meta = {"method": cfg.method, "epoch": run.global_step // run.steps_per_epoch, "global_step": run.global_step,
            "finished": run.global_step >= run.total, "args": cfg.to_dict(), "history": run.history,
            "holdout": info.pop("holdout", None),
            "data": {"train_images": run.n, "num_classes": num_classes, **info},
            "test_accuracy": report.get("test_accuracy"), "wall_time_s": run.elapsed}
    report["checkpoint"] = str(_write_final(cfg, run.net, meta))
    atomic_write_json(Path(cfg.out) / "train_report.json", report)
    return report
