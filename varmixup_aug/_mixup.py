"""The VarMixup batch op: drawing parameters, and applying them in a VAE's latent space."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

from ._checks import check_bool, check_int, check_vae, parse_mean_std
from ._errors import VarMixupError
from ._options import MixupOptions, check_alpha_prob
from ._random import StreamSource, sample_beta
from ._tensors import module_device_dtype
from ._vae import VAEProtocol, call_decode, call_encode, check_fits_vae, declared_size, eval_mode
from ._validate import (
    CheckSchedule,
    check_image_values,
    check_label_values,
    float_images,
    image_stats,
    label_kind,
    label_stats,
    read_host,
)

__all__ = ["MixupParams", "Posterior", "VarMixup", "apply_varmixup", "draw_mixup_params", "mix_targets", "varmixup"]

# logvar is clamped to at most this before exp(0.5 * logvar) (as diffusers' DiagonalGaussianDistribution, whose
# range is [-30, 20]): sigma <= e^10, so one image's huge logvar cannot overflow and turn the batch to NaN. Below,
# exp underflows to 0 harmlessly (a point mass), so very negative and -inf log-variances are kept.
LOGVAR_MAX = 20.0
# The value checks of the functional varmixup on device tensors (see CheckSchedule); VarMixup keeps its own.
_FUNCTION_CHECKS = CheckSchedule()


class Posterior(NamedTuple):
    """Cached VAE posteriors of a batch (or of one item): ``mu`` and ``logvar``, each ``(B, *latent)``.

    Attributes:
        mu: the posterior means.
        logvar: the posterior log-variances, of ``mu``'s shape.
    """

    mu: Tensor
    logvar: Tensor

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> Posterior:
        """Both tensors on ``device``."""
        return Posterior(self.mu.to(device, non_blocking=non_blocking),
                         self.logvar.to(device, non_blocking=non_blocking))


@dataclass(frozen=True)
class MixupParams:
    """The random part of one VarMixup call, kept apart from applying it.

    Attributes:
        lam: ``(B,)`` float32 weights of each sample itself; ``1.0`` where not mixed.
        index: ``(B,)`` int64 partner of each sample, a permutation of ``range(B)``.
        applied: ``(B,)`` bool, which samples are mixed (see ``prob``).
        noise_seed: seed for the posterior noise, so applying the same params twice
            gives the same output.
    """

    lam: Tensor
    index: Tensor
    applied: Tensor
    noise_seed: int

    def __post_init__(self) -> None:
        b = self.lam.shape[0] if self.lam.ndim == 1 else -1
        if self.lam.ndim != 1 or self.index.shape != (b,) or self.applied.shape != (b,):
            raise VarMixupError(
                f"MixupParams needs lam, index and applied of shape (B,), got {tuple(self.lam.shape)}, "
                f"{tuple(self.index.shape)}, {tuple(self.applied.shape)}"
            )
        if not bool(((self.lam >= 0) & (self.lam <= 1)).all()):  # NaN fails both comparisons
            raise VarMixupError("MixupParams.lam must lie in [0, 1] (NaN is refused)")
        if not torch.equal(torch.sort(self.index.cpu()).values, torch.arange(b)):
            raise VarMixupError("MixupParams.index must be a permutation of range(B)")


def draw_mixup_params(
    batch_size: int,
    *,
    alpha: float = 1.0,
    lam_per_sample: bool = True,
    prob: float = 1.0,
    generator: torch.Generator | None = None,
) -> MixupParams:
    """Draw ``lam ~ Beta(alpha, alpha)``, a random partner permutation and the ``prob`` mask.

    All draws use ``generator`` (a CPU ``torch.Generator``) or torch's global RNG.
    A batch of size 1 has no partner and is returned unmixed (``lam = 1``).

    Args:
        batch_size: ``B``, the number of samples (>= 1).
        alpha, lam_per_sample, prob: as in :func:`varmixup`.
        generator: CPU ``torch.Generator`` for the draws (default: torch's global RNG).

    Returns:
        A :class:`MixupParams` to pass to :func:`varmixup`, :class:`VarMixup` or :func:`mix_targets`.

    Example:
        >>> import torch
        >>> p = draw_mixup_params(4, alpha=1.0, generator=torch.Generator().manual_seed(0))
        >>> p.lam.shape, sorted(p.index.tolist())
        (torch.Size([4]), [0, 1, 2, 3])
    """
    alpha, prob = check_alpha_prob(alpha, prob)
    batch_size = check_int("batch_size", batch_size, requirement="be a positive int")
    lam_per_sample = check_bool("lam_per_sample", lam_per_sample)
    lam = sample_beta(alpha, batch_size if lam_per_sample else 1, generator)
    if not lam_per_sample:
        lam = lam.expand(batch_size).clone()
    index = torch.randperm(batch_size, generator=generator)
    applied = torch.rand(batch_size, generator=generator) < prob
    if batch_size == 1:
        applied = torch.zeros(1, dtype=torch.bool)
    lam = torch.where(applied, lam, torch.ones_like(lam))
    noise_seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    return MixupParams(lam=lam, index=index, applied=applied, noise_seed=noise_seed)


def _one_hot(labels: Tensor, num_classes: int, dtype: torch.dtype, smoothing: float) -> Tensor:
    if labels.is_floating_point():
        soft = labels.to(dtype)
    else:
        soft = torch.nn.functional.one_hot(labels.long(), num_classes).to(dtype)
    if smoothing:
        soft = soft * (1.0 - smoothing) + smoothing / num_classes
    return soft


def _as_labels(labels: Any) -> Tensor:
    """Labels as a tensor: numpy arrays (class indices or soft-label rows) are converted, tensors kept."""
    if isinstance(labels, Tensor):
        return labels
    if type(labels).__module__ == "numpy" and hasattr(labels, "dtype") and hasattr(labels, "shape"):
        import numpy as np

        arr = np.asarray(labels)
        if arr.dtype.kind in "iu":
            return torch.from_numpy(arr.astype(np.int64))
        if arr.dtype.kind == "f":
            return torch.from_numpy(arr.astype(np.float32))
        raise VarMixupError(f"labels must be integer class indices or float soft labels, got numpy {arr.dtype}")
    raise VarMixupError(f"labels must be a tensor (or a numpy array), got {type(labels).__name__}")


def mix_targets(
    labels: Tensor, params: MixupParams, *, num_classes: int, label_smoothing: float = 0.0,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Soft targets ``lam * y_i + (1 - lam) * y_index[i]``, shape ``(B, num_classes)``, rows summing to 1.

    Args:
        labels: ``(B,)`` int class indices or ``(B, num_classes)`` soft labels.
        params: the :class:`MixupParams` of the batch.
        num_classes, label_smoothing: as in :func:`varmixup`.
        dtype: floating dtype of the targets.
    """
    soft = _one_hot(labels, num_classes, dtype, label_smoothing)
    lam = params.lam.to(device=soft.device, dtype=dtype, non_blocking=True)[:, None]
    return lam * soft + (1.0 - lam) * soft[params.index.to(soft.device, non_blocking=True)]


def _as_norm(normalization: tuple[Sequence[float], Sequence[float]] | None, channels: int, like: Tensor
             ) -> tuple[Tensor, Tensor] | None:
    if normalization is None:
        return None
    mean_t, std_t = parse_mean_std(normalization, channels, name="input_normalization")
    shape = (1, -1, 1, 1)
    return (mean_t.float().to(like.device).view(shape).expand(1, channels, 1, 1),
            std_t.float().to(like.device).view(shape).expand(1, channels, 1, 1))


def _check_images(images: Tensor, vae: Any, space: str) -> None:
    float_images(images, uint8=False, uint8_hint="convert uint8 with images.float() / 255 or "
                 "torchvision.transforms.v2.ToDtype(torch.float32, scale=True)")
    if space == "input":
        return
    check_fits_vae(images, vae, resize_hint="resize them (e.g. torchvision.transforms.v2.Resize) before VarMixup")


def _check_vae(vae: Any, device: torch.device) -> None:
    check_vae(vae, requirement="have encode(x) -> (mu, logvar) and decode(z) -> x (see VAEProtocol)")
    vae_device, _ = module_device_dtype(vae)
    if vae_device is not None and vae_device != device:
        raise VarMixupError(
            f"vae is on {vae_device} but images are on {device}; move it first with vae.to(images.device)"
        )


def _posterior_noise(mu: Tensor, seed: int) -> Tensor:
    g = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(mu.shape, generator=g, dtype=torch.float32).to(device=mu.device, dtype=mu.dtype,
                                                                      non_blocking=True)


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))


