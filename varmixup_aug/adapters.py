"""Adapters that put other libraries' autoencoders behind the package's VAE protocol.

diffusers is optional: this module imports it only in :meth:`AutoencoderKLAdapter.from_pretrained`;
wrapping an ``AutoencoderKL`` you already built needs nothing beyond it.

Example (no download: a tiny, randomly initialised model):
    >>> import torch
    >>> from diffusers import AutoencoderKL
    >>> from varmixup_aug.adapters import AutoencoderKLAdapter
    >>> _ = torch.manual_seed(0)
    >>> kl = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
    ...                    up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8, sample_size=32)
    >>> vae = AutoencoderKLAdapter(kl, scale_latents=True)
    >>> mu, logvar = vae.encode(torch.rand(2, 3, 32, 32))
    >>> tuple(mu.shape), tuple(vae.decode(mu).shape)
    ((2, 4, 16, 16), (2, 3, 32, 32))
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor, nn

from ._errors import VarMixupError

__all__ = ["AutoencoderKLAdapter"]

_INSTALL_HINT = 'pip install "varmixup-aug[diffusers]"'


def _import_autoencoder_kl() -> Any:
    try:
        from diffusers import AutoencoderKL
    except ImportError as exc:
        raise VarMixupError(f"AutoencoderKLAdapter.from_pretrained needs diffusers; install it with {_INSTALL_HINT}"
                            ) from exc
    return AutoencoderKL


def _config_get(config: Any, key: str, default: Any = None) -> Any:
    if isinstance(config, dict):
        return config.get(key, default)
    return getattr(config, key, default)


def _per_channel(values: Any, channels: int, name: str) -> Tensor:
    t = torch.as_tensor(values, dtype=torch.float64).flatten()
    if t.numel() not in (1, channels):
        raise VarMixupError(f"autoencoder config {name} needs 1 or {channels} values, got {t.numel()}")
    return t.expand(channels).clone()


class AutoencoderKLAdapter(nn.Module):
    """A diffusers ``AutoencoderKL`` behind varmixup-aug's VAE protocol, for images in [0, 1].

    The autoencoder is registered as the submodule ``autoencoder``, so ``state_dict()``,
    ``.to()`` and ``.eval()`` cover its weights. Use it wherever the package takes a VAE
    (:class:`~varmixup_aug.VarMixup`, :class:`~varmixup_aug.VarMixupCollate`,
    :class:`~varmixup_aug.VarMixupDataset`, :func:`~varmixup_aug.varmixup`).

    - ``encode(x)``: images ``(B, C, H, W)`` in [0, 1] are mapped to diffusers' [-1, 1] and
      encoded; returns ``(mean, logvar)`` of ``latent_dist``, each ``(B, latent_channels, H/f, W/f)``
      with ``f = 2 ** (len(block_out_channels) - 1)`` (8 for Stable Diffusion's VAE).
    - ``decode(z)``: latents of that shape back to images ``(B, C, H, W)`` in [0, 1] (clamped).

    Latent scaling: with ``scale_latents=False`` (default) the latents are the raw posterior.
    With ``scale_latents=True`` they are in the space diffusion models work in:
    ``(z - shift) * scale`` per channel, where ``scale = scaling_factor`` and
    ``shift = shift_factor`` (0 when unset) from the autoencoder's config, or, when the config has
    ``latents_mean`` and ``latents_std``, ``shift = latents_mean`` and
    ``scale = scaling_factor / latents_std``. Then ``mean`` is mapped the same way,
    ``logvar + 2 * log(scale)``, and ``decode`` undoes the map first. Mixing commutes with this
    affine map, so VarMixup's images are the same either way; the choice matters for latents you
    keep (the :class:`~varmixup_aug.VarMixupDataset` cache) or hand to a diffusion model.

    Image size: the autoencoder is fully convolutional and reads any ``H, W`` divisible by ``f``;
    ``encode`` refuses others. ``image_size`` is ``None`` (any size) unless given, because the
    config's ``sample_size`` is the training resolution, not a limit; pass ``image_size`` to let
    the package refuse batches of another size before any work is done.

    Precision: the adapter runs in the autoencoder's dtype and casts inputs to it. Stable
    Diffusion's VAE overflows in float16 (its config has ``force_upcast=True``); keep it in
    float32 and pass ``autocast_dtype=torch.bfloat16`` to VarMixup, or use a float16-safe VAE.

    Args:
        autoencoder: a ``diffusers.AutoencoderKL`` (or any module whose ``encode(x)`` returns an
            object with ``latent_dist.mean``/``.logvar``, whose ``decode(z)`` returns an object
            with ``.sample``, and which has a diffusers ``config``).
        scale_latents: map latents with the config's scaling (see above).
        image_size: the one square size the batches must have, or ``None``.

    Attributes:
        channels: image channels (``config.in_channels``).
        image_size: as given.
        input_range: ``(0.0, 1.0)``.
        latent_channels: channels of the latents.
        downsample_factor: ``f`` above.
    """

    input_range: tuple[float, float] = (0.0, 1.0)
    # Typed here, since nn.Module's attribute lookup types submodules and buffers as ``Tensor | Module``; the
    # autoencoder is ``Any`` because diffusers is optional (and its outputs, ``latent_dist``/``sample``, untyped).
    autoencoder: Any
    latent_shift: Tensor
    latent_scale: Tensor
    latent_log_scale: Tensor

    def __init__(self, autoencoder: nn.Module, *, scale_latents: bool = False, image_size: int | None = None) -> None:
        super().__init__()
        if not isinstance(autoencoder, nn.Module) or not (
            callable(getattr(autoencoder, "encode", None)) and callable(getattr(autoencoder, "decode", None))
        ):
            raise VarMixupError(
                f"autoencoder must be a diffusers AutoencoderKL (an nn.Module with encode and decode), "
                f"got {type(autoencoder).__name__}"
            )
        config = getattr(autoencoder, "config", None)
        if config is None:
            raise VarMixupError(f"autoencoder has no diffusers config; got {type(autoencoder).__name__}")
        if not isinstance(scale_latents, bool):
            raise VarMixupError(f"scale_latents must be True or False, got {scale_latents!r}")
        if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                       or image_size < 1):
            raise VarMixupError(f"image_size must be a positive int or None, got {image_size!r}")
        in_channels = int(_config_get(config, "in_channels", 3))
        out_channels = int(_config_get(config, "out_channels", in_channels))
        if in_channels != out_channels:
            raise VarMixupError(
                f"autoencoder reads {in_channels} channels but writes {out_channels}; VarMixup needs the same number"
            )
        block_out_channels = _config_get(config, "block_out_channels", None)
        self.downsample_factor = 2 ** (len(block_out_channels) - 1) if block_out_channels else 1
        if image_size is not None and image_size % self.downsample_factor:
            raise VarMixupError(
                f"image_size must be a multiple of the autoencoder's downsampling factor {self.downsample_factor}, "
                f"got {image_size}"
            )
        self.autoencoder = autoencoder
        self.channels = in_channels
        self.latent_channels = int(_config_get(config, "latent_channels", 4))
        self.image_size = image_size
        self.scale_latents = scale_latents

        shift = torch.zeros(self.latent_channels, dtype=torch.float64)
        scale = torch.ones(self.latent_channels, dtype=torch.float64)
        if scale_latents:
            factor = float(_config_get(config, "scaling_factor", 1.0) or 1.0)
            latents_mean = _config_get(config, "latents_mean", None)
            latents_std = _config_get(config, "latents_std", None)
            if latents_mean is not None and latents_std is not None:
                shift = _per_channel(latents_mean, self.latent_channels, "latents_mean")
                scale = factor / _per_channel(latents_std, self.latent_channels, "latents_std")
            else:
                shift.fill_(float(_config_get(config, "shift_factor", None) or 0.0))
                scale.fill_(factor)
            if not (torch.isfinite(scale).all() and (scale > 0).all() and torch.isfinite(shift).all()):
                raise VarMixupError(f"autoencoder config gives an unusable latent scale {scale.tolist()} "
                                    f"or shift {shift.tolist()}")
        # Non-persistent: derived from the config, so state_dict() holds only the autoencoder's weights.
        view = (1, self.latent_channels, 1, 1)
        self.register_buffer("latent_shift", shift.float().view(view), persistent=False)
        self.register_buffer("latent_scale", scale.float().view(view), persistent=False)
        self.register_buffer("latent_log_scale", scale.log().float().view(view), persistent=False)
        self.train(autoencoder.training)  # follow the wrapped model's mode

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike[str],
        *,
        scale_latents: bool = False,
        image_size: int | None = None,
        **kwargs: Any,
    ) -> AutoencoderKLAdapter:
        """Load ``diffusers.AutoencoderKL.from_pretrained(pretrained_model_name_or_path, **kwargs)`` and wrap it.

        ``kwargs`` go to diffusers (e.g. ``subfolder="vae"``, ``torch_dtype``, ``local_files_only``).
        Example: ``AutoencoderKLAdapter.from_pretrained("stabilityai/sd-vae-ft-mse")``.
        """
        autoencoder_kl = _import_autoencoder_kl()
        model = autoencoder_kl.from_pretrained(pretrained_model_name_or_path, **kwargs)
        return cls(model.eval(), scale_latents=scale_latents, image_size=image_size)

    @property
    def config(self) -> dict[str, Any]:
        """The autoencoder's config plus the adapter's settings (part of the latent-cache fingerprint)."""
        inner = {k: v for k, v in dict(self.autoencoder.config).items() if not k.startswith("_")}
        return {"autoencoder": inner, "scale_latents": self.scale_latents, "image_size": self.image_size}

    def _dtype(self) -> torch.dtype:
        for p in self.autoencoder.parameters():
            return p.dtype
        return torch.float32

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Images ``(B, C, H, W)`` in [0, 1] to ``(mean, logvar)``, each ``(B, latent_channels, H/f, W/f)``."""
        if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1] != self.channels:
            raise VarMixupError(
                f"images must have shape (B, {self.channels}, H, W), got {tuple(getattr(x, 'shape', ()))}"
            )
        f = self.downsample_factor
        if x.shape[-2] % f or x.shape[-1] % f:
            raise VarMixupError(
                f"images are {x.shape[-2]}x{x.shape[-1]} but the autoencoder needs height and width divisible by "
                f"{f}; resize or crop them"
            )
        dist = self.autoencoder.encode(x.to(self._dtype()) * 2.0 - 1.0).latent_dist
        mean, logvar = dist.mean, dist.logvar
        if self.scale_latents:
            mean = (mean - self.latent_shift.to(mean.dtype)) * self.latent_scale.to(mean.dtype)
            logvar = logvar + 2.0 * self.latent_log_scale.to(logvar.dtype)
        return mean, logvar

    def decode(self, z: Tensor) -> Tensor:
        """Latents ``(B, latent_channels, h, w)`` to images ``(B, C, h*f, w*f)`` in [0, 1]."""
        if not isinstance(z, Tensor) or z.ndim != 4 or z.shape[1] != self.latent_channels:
            raise VarMixupError(
                f"latents must have shape (B, {self.latent_channels}, h, w), got {tuple(getattr(z, 'shape', ()))}"
            )
        z = z.to(self._dtype())
        if self.scale_latents:
            z = z / self.latent_scale.to(z.dtype) + self.latent_shift.to(z.dtype)
        image = self.autoencoder.decode(z).sample
        return ((image + 1.0) * 0.5).clamp(0.0, 1.0)

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruct ``x`` through the posterior mean: ``decode(encode(x)[0])``, same shape."""
        return self.decode(self.encode(x)[0])

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, latent_channels={self.latent_channels}, "
                f"downsample_factor={self.downsample_factor}, scale_latents={self.scale_latents}, "
                f"image_size={self.image_size}")

