"""The VAE protocol and the package's convolutional VAE."""

from __future__ import annotations

import functools
import os
import types
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from ._errors import VarMixupError

__all__ = ["ConvVAE", "VAEConfig", "VAEProtocol", "call_decode", "call_encode", "declared_size", "eval_mode",
           "find_modules", "posterior_of"]


@runtime_checkable
class VAEProtocol(Protocol):
    """What VarMixup needs from a VAE.

    Any object with these two methods works, e.g. a thin adapter around a larger model.

    - ``encode(x)`` takes images ``(B, C, H, W)`` in the VAE's input range and returns the
      posterior ``(mu, logvar)``, two tensors of the same latent shape ``(B, *latent)``; a
      ``torch.distributions.Normal`` (or any object with a tensor ``mean`` and ``logvar``,
      ``scale`` or ``stddev``) is accepted too.
    - ``decode(z)`` takes latents ``(B, *latent)`` and returns images ``(B, C, H, W)``
      in the same input range, the shape of the images that were encoded.

    Optional attributes that, when present, let the package check batches early:
    ``image_size: int``, ``channels: int`` and ``input_range: tuple[float, float]``. Without
    them, what ``encode`` and ``decode`` return is checked after each call, and an error
    raised inside them is re-raised as ``VarMixupError`` naming the method and the shapes.

    Every ``nn.Module`` of the VAE that is in train mode is put in eval mode for each VarMixup
    call and restored afterwards, so dropout and batch-norm statistics never make the same draws
    give different images: the VAE itself, or the modules a wrapper keeps in attributes, dicts,
    lists, tuples, bound methods or closures (see ``find_modules``).
    """

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]: ...

    def decode(self, z: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class VAEConfig:
    """Architecture of :class:`ConvVAE`.

    Args:
        image_size: height and width of the square input images. Must be divisible by
            ``2 ** len(widths)``.
        channels: number of image channels.
        latent_dim: size of the flat latent code.
        widths: channel width of each stride-2 stage, from the image side inwards.
        blocks_per_stage: extra 3x3 residual blocks after each stride-2 convolution.
        input_range: value range of the images the model reads and writes.
    """

    image_size: int = 32
    channels: int = 3
    latent_dim: int = 128
    widths: tuple[int, ...] = (64, 128, 256)
    blocks_per_stage: int = 0
    input_range: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        widths = tuple(int(w) for w in self.widths)
        object.__setattr__(self, "widths", widths)
        object.__setattr__(self, "input_range", tuple(float(v) for v in self.input_range))
        if not widths or any(w < 1 for w in widths):
            raise VarMixupError(f"widths must be a non-empty sequence of positive ints, got {self.widths!r}")
        if self.channels < 1:
            raise VarMixupError(f"channels must be >= 1, got {self.channels}")
        if self.latent_dim < 1:
            raise VarMixupError(f"latent_dim must be >= 1, got {self.latent_dim}")
        if self.blocks_per_stage < 0:
            raise VarMixupError(f"blocks_per_stage must be >= 0, got {self.blocks_per_stage}")
        factor = 2 ** len(widths)
        if self.image_size < factor or self.image_size % factor:
            raise VarMixupError(
                f"image_size must be a multiple of 2**len(widths) = {factor}, got {self.image_size}; "
                "change image_size or use fewer widths"
            )
        low, high = self.input_range
        if not low < high:
            raise VarMixupError(f"input_range must be (low, high) with low < high, got {self.input_range}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["widths"] = list(self.widths)
        d["input_range"] = list(self.input_range)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VAEConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise VarMixupError(f"unknown VAE config keys {sorted(unknown)}")
        d = dict(d)
        if "widths" in d:
            d["widths"] = tuple(d["widths"])
        if "input_range" in d:
            d["input_range"] = tuple(d["input_range"])
        return cls(**d)


class _ResBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.act = nn.SiLU()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.act(self.conv1(self.act(x))))


class ConvVAE(nn.Module):
    """A convolutional VAE with a flat Gaussian latent.

    Shapes: ``encode`` maps ``(B, C, H, W)`` to ``mu, logvar`` of shape ``(B, latent_dim)``;
    ``decode`` maps ``(B, latent_dim)`` back to ``(B, C, H, W)`` in ``config.input_range``.

    Args:
        config: the architecture (:class:`VAEConfig`); ``None`` builds one from ``kwargs``.
        kwargs: :class:`VAEConfig`'s fields, instead of ``config`` (not both).

    Example:
        >>> import torch
        >>> from varmixup_aug import ConvVAE, VAEConfig
        >>> _ = torch.manual_seed(0)
        >>> vae = ConvVAE(VAEConfig(image_size=16, latent_dim=8, widths=(8, 16)))
        >>> mu, logvar = vae.encode(torch.rand(2, 3, 16, 16))
        >>> tuple(mu.shape), tuple(vae.decode(mu).shape)
        ((2, 8), (2, 3, 16, 16))
    """

    def __init__(self, config: VAEConfig | None = None, **kwargs: Any) -> None:
        super().__init__()
        if config is None:
            config = VAEConfig(**kwargs)
        elif kwargs:
            raise VarMixupError("pass either config or keyword arguments, not both")
        self.config = config
        c = config
        self._inner = c.image_size // 2 ** len(c.widths)

        enc: list[nn.Module] = []
        in_ch = c.channels
        for w in c.widths:
            enc += [nn.Conv2d(in_ch, w, 4, stride=2, padding=1), nn.SiLU()]
            enc += [_ResBlock(w) for _ in range(c.blocks_per_stage)]
            in_ch = w
        self.encoder = nn.Sequential(*enc, nn.Flatten())
        flat = c.widths[-1] * self._inner**2
        self.to_posterior = nn.Linear(flat, 2 * c.latent_dim)

        self.from_latent = nn.Linear(c.latent_dim, flat)
        dec: list[nn.Module] = []
        rev = list(reversed(c.widths))
        for i, w in enumerate(rev):
            out_ch = rev[i + 1] if i + 1 < len(rev) else rev[-1]
            dec += [_ResBlock(w) for _ in range(c.blocks_per_stage)]
            dec += [nn.SiLU(), nn.ConvTranspose2d(w, out_ch, 4, stride=2, padding=1)]
        dec += [nn.SiLU(), nn.Conv2d(rev[-1], c.channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)
        # NHWC convolutions are about 1.5x faster on CPUs (oneDNN) and suit tensor cores on GPUs.
        self.to(memory_format=torch.channels_last)

    # Attributes read by the package's input checks.
    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def channels(self) -> int:
        return self.config.channels

    @property
    def input_range(self) -> tuple[float, float]:
        return self.config.input_range

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, C, H, W)`` images to ``(mu, logvar)``, each ``(B, latent_dim)``."""
        low, high = self.config.input_range
        x = ((x - low) / (high - low) * 2.0 - 1.0).contiguous(memory_format=torch.channels_last)
        h = self.encoder(x)
        mu, logvar = self.to_posterior(h).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def decode(self, z: Tensor) -> Tensor:
        """``(B, latent_dim)`` latents to ``(B, C, H, W)`` images in ``input_range``.

        After :meth:`compile_decoder`, calls made without gradients (as VarMixup's) run the compiled decoder.
        """
        compiled = self.__dict__.get("_compiled")
        if compiled is not None and not torch.is_grad_enabled():
            return compiled(self, z)
        return self._decode(z)

    def _decode(self, z: Tensor) -> Tensor:
        c = self.config
        h = self.from_latent(z).view(z.shape[0], c.widths[-1], self._inner, self._inner)
        h = h.contiguous(memory_format=torch.channels_last)
        low, high = c.input_range
        return (torch.sigmoid(self.decoder(h)) * (high - low) + low).contiguous()

    def compile_decoder(self, enabled: bool = True) -> ConvVAE:
        """Run :meth:`decode` through ``torch.compile`` (inductor, with frozen weights) when gradients are off.

        On a CPU this fuses each SiLU into the convolution before it and pre-packs the weights; the
        first call per batch shape and dtype compiles (seconds; ``docs/benchmarks.md`` gives the cost
        measured), later calls reuse it. It needs a C++ compiler on the CPU. The compiled decoder
        reads the weights as constants: changing them in place (an optimizer step, ``load_state_dict``)
        makes the next call compile again. Each process compiles on its own (DataLoader workers too,
        where persistent workers pay it once); the compiled code is not pickled. Returns ``self``.
        ``enabled=False`` goes back to the eager decoder.
        """
        if not isinstance(enabled, bool):
            raise VarMixupError(f"enabled must be True or False, got {type(enabled).__name__} {enabled!r}")
        self.__dict__["_compile_decoder"] = enabled
        self.__dict__["_compiled"] = _CompiledDecode() if enabled else None
        return self

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_compiled"] = None  # compiled code does not pickle: each process compiles its own
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if state.get("_compile_decoder"):
            self.__dict__["_compiled"] = _CompiledDecode()

    def forward(self, x: Tensor, *, sample: bool = True) -> tuple[Tensor, Tensor, Tensor]:
        """Reconstruct ``x``; returns ``(reconstruction, mu, logvar)``."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if sample else mu
        return self.decode(z), mu, logvar

    def extra_repr(self) -> str:
        return f"config={self.config}"



_MAIN_PID = os.getpid()


def _forked() -> bool:
    """Whether this process was forked from the one that imported the package (e.g. a DataLoader worker)."""
    return os.getpid() != _MAIN_PID


class _CompiledDecode:
    """``ConvVAE._decode`` compiled with inductor and frozen weights, compiled again when a weight changed."""

    def __init__(self) -> None:
        self._fn: Any = None
        self._key: tuple[Any, ...] | None = None
        self._pid = os.getpid()

    def __call__(self, vae: ConvVAE, z: Tensor) -> Tensor:
        # Frozen weights are constants of the compiled graph: a new tensor or an in-place change (its version
        # counter) means a new compile.
        key = tuple((id(t), t._version) for t in (*vae.parameters(), *vae.buffers()))
        if self._fn is None or key != self._key or self._pid != os.getpid():
            # A forked process (a DataLoader worker) must not use the parent's pool of compile workers: it
            # would wait on it for ever. It compiles in its own process instead.
            options: dict[str, str | int | bool | Callable[..., Any]] = {"freezing": True}
            if _forked():
                options["compile_threads"] = 1
            self._fn = torch.compile(vae._decode, options=options)
            self._key, self._pid = key, os.getpid()
        return self._fn(z)


_SIZE_HINT = ("if the VAE was trained on another image size or channel count, resize the images first; "
              "declaring image_size and channels on the VAE lets VarMixup check batches before calling it")


def posterior_of(out: Any, batch: int) -> tuple[Tensor, Tensor]:
    """``(mu, logvar)`` from what ``vae.encode`` returned: a ``(mu, logvar)`` pair of equal shapes
    ``(batch, *latent)``, or a distribution-like object with a tensor ``mean`` and ``logvar``, ``scale``
    or ``stddev`` (``torch.distributions.Normal``, ``Independent(Normal)``, diffusers' posterior)."""
    if isinstance(out, Tensor):
        raise VarMixupError(
            f"vae.encode must return (mu, logvar) or a torch.distributions.Normal, got one tensor of shape "
            f"{tuple(out.shape)}; if it holds mu and logvar side by side, return out.chunk(2, dim=1)"
        )
    if isinstance(out, (tuple, list)):
        if len(out) != 2 or not all(isinstance(t, Tensor) for t in out):
            got = ", ".join(f"{tuple(t.shape)}" if isinstance(t, Tensor) else type(t).__name__ for t in out)
            raise VarMixupError(
                f"vae.encode must return two tensors (mu, logvar), got a {type(out).__name__} of {len(out)}: ({got}); "
                "return only the posterior's mean and log-variance (wrap the VAE in an adapter if it returns more)"
            )
        mu, logvar = out
    else:
        mean = getattr(out, "mean", None)
        if not isinstance(mean, Tensor):
            raise VarMixupError(
                f"vae.encode must return (mu, logvar) or a distribution with .mean and .scale/.stddev/.logvar "
                f"(e.g. torch.distributions.Normal), got {type(out).__name__}"
            )
        mu = mean
        logvar = getattr(out, "logvar", None)
        if not isinstance(logvar, Tensor):
            scale = getattr(out, "scale", None)
            scale = scale if isinstance(scale, Tensor) else getattr(out, "stddev", None)
            if not isinstance(scale, Tensor):
                raise VarMixupError(
                    f"vae.encode returned a {type(out).__name__} with a mean but no tensor .logvar, .scale or "
                    ".stddev; return (mu, logvar) instead"
                )
            if scale.shape != mu.shape:
                try:
                    scale = scale.expand_as(mu)
                except RuntimeError:
                    pass  # the shape check below names both shapes
            logvar = 2.0 * torch.log(scale)
    if mu.shape != logvar.shape:
        raise VarMixupError(
            f"vae.encode returned mu of shape {tuple(mu.shape)} and logvar of shape {tuple(logvar.shape)}; "
            "they must share one shape (B, *latent): one log-variance per latent dimension"
        )
    if mu.ndim < 1 or mu.shape[0] != batch or not (mu.is_floating_point() and logvar.is_floating_point()):
        raise VarMixupError(
            f"vae.encode must return float mu and logvar of shape (B, *latent) with B = {batch} images, got "
            f"{tuple(mu.shape)} {mu.dtype}"
        )
    return mu, logvar


def _call_vae(vae: Any, method: str, t: Tensor, what: str, hint: str) -> Any:
    """``vae.<method>(t)``; an error raised inside it becomes a ``VarMixupError`` naming the method and shapes."""
    try:
        return getattr(vae, method)(t)
    except VarMixupError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as exc:
        raise VarMixupError(
            f"vae.{method} failed on {what} of shape {tuple(t.shape)} ({t.dtype}, {t.device}): {exc}; {hint}"
        ) from exc


def call_encode(vae: Any, x: Tensor) -> tuple[Tensor, Tensor]:
    """``posterior_of(vae.encode(x))``; an error inside ``encode`` becomes a ``VarMixupError`` naming the shapes."""
    out = _call_vae(vae, "encode", x, "images", _SIZE_HINT)
    return posterior_of(out, x.shape[0])


def call_decode(vae: Any, z: Tensor, expect: tuple[int, ...] | None) -> Tensor:
    """``vae.decode(z)``, checked to be one float tensor of shape ``expect`` ``(B, C, H, W)`` (or 4-d with
    batch ``B`` when ``expect`` is None); an error inside ``decode`` becomes a ``VarMixupError``."""
    out = _call_vae(vae, "decode", z, "latents", "decode must take the latents encode returns")
    if not isinstance(out, Tensor):
        shapes = (", ".join(f"{tuple(t.shape)}" if isinstance(t, Tensor) else type(t).__name__ for t in out)
                  if isinstance(out, (tuple, list)) else "")
        raise VarMixupError(
            f"vae.decode must return one image tensor (B, C, H, W), got a {type(out).__name__}"
            + (f" of ({shapes})" if shapes else "")
            + "; return only the images (wrap the VAE in an adapter whose decode returns out[0] or out.sample)"
        )
    ok = out.ndim == 4 and out.shape[0] == z.shape[0] and out.is_floating_point()
    if ok and expect is not None:
        ok = tuple(out.shape) == tuple(expect)
    if not ok:
        want = f"{tuple(expect)}, the shape of the images encoded" if expect is not None else f"({z.shape[0]}, C, H, W)"
        raise VarMixupError(
            f"vae.decode returned {tuple(out.shape)} {out.dtype} for latents {tuple(z.shape)}, but VarMixup needs "
            f"float images of shape {want}; {_SIZE_HINT}"
        )
    return out


_WALK_DEPTH = 6  # levels of attributes/items followed from the VAE
_WALK_ITEMS = 256  # longer dicts, lists and tuples are not followed


def find_modules(obj: Any, *, tensors: bool = False) -> dict[str, Any]:
    """The ``nn.Module`` objects (and, with ``tensors``, loose tensors) reachable from ``obj``, by dotted path.

    The walk follows object attributes, dict values, list and tuple items, a bound method's ``__self__``,
    a ``functools.partial``'s function and arguments and a function's closure, down to a few levels. It
    stops at an ``nn.Module`` (its submodules are ``module.modules()``) but still follows the module's
    plain attributes that are not registered (a dict of modules kept on a module). Containers longer than
    256 items are not followed. Each object is listed once, at the first path found, in the walk's order,
    which is the same for the same object graph.
    Used to put every module of a VAE wrapper in eval mode and to fingerprint its weights.
    """
    found: dict[str, Any] = {}
    _walk(obj, "", found, set(), 0, tensors)
    return found


def _children(obj: Any) -> list[tuple[str, Any]]:
    """What the walk follows from ``obj``: named children; nothing for leaves (numbers, strings, types, modules)."""
    if isinstance(obj, (str, bytes, int, float, complex, bool, type, types.ModuleType)) or obj is None:
        return []
    if isinstance(obj, (Mapping, list, tuple)) and len(obj) > _WALK_ITEMS:
        return []  # a long container (labels, a file list) holds data, not the VAE's modules
    if isinstance(obj, Mapping):
        return [(str(k), v) for k, v in obj.items()]
    if isinstance(obj, (list, tuple)):
        return [(str(i), v) for i, v in enumerate(obj)]
    if isinstance(obj, types.MethodType):
        return [("__self__", obj.__self__)]
    if isinstance(obj, functools.partial):
        return [("func", obj.func), *((str(i), a) for i, a in enumerate(obj.args)), *obj.keywords.items()]
    if isinstance(obj, types.FunctionType):
        cells = obj.__closure__ or ()
        return [(name, cell.cell_contents) for name, cell in zip(obj.__code__.co_freevars, cells, strict=False)
                if _cell_filled(cell)]
    attrs = getattr(obj, "__dict__", None)
    if not isinstance(attrs, dict):
        return []
    if isinstance(obj, nn.Module):  # registered parameters, buffers and submodules come with the module itself
        return [(k, v) for k, v in attrs.items() if k not in ("_parameters", "_buffers", "_modules")]
    return list(attrs.items())


def _cell_filled(cell: Any) -> bool:
    try:
        _ = cell.cell_contents
    except ValueError:  # a variable the function has not assigned yet
        return False
    return True


def _walk(obj: Any, path: str, found: dict[str, Any], seen: set[int], depth: int, tensors: bool) -> None:
    if id(obj) in seen or depth > _WALK_DEPTH:
        return
    seen.add(id(obj))
    if isinstance(obj, Tensor):
        if tensors:
            found[path] = obj
        return
    if isinstance(obj, nn.Module):
        found[path] = obj
        seen.update(id(m) for m in obj.modules())
    for key, value in _children(obj):
        _walk(value, f"{path}.{key}" if path else key, found, seen, depth + 1, tensors)


@contextmanager
def eval_mode(vae: Any) -> Iterator[None]:
    """Run every ``nn.Module`` of ``vae`` in eval mode (the VAE itself, or the modules a wrapper keeps in
    attributes, dicts, lists, bound methods or closures, see :func:`find_modules`), then restore each
    submodule's own mode. Costs a walk over the wrapper's attributes and the modules' ``modules()``."""
    training = [(m, m.training) for top in find_modules(vae).values() for m in top.modules() if m.training]
    if not training:
        yield
        return
    for m, _ in training:
        m.training = False
    try:
        yield
    finally:
        for m, mode in training:
            m.training = mode


def check_fits_vae(images: Tensor, vae: Any, *, where: str = "", resize_hint: str) -> None:
    """Refuse a ``(B, C, H, W)`` batch whose channels or size differ from what ``vae`` declares."""
    prefix = f"{where}: " if where else ""
    channels = getattr(vae, "channels", None)
    if channels is not None and images.shape[1] != channels:
        raise VarMixupError(f"{prefix}images have {images.shape[1]} channels but the VAE expects {channels}")
    size = declared_size(vae)
    if size is not None and tuple(images.shape[-2:]) != size:
        raise VarMixupError(
            f"{prefix}images are {images.shape[-2]}x{images.shape[-1]} but the VAE expects {size[0]}x{size[1]}"
            + (" (height x width)" if size[0] != size[1] or images.shape[-2] != images.shape[-1] else "") + "; "
            + resize_hint
        )


def declared_size(vae: Any) -> tuple[int, int] | None:
    """The VAE's ``image_size`` as ``(height, width)``: an int means a square; None when it declares none or
    something that is not one or two positive ints."""
    size = getattr(vae, "image_size", None)
    if isinstance(size, int) and not isinstance(size, bool):
        return (size, size)
    if isinstance(size, (tuple, list, torch.Size)) and len(size) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in size):
        return (int(size[0]), int(size[1]))
    return None