def varmixup(images: Tensor | Posterior, labels: Tensor, vae: VAEProtocol | None, *, num_classes: int,
             alpha: float = 1.0, lam_per_sample: bool = True, prob: float = 1.0,
             posterior: Literal["sample", "mean"] = "sample", space: Literal["latent", "input"] = "latent",
             residual: bool = False, label_smoothing: float = 0.0,
             input_normalization: tuple[Sequence[float], Sequence[float]] | None = None,
             autocast_dtype: torch.dtype | None = None, mixup_off_epoch: int | None = None,
             generator: torch.Generator | None = None, params: MixupParams | None = None) -> tuple[Tensor, Tensor]:
    """Mix a batch in the latent space of ``vae`` and mix its labels with the same ``lam``.

    For sample ``i`` with partner ``j = index[i]`` (a random permutation of the batch),
    ``lam ~ Beta(alpha, alpha)``, and posterior draws ``z_i ~ N(mu_i, sigma_i^2)``:

    - paper form: ``x_mix = D(lam * z_i + (1 - lam) * z_j)``;
    - ``residual=True``: ``x_mix = D(z_mix) + lam * (x_i - D(z_i)) + (1 - lam) * (x_j - D(z_j))``,
      which is exactly ``x_i`` at ``lam = 1`` and keeps detail the VAE cannot reconstruct;
    - ``space="input"``: plain mixup ``lam * x_i + (1 - lam) * x_j`` (no VAE needed);
    - targets: ``lam * y_i + (1 - lam) * y_j``, after optional label smoothing.

    Samples not drawn by ``prob`` are returned as given with their own (smoothed) label
    (from cached latents, which hold no pixels: as their reconstruction ``D(z_i)``).
    A batch of size 1 has no partner and is returned unchanged.

    Args:
        images: ``(B, C, H, W)`` float images, or a :class:`Posterior` of cached latents
            (then the encoder is skipped; ``residual`` is not available).
        labels: ``(B,)`` int class indices in ``[0, num_classes)`` or ``(B, num_classes)`` soft labels.
        vae: any object with ``encode(x) -> (mu, logvar)`` and ``decode(z) -> x`` (:class:`VAEProtocol`),
            on the images' device; ``None`` (or ignored) with ``space="input"``.
        num_classes: width of the soft targets.
        alpha: ``lam ~ Beta(alpha, alpha)``; must be > 0 (``1.0`` draws ``lam`` uniformly).
        lam_per_sample: one ``lam`` per sample, or one for the whole batch.
        prob: fraction of samples that are mixed, in [0, 1]; the rest pass through with their own label.
        posterior: ``"sample"`` draws ``z ~ N(mu, sigma^2)`` (the paper), ``"mean"`` uses ``mu``.
        space: ``"latent"`` is VarMixup, ``"input"`` is plain input mixup (no VAE needed).
        residual: ``x_mix = D(z_mix) + lam * (x_i - D(z_i)) + (1 - lam) * (x_j - D(z_j))``: exactly ``x_i``
            at ``lam = 1``, keeps detail the VAE cannot reconstruct.
        label_smoothing: in [0, 1), applied to the one-hot labels before mixing.
        input_normalization: ``(mean, std)`` per channel if the images are normalised: the op mixes in
            pixel space and returns normalised images; without it, images must be in the VAE's range.
        autocast_dtype: ``torch.bfloat16`` or ``torch.float16``: run the VAE under ``torch.autocast`` on the
            batch's device; ``None``: in the VAE's own dtype.
        mixup_off_epoch: from this epoch on (as given to ``set_epoch``, which must be called) batches pass
            through :class:`VarMixup` and :class:`VarMixupCollate` unmixed, images as given, with one-hot,
            label-smoothed targets (timm's ``--mixup-off-epoch``); ``None``: never. No effect in the
            functional :func:`varmixup`, which has no epochs.
        generator: CPU ``torch.Generator`` for all random draws (default: torch's global RNG).
        params: fixed :class:`MixupParams` instead of drawing them (e.g. from ``VarMixup.draw_params``).

    Returns:
        ``(images, targets)``: images with the input's shape, dtype, device and value space;
        targets ``(B, num_classes)`` summing to 1, ready for ``nn.CrossEntropyLoss``.

    Example:
        >>> import torch
        >>> from varmixup_aug import ConvVAE, VAEConfig, varmixup
        >>> _ = torch.manual_seed(0)
        >>> vae = ConvVAE(VAEConfig(image_size=16, latent_dim=8, widths=(8, 16))).eval()
        >>> x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 1])
        >>> xm, t = varmixup(x, y, vae, num_classes=3, generator=torch.Generator().manual_seed(0))
        >>> tuple(xm.shape), tuple(t.shape), bool(torch.allclose(t.sum(1), torch.ones(4)))
        ((4, 3, 16, 16), (4, 3), True)
    """
    options = MixupOptions(num_classes=num_classes, alpha=alpha, lam_per_sample=lam_per_sample, prob=prob,
                           posterior=posterior, space=space, residual=residual, label_smoothing=label_smoothing,
                           input_normalization=input_normalization, autocast_dtype=autocast_dtype,
                           mixup_off_epoch=mixup_off_epoch)
    return apply_varmixup(images, labels, vae, options, generator=generator, params=params,
                          checks=_FUNCTION_CHECKS)


