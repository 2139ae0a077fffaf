"""The VarMixup batch op: drawing parameters, and applying them in a VAE's latent space."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

from ._checks import check_int, check_number, check_vae, parse_mean_std
from ._errors import VarMixupError
from ._random import StreamSource, sample_beta
from ._tensors import module_device_dtype
from ._vae import VAEProtocol

__all__ = ["MixupParams", "Posterior", "draw_mixup_params", "varmixup", "VarMixup", "mix_targets"]

_RANGE_TOLERANCE = 0.05


class Posterior(NamedTuple):
    """Cached VAE posteriors of a batch (or of one item): ``mu`` and ``logvar``, each ``(B, *latent)``."""

    mu: Tensor
    logvar: Tensor


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
        if torch.any((self.lam < 0) | (self.lam > 1)):
            raise VarMixupError("MixupParams.lam must lie in [0, 1]")
        if not torch.equal(torch.sort(self.index.cpu()).values, torch.arange(b)):
            raise VarMixupError("MixupParams.index must be a permutation of range(B)")


def _check_options(num_classes: int, alpha: float, prob: float, label_smoothing: float, space: str,
                   posterior: str) -> None:
    _check_alpha_prob(alpha, prob, label_smoothing)
    check_int("num_classes", num_classes, requirement="be a positive int")
    if space not in ("latent", "input"):
        raise VarMixupError(f"space must be 'latent' or 'input', got {space!r}")
    if posterior not in ("sample", "mean"):
        raise VarMixupError(f"posterior must be 'sample' or 'mean', got {posterior!r}")


def _check_alpha_prob(alpha: float, prob: float, label_smoothing: float) -> None:
    check_number("alpha", alpha, low=0, low_open=True, hint="alpha=1.0 draws lam uniformly")
    check_number("prob", prob, low=0, high=1, requirement="lie in [0, 1]")
    check_number("label_smoothing", label_smoothing, low=0, high=1, high_open=True, requirement="lie in [0, 1)")


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

    Example:
        >>> import torch
        >>> p = draw_mixup_params(4, alpha=1.0, generator=torch.Generator().manual_seed(0))
        >>> p.lam.shape, sorted(p.index.tolist())
        (torch.Size([4]), [0, 1, 2, 3])
    """
    _check_alpha_prob(alpha, prob, 0.0)
    check_int("batch_size", batch_size, requirement="be a positive int")
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


def _check_labels(labels: Tensor, batch_size: int, num_classes: int) -> None:
    if not isinstance(labels, Tensor):
        raise VarMixupError(f"labels must be a tensor, got {type(labels).__name__}")
    if labels.is_floating_point():
        if labels.shape != (batch_size, num_classes):
            raise VarMixupError(
                f"soft labels must have shape (B, num_classes) = ({batch_size}, {num_classes}), "
                f"got {tuple(labels.shape)}"
            )
        if not torch.isfinite(labels).all():
            raise VarMixupError("labels contain NaN or Inf")
        return
    if labels.dtype == torch.bool or labels.is_complex():
        raise VarMixupError(f"labels must be integer class indices or float soft labels, got {labels.dtype}")
    if labels.shape != (batch_size,):
        raise VarMixupError(f"labels must have shape (B,) = ({batch_size},), got {tuple(labels.shape)}")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise VarMixupError(
            f"labels must lie in [0, num_classes) = [0, {num_classes}), got values in [{low}, {high}]; "
            "check num_classes"
        )