def apply_varmixup(images: Tensor | Posterior, labels: Tensor, vae: VAEProtocol | None, options: MixupOptions, *,
                   generator: torch.Generator | None = None, params: MixupParams | None = None,
                   checks: CheckSchedule | None = None) -> tuple[Tensor, Tensor]:
    """:func:`varmixup` with its options already gathered in a :class:`MixupOptions`.

    ``checks`` says when the value checks run (see :class:`CheckSchedule`); None: on every batch."""
    labels = _as_labels(labels)
    batch, device, kind = _check_batch(images, labels, vae, options)
    source = images.mu if isinstance(images, Posterior) else images
    values = checks is None or checks.due(source)
    if values:
        _check_values(images, labels, kind, vae, options)
    if kind == "soft" and not labels.is_floating_point():
        labels = labels.float()  # integer one-hot rows
    params = _batch_params(batch, options, generator, params)
    out_dtype = source.dtype
    targets = mix_targets(labels.to(device, non_blocking=True), params, num_classes=options.num_classes,
                          label_smoothing=options.label_smoothing, dtype=_target_dtype(labels, out_dtype))
    if not isinstance(images, Posterior):  # cached latents are refused with space="input" (_check_posterior)
        if not bool(params.applied.any()):
            return images.clone(), targets
        if options.space == "input":
            lam = _bcast(params.lam.to(device, images.dtype, non_blocking=True), images)
            return lam * images + (1 - lam) * images[params.index.to(device, non_blocking=True)], targets
    return _mix_in_latent_space(images, vae, options, params, check_outputs=values).to(out_dtype), targets


def _target_dtype(labels: Tensor, out_dtype: torch.dtype) -> torch.dtype:
    """Soft labels keep their float dtype (as torchvision's MixUp does); class indices give the images' float dtype,
    at least float32."""
    return labels.dtype if labels.is_floating_point() else torch.promote_types(out_dtype, torch.float32)


def _check_batch(images: Tensor | Posterior, labels: Tensor, vae: Any, options: MixupOptions
                 ) -> tuple[int, torch.device, str]:
    """Check the structure of everything before any work is done (no host sync); return the batch size, the
    device and the label kind (``"index"`` or ``"soft"``)."""
    if isinstance(images, Posterior):
        _check_posterior(images, options)
        batch, device = images.mu.shape[0], images.mu.device
    else:
        _check_images(images, vae, options.space)
        batch, device = images.shape[0], images.device
    kind = label_kind(labels, batch, options.num_classes)
    if options.space == "latent":
        _check_vae(vae, device)
    return batch, device, kind


_RANGE_MESSAGE = "images hold values in [{min:.3g}, {max:.3g}] but the VAE expects [{low:g}, {high:g}]; "


def _check_values(images: Tensor | Posterior, labels: Tensor, kind: str, vae: Any, options: MixupOptions) -> None:
    """Finiteness, the VAE's value range and the label values, read with one host read."""
    if isinstance(images, Posterior):
        parts, what = image_stats(images.mu) + image_stats(images.logvar), "images (Posterior)"
    else:
        parts, what = image_stats(images, per_channel=True), "images"
    values = read_host(parts + label_stats(labels, kind))
    n = sum(p.numel() for p in parts)
    stats, label_values = values[:n], values[n:]
    if not all(math.isfinite(v) for v in stats):
        raise VarMixupError(f"{what} contain NaN or Inf")
    check_label_values("labels", label_values, kind, options.num_classes, labels)
    if isinstance(images, Posterior) or options.space == "input":
        return
    channels = images.shape[1]
    if options.input_normalization is None:
        low_high, expect = (min(stats[:channels]), max(stats[channels:])), getattr(vae, "input_range", (0.0, 1.0))
        hint = "pass input_normalization=(mean, std) if the images are normalised"
    else:  # per channel: pixel = x * std + mean, std > 0
        mean, std = (t.expand(channels).tolist() for t in parse_mean_std(options.input_normalization, channels,
                                                                         name="input_normalization"))
        low_high = (min(stats[c] * std[c] + mean[c] for c in range(channels)),
                    max(stats[channels + c] * std[c] + mean[c] for c in range(channels)))
        expect, hint = (0.0, 1.0), "check input_normalization"
    check_image_values("images", low_high, (float(expect[0]), float(expect[1])), message=_RANGE_MESSAGE + hint)


def _check_posterior(latents: Posterior, options: MixupOptions) -> None:
    if options.space == "input" or options.residual:
        raise VarMixupError(
            "cached latents (Posterior) support only the paper form in latent space; residual=True and "
            "space='input' need the original images"
        )
    mu, logvar = latents
    if not (isinstance(mu, Tensor) and isinstance(logvar, Tensor)):
        raise VarMixupError(f"Posterior mu and logvar must be tensors, got {type(mu).__name__} and "
                            f"{type(logvar).__name__}")
    if mu.shape != logvar.shape or mu.ndim < 2 or mu.shape[0] < 1:
        raise VarMixupError(f"Posterior mu and logvar must share a shape (B, *latent) with B >= 1, got "
                            f"{tuple(mu.shape)} and {tuple(logvar.shape)}")
    if not (mu.is_floating_point() and logvar.is_floating_point()):
        raise VarMixupError(f"Posterior mu and logvar must be floating point, got {mu.dtype} and {logvar.dtype}")