def mix_targets(
    labels: Tensor, params: MixupParams, *, num_classes: int, label_smoothing: float = 0.0,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Soft targets ``lam * y_i + (1 - lam) * y_index[i]``, shape ``(B, num_classes)``, rows summing to 1."""
    soft = _one_hot(labels, num_classes, dtype, label_smoothing)
    lam = params.lam.to(device=soft.device, dtype=dtype)[:, None]
    return lam * soft + (1.0 - lam) * soft[params.index.to(soft.device)]


def _as_norm(normalization: tuple[Sequence[float], Sequence[float]] | None, channels: int, like: Tensor
             ) -> tuple[Tensor, Tensor] | None:
    if normalization is None:
        return None
    mean_t, std_t = parse_mean_std(normalization, channels, name="input_normalization")
    shape = (1, -1, 1, 1)
    return (mean_t.float().to(like.device).view(shape).expand(1, channels, 1, 1),
            std_t.float().to(like.device).view(shape).expand(1, channels, 1, 1))


def _check_images(images: Tensor, vae: Any, space: str) -> None:
    if not isinstance(images, Tensor):
        raise VarMixupError(f"images must be a tensor (B, C, H, W), got {type(images).__name__}")
    if images.ndim != 4:
        raise VarMixupError(f"images must have shape (B, C, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise VarMixupError(
            f"images must be floating point, got {images.dtype}; convert uint8 with images.float() / 255 "
            "or torchvision.transforms.v2.ToDtype(torch.float32, scale=True)"
        )
    if images.shape[0] < 1:
        raise VarMixupError("images is an empty batch")
    if not torch.isfinite(images).all():
        raise VarMixupError("images contain NaN or Inf")
    if space == "input":
        return
    channels = getattr(vae, "channels", None)
    if channels is not None and images.shape[1] != channels:
        raise VarMixupError(f"images have {images.shape[1]} channels but the VAE expects {channels}")
    size = getattr(vae, "image_size", None)
    if size is not None and tuple(images.shape[-2:]) != (size, size):
        raise VarMixupError(
            f"images are {images.shape[-2]}x{images.shape[-1]} but the VAE expects {size}x{size}; "
            "resize them (e.g. torchvision.transforms.v2.Resize) before VarMixup"
        )


def _check_vae(vae: Any, device: torch.device) -> None:
    check_vae(vae, requirement="have encode(x) -> (mu, logvar) and decode(z) -> x (see VAEProtocol)")
    vae_device, _ = module_device_dtype(vae)
    if vae_device is not None and vae_device != device:
        raise VarMixupError(
            f"vae is on {vae_device} but images are on {device}; move it first with vae.to(images.device)"
        )


def _posterior_noise(mu: Tensor, seed: int) -> Tensor:
    g = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(mu.shape, generator=g, dtype=torch.float32).to(device=mu.device, dtype=mu.dtype)


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))


def varmixup(
    images: Tensor | Posterior,
    labels: Tensor,
    vae: VAEProtocol | None,
    *,
    num_classes: int,
    alpha: float = 1.0,
    lam_per_sample: bool = True,
    prob: float = 1.0,
    posterior: Literal["sample", "mean"] = "sample",
    space: Literal["latent", "input"] = "latent",
    residual: bool = False,
    label_smoothing: float = 0.0,
    input_normalization: tuple[Sequence[float], Sequence[float]] | None = None,
    autocast_dtype: torch.dtype | None = None,
    generator: torch.Generator | None = None,
    params: MixupParams | None = None,
) -> tuple[Tensor, Tensor]:
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
        vae: any object with ``encode``/``decode`` (:class:`VAEProtocol`), on the images'
            device; ignored when ``space="input"``.
        num_classes: number of classes.
        alpha: Beta concentration, > 0.
        lam_per_sample: one ``lam`` per sample (default) or one for the whole batch.
        prob: fraction of samples that are mixed, in [0, 1].
        posterior: ``"sample"`` draws ``z`` from the posterior (paper), ``"mean"`` uses ``mu``.
        space: ``"latent"`` (VarMixup) or ``"input"`` (plain mixup).
        residual: add back the parts the VAE does not reconstruct (see above).
        label_smoothing: in [0, 1), applied to the one-hot labels before mixing.
        input_normalization: ``(mean, std)`` per channel if ``images`` are normalised;
            the op mixes in pixel space and returns normalised images. Without it, images
            must already be in the VAE's input range.
        autocast_dtype: e.g. ``torch.bfloat16`` to run the VAE under ``torch.autocast``.
        generator: CPU ``torch.Generator`` for all random draws.
        params: fixed :class:`MixupParams` instead of drawing them.

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
    _check_options(num_classes, alpha, prob, label_smoothing, space, posterior)
    from_latents = isinstance(images, Posterior)
    if from_latents:
        if space == "input" or residual:
            raise VarMixupError(
                "cached latents (Posterior) support only the paper form in latent space; residual=True and "
                "space='input' need the original images"
            )
        mu_in, logvar_in = images
        if mu_in.shape != logvar_in.shape or mu_in.ndim < 2:
            raise VarMixupError(f"Posterior mu and logvar must share a shape (B, *latent), got "
                                f"{tuple(mu_in.shape)} and {tuple(logvar_in.shape)}")
        if not (torch.isfinite(mu_in).all() and torch.isfinite(logvar_in).all()):
            raise VarMixupError("images (Posterior) contain NaN or Inf")
        batch, device = mu_in.shape[0], mu_in.device
    else:
        _check_images(images, vae, space)
        batch, device = images.shape[0], images.device
    _check_labels(labels, batch, num_classes)
    if space == "latent":
        _check_vae(vae, device)
    if params is None:
        params = draw_mixup_params(batch, alpha=alpha, lam_per_sample=lam_per_sample, prob=prob, generator=generator)
    elif params.lam.shape[0] != batch:
        raise VarMixupError(f"params are for a batch of {params.lam.shape[0]}, got {batch}")

    out_dtype = mu_in.dtype if from_latents else images.dtype
    target_dtype = torch.promote_types(out_dtype, torch.float32)
    targets = mix_targets(labels.to(device), params, num_classes=num_classes,
                          label_smoothing=label_smoothing, dtype=target_dtype)
    lam = params.lam.to(device)
    index = params.index.to(device)
    if not bool(params.applied.any()) and not from_latents:
        return images.clone(), targets

    if space == "input":
        lam_b = _bcast(lam.to(images.dtype), images)
        return lam_b * images + (1 - lam_b) * images[index], targets

    channels = (getattr(vae, "channels", None) or 3) if from_latents else images.shape[1]
    low, high = getattr(vae, "input_range", (0.0, 1.0))
    norm = _as_norm(input_normalization, channels, mu_in if from_latents else images)
    _, vae_dtype = module_device_dtype(vae)
    compute_dtype = vae_dtype or torch.float32
    amp = (torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype is not None
           else nullcontext())

    with torch.no_grad(), amp:
        if from_latents:
            mu, logvar = mu_in.to(compute_dtype), logvar_in.to(compute_dtype)
        else:
            pixels = images.to(compute_dtype)
            if norm is not None:
                pixels = pixels * norm[1].to(compute_dtype) + norm[0].to(compute_dtype)
                lo_px, hi_px = 0.0, 1.0
            else:
                lo_px, hi_px = low, high
            x_min, x_max = float(pixels.min()), float(pixels.max())
            span = hi_px - lo_px
            if x_min < lo_px - _RANGE_TOLERANCE * span or x_max > hi_px + _RANGE_TOLERANCE * span:
                hint = ("pass input_normalization=(mean, std) if the images are normalised"
                        if norm is None else "check input_normalization")
                raise VarMixupError(
                    f"images hold values in [{x_min:.3g}, {x_max:.3g}] but the VAE expects [{lo_px:g}, {hi_px:g}]; "
                    + hint
                )
            x_vae = pixels.clamp(lo_px, hi_px)
            if norm is not None:  # pixel [0, 1] -> VAE range
                x_vae = x_vae * (high - low) + low
            mu, logvar = vae.encode(x_vae)  # type: ignore[union-attr]
            mu, logvar = mu.to(compute_dtype), logvar.to(compute_dtype)
        if posterior == "sample":
            z = mu + _posterior_noise(mu, params.noise_seed) * (0.5 * logvar).exp()
        else:
            z = mu
        lam_z = _bcast(lam.to(z.dtype), z)
        z_mix = lam_z * z + (1 - lam_z) * z[index]
        mixed = vae.decode(z_mix).to(compute_dtype)  # type: ignore[union-attr]
        if residual:
            recon = vae.decode(z).to(compute_dtype)  # type: ignore[union-attr]
            lam_x = _bcast(lam.to(compute_dtype), x_vae)
            detail = x_vae - recon
            mixed = (mixed + lam_x * detail + (1 - lam_x) * detail[index]).clamp(low, high)
            # Exact sources at the ends.
            mixed = torch.where(lam_x == 1, x_vae, mixed)
            mixed = torch.where(lam_x == 0, x_vae[index], mixed)
        if norm is not None:  # VAE range -> pixel [0, 1] -> user's normalised space
            mixed = ((mixed - low) / (high - low) - norm[0].to(compute_dtype)) / norm[1].to(compute_dtype)
        if not from_latents:
            keep = _bcast(~params.applied.to(device), mixed)
            mixed = torch.where(keep, images.to(compute_dtype), mixed)
    return mixed.to(out_dtype), targets


class VarMixup:
    """VarMixup for batches already on their device, like timm's ``Mixup``.

    Takes the same arguments as :func:`varmixup` (see there for the rules) and holds the
    VAE and a random stream. Call it on ``(images, labels)``; images may also be a
    :class:`Posterior` from :class:`VarMixupDataset`.

    Args:
        vae: the VAE; must be on the device of the batches it is called with. A
            ``torch.nn.Module`` VAE is put in eval mode.
        num_classes, alpha, lam_per_sample, prob, posterior, space, residual,
        label_smoothing, input_normalization, autocast_dtype: as in :func:`varmixup`.
        seed: makes the draws reproducible; each DataLoader worker and distributed rank
            derives its own stream from it.
        generator: a CPU ``torch.Generator`` to draw from instead of ``seed``.

    Example:
        >>> import torch
        >>> from varmixup_aug import VarMixup
        >>> mixer = VarMixup(None, num_classes=10, space="input", seed=0)  # plain mixup, no VAE
        >>> x, t = mixer(torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,)))
        >>> tuple(x.shape), tuple(t.shape)
        ((8, 3, 32, 32), (8, 10))
    """

    def __init__(
        self,
        vae: VAEProtocol | None,
        *,
        num_classes: int,
        alpha: float = 1.0,
        lam_per_sample: bool = True,
        prob: float = 1.0,
        posterior: Literal["sample", "mean"] = "sample",
        space: Literal["latent", "input"] = "latent",
        residual: bool = False,
        label_smoothing: float = 0.0,
        input_normalization: tuple[Sequence[float], Sequence[float]] | None = None,
        autocast_dtype: torch.dtype | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        _check_options(num_classes, alpha, prob, label_smoothing, space, posterior)
        if space == "latent":
            check_vae(vae, requirement="implement encode/decode (VAEProtocol) when space='latent'")
            if isinstance(vae, torch.nn.Module):
                vae.eval()
        _as_norm(input_normalization, getattr(vae, "channels", 3) or 3, torch.zeros(1))
        self.vae = vae
        self.num_classes = num_classes
        self.alpha = float(alpha)
        self.lam_per_sample = lam_per_sample
        self.prob = float(prob)
        self.posterior = posterior
        self.space = space
        self.residual = residual
        self.label_smoothing = float(label_smoothing)
        self.input_normalization = input_normalization
        self.autocast_dtype = autocast_dtype
        self._streams = StreamSource(seed=seed, generator=generator)

    def draw_params(self, batch_size: int) -> MixupParams:
        """Draw the random parameters for one batch from this object's stream."""
        return draw_mixup_params(batch_size, alpha=self.alpha, lam_per_sample=self.lam_per_sample,
                                 prob=self.prob, generator=self._streams.get())

    def __call__(self, images: Tensor | Posterior, labels: Tensor, *, params: MixupParams | None = None
                 ) -> tuple[Tensor, Tensor]:
        if params is None:
            source = images.mu if isinstance(images, Posterior) else images
            if isinstance(source, Tensor) and source.ndim >= 1 and source.shape[0] >= 1:
                params = self.draw_params(source.shape[0])
        return varmixup(
            images, labels, self.vae, num_classes=self.num_classes, alpha=self.alpha,
            lam_per_sample=self.lam_per_sample, prob=self.prob, posterior=self.posterior, space=self.space,
            residual=self.residual, label_smoothing=self.label_smoothing,
            input_normalization=self.input_normalization, autocast_dtype=self.autocast_dtype, params=params,
        )

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_classes={self.num_classes}, alpha={self.alpha}, space={self.space!r}, "
                f"posterior={self.posterior!r}, residual={self.residual}, prob={self.prob}, "
                f"lam_per_sample={self.lam_per_sample}, label_smoothing={self.label_smoothing})")