def _batch_params(batch: int, options: MixupOptions, generator: torch.Generator | None,
                  params: MixupParams | None) -> MixupParams:
    if params is None:
        return draw_mixup_params(batch, alpha=options.alpha, lam_per_sample=options.lam_per_sample,
                                 prob=options.prob, generator=generator)
    if params.lam.shape[0] != batch:
        raise VarMixupError(f"params are for a batch of {params.lam.shape[0]}, got {batch}")
    return params


class _VAESpace(NamedTuple):
    """The VAE's value range, the user's ``(mean, std)`` if images are normalised, and the compute dtype."""

    low: float
    high: float
    norm: tuple[Tensor, Tensor] | None
    dtype: torch.dtype

    def to_vae(self, images: Tensor) -> Tensor:
        """User images to the VAE's range (clamped: the tolerance of the range check lets 1% through)."""
        pixels = images.to(self.dtype)
        if self.norm is not None:
            pixels = pixels * self.norm[1].to(self.dtype) + self.norm[0].to(self.dtype)
        lo_px, hi_px = (0.0, 1.0) if self.norm is not None else (self.low, self.high)
        x_vae = pixels.clamp(lo_px, hi_px)  # the range itself is checked with the batch's values
        if self.norm is not None:  # pixel [0, 1] -> VAE range
            x_vae = x_vae * (self.high - self.low) + self.low
        return x_vae

    def from_vae(self, images: Tensor) -> Tensor:
        """VAE range -> pixel [0, 1] -> the user's normalised space (unchanged without normalisation)."""
        if self.norm is None:
            return images
        pixels = (images - self.low) / (self.high - self.low)
        return (pixels - self.norm[0].to(self.dtype)) / self.norm[1].to(self.dtype)


def _vae_space(vae: Any, options: MixupOptions, source: Tensor, channels: int) -> _VAESpace:
    low, high = getattr(vae, "input_range", (0.0, 1.0))
    norm = _as_norm(options.input_normalization, channels, source)
    return _VAESpace(low, high, norm, module_device_dtype(vae)[1] or torch.float32)


def _mix_in_latent_space(images: Tensor | Posterior, vae: Any, options: MixupOptions, params: MixupParams, *,
                         check_outputs: bool = True) -> Tensor:
    """Encode (unless given latents), draw ``z``, decode the mixed latents, optionally add the residual.

    With ``check_outputs``, what ``encode`` and ``decode`` returned is checked to be finite, item by item, with
    one host read (see :func:`_check_vae_outputs`)."""
    # The shape decode must return: the images' own, or (for cached latents) the VAE's declared size if any.
    if isinstance(images, Posterior):
        source, channels = images.mu, getattr(vae, "channels", None) or 3
        expect = _declared_shape(vae, source.shape[0])
    else:
        source, channels, expect = images, images.shape[1], tuple(images.shape)
    space = _vae_space(vae, options, source, channels)
    lam, index = params.lam.to(source.device, non_blocking=True), params.index.to(source.device, non_blocking=True)
    amp = (torch.autocast(device_type=source.device.type, dtype=options.autocast_dtype)
           if options.autocast_dtype is not None else nullcontext())
    with torch.no_grad(), amp, eval_mode(vae):
        x_vae, mu, logvar = _encode(images, vae, space)
        z = mu
        if options.posterior == "sample":
            z = mu + _posterior_noise(mu, params.noise_seed) * (0.5 * logvar.clamp(max=LOGVAR_MAX)).exp()
        lam_z = _bcast(lam.to(z.dtype), z)
        mixed = call_decode(vae, lam_z * z + (1 - lam_z) * z[index], expect).to(space.dtype)
        decoded = [mixed]
        if options.residual:
            assert x_vae is not None  # Posterior input refuses residual=True
            decoded.append(call_decode(vae, z, expect).to(space.dtype))
            mixed = _add_residual(mixed, x_vae, decoded[1], lam, index, space)
        if check_outputs:
            _check_vae_outputs(None if x_vae is None else (mu, logvar), decoded, z.shape)
        mixed = space.from_vae(mixed)
        if not isinstance(images, Posterior):
            keep = _bcast(~params.applied.to(source.device, non_blocking=True), mixed)
            mixed = torch.where(keep, images.to(space.dtype), mixed)
    return mixed


def _encode(images: Tensor | Posterior, vae: Any, space: _VAESpace) -> tuple[Tensor | None, Tensor, Tensor]:
    """``(x_vae, mu, logvar)``: the images in the VAE's range and their posterior (cached latents: no images)."""
    if isinstance(images, Posterior):
        return None, images.mu.to(space.dtype), images.logvar.to(space.dtype)
    x_vae = space.to_vae(images)
    mu, logvar = call_encode(vae, x_vae)
    return x_vae, mu.to(space.dtype), logvar.to(space.dtype)


def _bad_items(t: Tensor, *, nan_only: bool = False) -> Tensor:
    """``(B,)``: whether item ``b`` of ``t`` holds a NaN (or, unless ``nan_only``, an infinity)."""
    flat = t.reshape(t.shape[0], -1)
    return (flat.isnan() if nan_only else ~flat.isfinite()).any(1)


def _check_vae_outputs(posterior: tuple[Tensor, Tensor] | None, decoded: list[Tensor], latent_shape: Any) -> None:
    """``encode``'s mu finite and logvar not NaN (+-Inf log-variances are clamped or harmless), every decoded
    image finite; one host read for all, and an error naming the method and the first bad item."""
    checks = []
    if posterior is not None:
        checks += [("vae.encode returned NaN or Inf in mu", _bad_items(posterior[0])),
                   ("vae.encode returned NaN in logvar", _bad_items(posterior[1], nan_only=True))]
    checks += [("vae.decode returned NaN or Inf", _bad_items(d)) for d in decoded]
    values = read_host([bad for _, bad in checks])
    batch = checks[0][1].shape[0]
    for k, (what, _) in enumerate(checks):
        bad = [i for i, v in enumerate(values[k * batch:(k + 1) * batch]) if v]
        if bad:
            fix = ("check the encoder's weights and the images it was given" if what.startswith("vae.encode")
                   else f"for the latents of shape {tuple(latent_shape)}; check the decoder's weights, or run it "
                        "without autocast if it overflows in float16")
            raise VarMixupError(f"{what} for item {bad[0]} of the batch ({len(bad)} of {batch} items); {fix}")


def _declared_shape(vae: Any, batch: int) -> tuple[int, ...] | None:
    channels, size = getattr(vae, "channels", None), declared_size(vae)
    if isinstance(channels, int) and size is not None:
        return (batch, channels, *size)
    return None


def _add_residual(mixed: Tensor, x_vae: Tensor, recon: Tensor, lam: Tensor, index: Tensor, space: _VAESpace
                  ) -> Tensor:
    """``D(z_mix) + lam * (x_i - D(z_i)) + (1 - lam) * (x_j - D(z_j))``, exactly ``x_i``/``x_j`` at ``lam`` 1/0."""
    lam_x = _bcast(lam.to(space.dtype), x_vae)
    detail = x_vae - recon
    mixed = (mixed + lam_x * detail + (1 - lam_x) * detail[index]).clamp(space.low, space.high)
    mixed = torch.where(lam_x == 1, x_vae, mixed)
    return torch.where(lam_x == 0, x_vae[index], mixed)


_OPTION_NAMES = frozenset(MixupOptions.__dataclass_fields__)


def _is_tv_tensor(images: Any) -> bool:
    if not (isinstance(images, Tensor) and type(images).__module__.startswith("torchvision.")):
        return False
    from torchvision import tv_tensors

    return isinstance(images, tv_tensors.TVTensor)


class VarMixup:
    """VarMixup for batches already on their device, like timm's ``Mixup``.

    Takes the same arguments as :func:`varmixup` (see there for the rules) and holds the
    VAE and a random stream. Call it on ``(images, labels)``; images may also be a
    :class:`Posterior` from :class:`VarMixupDataset`.

    Args:
        vae: the VAE; must be on the device of the batches it is called with. A
            ``torch.nn.Module`` VAE is put in eval mode.
        num_classes, alpha, lam_per_sample, prob, posterior, space, residual, label_smoothing,
            input_normalization, autocast_dtype, mixup_off_epoch: the options, as in :func:`varmixup`;
            ``mixup_off_epoch`` takes effect here (see below).
        seed: makes the draws reproducible from this number alone: each DataLoader worker,
            distributed rank and epoch derives its own stream from it (never from torch's global
            RNG), so a run is repeated exactly with any number of workers, persistent or not, and
            of ranks, while no two epochs repeat draws. Optionally call :meth:`set_epoch` at the
            start of each epoch (as with ``DistributedSampler``) to key the streams by epoch, e.g.
            to resume at an epoch. With ``seed=None`` draws come from torch's global RNG, mixed
            with the rank on ranks > 0 so that identically seeded ranks still differ.
        generator: a CPU ``torch.Generator`` to draw from instead of ``seed`` (in the process
            that owns it; workers derive their streams from its ``initial_seed()``).

    Switching mixing off (timm's ``--mixup-off-epoch`` and ``Mixup.mixup_enabled``): with
    ``mixup_off_epoch=e``, calls made after ``set_epoch(k)`` with ``k >= e`` return the batch unmixed;
    without ``set_epoch`` the epoch is unknown and mixing stays on. ``mixer.mixup_enabled = False``
    switches mixing off until it is set back to True. Both are held in shared memory, so a change made
    in the main process reaches every DataLoader worker, persistent ones included. An unmixed batch:
    the images as given (not reconstructed; no random draw is taken), targets one-hot with
    ``label_smoothing`` (or the soft labels given); cached latents (:class:`Posterior`) hold no pixels,
    so they are decoded from the posterior mean ``D(mu)``.

    Train mode: a VAE in train mode (e.g. switched back by a parent ``model.train()``) is run in
    eval mode for each call and left in its own mode afterwards, so dropout never changes a batch.

    Example:
        >>> import torch
        >>> from varmixup_aug import VarMixup
        >>> mixer = VarMixup(None, num_classes=10, space="input", seed=0)  # plain mixup, no VAE
        >>> x, t = mixer(torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,)))
        >>> tuple(x.shape), tuple(t.shape)
        ((8, 3, 32, 32), (8, 10))
    """

    def __init__(self, vae: VAEProtocol | None, *, num_classes: int, alpha: float = 1.0, lam_per_sample: bool = True,
                 prob: float = 1.0, posterior: Literal["sample", "mean"] = "sample",
                 space: Literal["latent", "input"] = "latent", residual: bool = False, label_smoothing: float = 0.0,
                 input_normalization: tuple[Sequence[float], Sequence[float]] | None = None,
                 autocast_dtype: torch.dtype | None = None, mixup_off_epoch: int | None = None,
                 seed: int | None = None, generator: torch.Generator | None = None) -> None:
        options = MixupOptions(num_classes=num_classes, alpha=alpha, lam_per_sample=lam_per_sample, prob=prob,
                               posterior=posterior, space=space, residual=residual, label_smoothing=label_smoothing,
                               input_normalization=input_normalization, autocast_dtype=autocast_dtype,
                               mixup_off_epoch=mixup_off_epoch)
        if options.space == "latent":
            check_vae(vae, requirement="implement encode/decode (VAEProtocol) when space='latent'")
            if isinstance(vae, torch.nn.Module):
                vae.eval()
        _as_norm(options.input_normalization, getattr(vae, "channels", 3) or 3, torch.zeros(1))
        self.vae = vae
        self.options = options
        self._streams = StreamSource(seed=seed, generator=generator)
        self._checks = CheckSchedule()  # value checks on device: the first batch, then every CHECK_EVERY-th
        # [0]: mixup_enabled, [1]: 1 once set_epoch was called, [2]: that epoch. Shared memory, so that forked,
        # spawned and persistent DataLoader workers see the main process's writes (as StreamSource's epoch).
        self._switch = torch.tensor([1, 0, 0], dtype=torch.int64).share_memory_()

    def __getattr__(self, name: str) -> Any:
        # mixer.alpha, mixer.num_classes, ...: read from the options.
        options = self.__dict__.get("options")
        if options is not None and name in _OPTION_NAMES:
            return getattr(options, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _OPTION_NAMES:
            raise AttributeError(f"VarMixup's options are fixed at construction; make a new {type(self).__name__}")
        super().__setattr__(name, value)

    @classmethod
    def from_timm_args(cls, vae: VAEProtocol | None, **kwargs: Any) -> VarMixup:
        """A VarMixup from the ``mixup_args`` dict of timm's ``train.py``: ``VarMixup.from_timm_args(vae,
        **mixup_args)`` stands where ``timm.data.Mixup(**mixup_args)`` does.

        timm's arguments (``mixup_alpha``, ``cutmix_alpha``, ``cutmix_minmax``, ``prob``, ``switch_prob``, ``mode``,
        ``correct_lam``, ``label_smoothing``, ``num_classes``, ``multi_label``) take timm's defaults when missing;
        ``mixup_alpha`` becomes ``alpha``, ``mode="batch"`` one ``lam`` per batch and ``mode="elem"`` one per sample
        (with ``prob`` per sample). Every other keyword is VarMixup's own (``seed``, ``residual``,
        ``input_normalization``, ``mixup_off_epoch``, ...). Refused, naming the argument: CutMix (``cutmix_alpha > 0``
        or ``cutmix_minmax``: use ``varmixup_aug.integrations.timm.VarMixupCutMix``), ``mode`` ``"pair"``/``"half"``,
        ``prob < 1`` with ``mode="batch"``, ``mixup_alpha=0`` and ``multi_label=True``.

        Example:
            >>> mixup_args = dict(mixup_alpha=0.8, cutmix_alpha=0.0, cutmix_minmax=None, prob=1.0, switch_prob=0.5,
            ...                   mode="batch", label_smoothing=0.1, num_classes=10)
            >>> VarMixup.from_timm_args(None, **mixup_args, space="input").alpha
            0.8
        """
        from ._timm_args import TIMM_DEFAULTS, timm_to_varmixup_kwargs

        timm_args = {k: v for k, v in kwargs.items() if k in TIMM_DEFAULTS}
        extra = {k: v for k, v in kwargs.items() if k not in TIMM_DEFAULTS}
        return cls(vae, **timm_to_varmixup_kwargs(timm_args, extra, with_cutmix=False, batch_prob=False))

    def set_epoch(self, epoch: int) -> None:
        """Key the seeded streams by ``epoch`` (like ``DistributedSampler.set_epoch``), in this process and in
        every DataLoader worker, persistent ones included; call it before iterating the epoch. Optional: without
        it, streams already move on from epoch to epoch. No effect with ``seed=None``."""
        epoch = check_int("epoch", epoch, minimum=0)
        self._streams.set_epoch(epoch)
        self._switch[2] = epoch
        self._switch[1] = 1

    @property
    def mixup_enabled(self) -> bool:
        """Whether batches are mixed (like timm's ``Mixup.mixup_enabled``); the loop may set it to False, in the
        main process, to switch mixing off in every DataLoader worker too (see the class docstring)."""
        return bool(self._switch[0])

    @mixup_enabled.setter
    def mixup_enabled(self, value: bool) -> None:
        self._switch[0] = int(check_bool("mixup_enabled", value))

    @property
    def mixing(self) -> bool:
        """Whether the next call mixes: ``mixup_enabled`` and not past ``mixup_off_epoch``."""
        enabled, epoch_set, epoch = self._switch.tolist()
        off = self.options.mixup_off_epoch
        return bool(enabled) and not (off is not None and epoch_set and epoch >= off)

    def draw_params(self, batch_size: int) -> MixupParams:
        """Draw the random parameters for one batch from this object's stream."""
        o = self.options
        return draw_mixup_params(batch_size, alpha=o.alpha, lam_per_sample=o.lam_per_sample, prob=o.prob,
                                 generator=self._streams.get())

    def __call__(self, images: Any, labels: Tensor | None = None, *, params: MixupParams | None = None) -> Any:
        if labels is None:
            return self._call_structure(images, params)
        if _is_tv_tensor(images):  # torchvision's tv_tensors.Image in, tv_tensors.Image out
            from torchvision import tv_tensors

            mixed, targets = self._call_tensors(images.as_subclass(Tensor), labels, params)
            return tv_tensors.wrap(mixed, like=images), targets
        return self._call_tensors(images, labels, params)

    def _call_structure(self, batch: Any, params: MixupParams | None) -> Any:
        """One argument, as torchvision's ``v2.MixUp`` takes it: an ``(images, labels)`` tuple or list (returned as
        the same type), or a dict whose image and label keys are found as in :class:`VarMixupCollate` (returned as a
        copy with those two values replaced, every other key passed through)."""
        if isinstance(batch, (tuple, list)) and len(batch) == 2:
            out = self(batch[0], batch[1], params=params)
            if type(batch) is list:
                return list(out)
            return tuple(out) if type(batch) is tuple else out
        if isinstance(batch, Mapping):
            from ._collate import resolve_item_keys

            image_key, label_key = resolve_item_keys(batch)
            images, targets = self(batch[image_key], batch[label_key], params=params)
            return {**batch, image_key: images, label_key: targets}
        what = f"a {type(batch).__name__}" + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        raise VarMixupError(
            f"VarMixup needs the labels too: call it as mixer(images, labels), mixer((images, labels)) or "
            f"mixer({{'image': images, 'label': labels}}); got {what} alone"
        )

    def _call_tensors(self, images: Tensor | Posterior, labels: Tensor, params: MixupParams | None
                      ) -> tuple[Tensor, Tensor]:
        if not self.mixing:
            return self._unmixed(images, labels)
        if params is None:
            source = images.mu if isinstance(images, Posterior) else images
            if isinstance(source, Tensor) and source.ndim >= 1 and source.shape[0] >= 1:
                params = self.draw_params(source.shape[0])
        return apply_varmixup(images, labels, self.vae, self.options, params=params, checks=self._checks)

    def _unmixed(self, images: Tensor | Posterior, labels: Tensor) -> tuple[Tensor, Tensor]:
        """The batch passed through: images as given (cached latents decoded from ``mu``), one-hot targets."""
        source = images.mu if isinstance(images, Posterior) else images
        if not (isinstance(source, Tensor) and source.ndim >= 1 and source.shape[0] >= 1):
            return apply_varmixup(images, labels, self.vae, self.options)  # its checks say what is wrong
        b = source.shape[0]
        params = MixupParams(lam=torch.ones(b), index=torch.arange(b), applied=torch.zeros(b, dtype=torch.bool),
                             noise_seed=0)
        options = dataclasses.replace(self.options, posterior="mean") if isinstance(images, Posterior) else self.options
        return apply_varmixup(images, labels, self.vae, options, params=params, checks=self._checks)

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.options.as_kwargs().items())
        return f"{type(self).__name__}({options})"
