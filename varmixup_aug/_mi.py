"""Mixup Inference (MI): average a classifier's softmax over mixes of the input with clean pool samples.

Pang, Xu and Zhu, "Mixup Inference: Better Exploiting Mixup to Defend Adversarial Attacks", ICLR 2020.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ._checks import (
    check_bool,
    check_int,
    check_label_range,
    check_number,
    check_seed_and_generator,
    parse_mean_std,
)
from ._errors import VarMixupError
from ._pool import PoolIndex
from ._tensors import module_device_dtype
from ._validate import (
    RANGE_TOLERANCE,
    check_image_values,
    float_images,
    image_stats,
    read_host,
    to_host,
)

__all__ = ["MIPredictor"]

_MODES = ("ol", "pl", "combined")


def _check_lam(name: str, lam: Any) -> float:
    return check_number(name, lam, low=0, high=1, low_open=True, hint="the paper uses 0.5",
                        requirement="be a number in (0, 1] (the weight of the input in lam*x + (1-lam)*xs)")


def _check_count(name: str, n: Any) -> int:
    return check_int(name, n, requirement="be an int >= 1 (mixes averaged per input)", hint=f"e.g. {name}=30")


_STORED_AT = "model_stored_at"


def _same_tensor(a: Tensor, b: Tensor) -> bool:
    return bool(a.device == b.device and a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride()
            and a.storage_offset() == b.storage_offset()
            and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr())


def _store_model_once(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any]
                      ) -> None:
    """State-dict post-hook: when the wrapped model's tensors were already saved under another prefix of the same
    state dict (``self.net`` of a LightningModule that also holds ``self.mi = MIPredictor(self.net, ...)``), drop
    the copies under ``{prefix}model.`` and record that prefix in the metadata, so the network is stored once."""
    own = prefix + "model."
    keys = [k for k in state_dict if k.startswith(own)]
    if not keys or not prefix:
        return
    first, rest = keys[0][len(own):], {k: v for k, v in state_dict.items() if not k.startswith(own)}
    for other, value in rest.items():
        if not (other.endswith(first) and isinstance(value, Tensor) and isinstance(state_dict[keys[0]], Tensor)
                and _same_tensor(value, state_dict[keys[0]])):
            continue
        alias = other[: len(other) - len(first)]
        if all(isinstance(state_dict[k], Tensor) and isinstance(rest.get(alias + k[len(own):]), Tensor)
               and _same_tensor(rest[alias + k[len(own):]], state_dict[k]) for k in keys):
            for k in keys:
                del state_dict[k]
            local_metadata[_STORED_AT] = alias
            return


def _load_model_stored_once(module: nn.Module, state_dict: dict[str, Any], prefix: str,
                            local_metadata: dict[str, Any], strict: bool, missing_keys: list[str],
                            unexpected_keys: list[str], error_msgs: list[str]) -> None:
    """Load pre-hook for checkpoints written by :func:`_store_model_once`: the model's entries were stored under the
    recorded prefix, where the same network of the parent module loads them; here it keeps its tensors."""
    own = prefix + "model."
    if not local_metadata.get(_STORED_AT) or any(k.startswith(own) for k in state_dict):
        return
    model = getattr(module, "model", None)
    if isinstance(model, nn.Module):
        state_dict.update({own + k: v for k, v in model.state_dict(keep_vars=True).items()})


class MIPredictor(nn.Module):
    """A classifier wrapped in Mixup Inference; ``forward`` returns log mean-softmax ``(B, num_classes)``.

    For each input ``x`` (pixel space ``[0, 1]``) the model first predicts ``y_hat`` once, without
    gradient. Then ``N`` clean pool images ``xs`` are drawn and the model sees
    ``lam * x + (1 - lam) * xs``; the softmax outputs are averaged over the ``N`` rounds:

    - ``mode="pl"`` (MI-PL): ``xs`` uniformly from the pool images of class ``y_hat``.
    - ``mode="ol"`` (MI-OL): a class uniformly among the other classes, then an image of it.
    - ``mode="combined"``: both are run; per input, MI-PL's result is used when
      ``max softmax(model(x)) - max p_PL < threshold`` and MI-OL's otherwise (a large drop of the
      top confidence under MI-PL flags the input as adversarial). This is the rule of the paper's
      code (``attack_resnet_mixuptest_Combined.py`` in github.com/P2333/Mixup-Inference), whose
      defaults are ``threshold=0.2``, ``lam=lam_ol=0.5`` (its README runs ``lam_ol=0.4``), 5 PL and
      15 OL rounds; here ``num_samples`` sets the PL rounds and ``num_samples_ol`` the OL rounds.

    All ``B * N`` mixes go through the model as one batch, split into ``chunk_size`` pieces. The
    output is ``log(mean_n softmax(model(mix_n)))``, so ``softmax(output)`` is the MI average and
    ``nn.CrossEntropyLoss`` on it is the attacker's loss; gradients reach ``x`` through the mixes.

    Pool: a map-style ``Dataset`` of ``(image (C, H, W) float in [0, 1], int label)`` or a pair
    ``(images (P, C, H, W), labels (P,))``. It is loaded once, sorted by class and kept as
    (non-persistent) buffers ``pool_images``, ``pool_labels``, ``pool_order`` (position in the
    given pool), ``class_offsets`` and ``class_counts``, on the model's device and in its dtype;
    ``.to()`` moves them. Requirements: ``pl`` and ``combined`` need at least one image of every
    class ``0..num_classes-1`` (any class can be predicted); ``ol`` needs at least two non-empty
    classes, and when some classes are empty it draws among the other *non-empty* classes (with a
    warning at construction).

    Randomness: draws use only the torch RNG, on the CPU, so they match across devices. With
    ``generator`` (a CPU ``torch.Generator``) or ``seed`` the stream is reproducible and advances
    every call; with neither, torch's global RNG is used. Either way every call draws fresh
    samples (EOT-friendly). ``deterministic=True`` re-creates a generator from ``seed``
    (or ``generator.initial_seed()``, or 0) on each call, so the same batch gets the same draws.

    Train mode: MI is inference only. A model in train mode is switched to eval mode with a
    ``UserWarning`` (at construction, and in ``forward`` if it was switched back), since dropout
    and batch-norm updates from mixed images would corrupt the average and the model.
    ``mi.training`` is the model's mode (``mi.train()``/``mi.eval()`` set it as usual).

    Checkpoints: ``mi.state_dict()`` holds the model's entries under ``model.``. Inside a parent module that holds
    the same network under another name first (``self.net = net; self.mi = MIPredictor(self.net, ...)`` in a
    LightningModule), the parent's state dict stores the network once, under ``net.``, and records that in its
    metadata; loading it (``load_from_checkpoint``, ``load_state_dict``) works whether or not the parent has the
    ``MIPredictor`` at that time. The pool is data, not state: build the predictor again after loading.

    Args:
        model: classifier, ``(B, C, H, W) -> (B, num_classes)`` logits; registered as ``self.model``.
        pool: labelled clean images, see above.
        num_classes: number of classes ``K`` (>= 2).
        mode: ``"ol"``, ``"pl"`` or ``"combined"``.
        num_samples: rounds ``N`` per input (MI-PL rounds in ``combined``).
        lam: weight of the input in the mix, in ``(0, 1]`` (MI-PL's in ``combined``).
        chunk_size: most mixes per model call; ``None`` sends all ``B * N`` at once.
        normalize: ``(mean, std)`` with 1 or ``C`` values, applied just before the model (after mixing).
        deterministic: same draws for the same batch on every call.
        seed: seed of the draw stream; not with ``generator``.
        generator: CPU ``torch.Generator`` for the draws; not with ``seed``.
        threshold: ``combined`` only, see above.
        lam_ol: MI-OL's ``lam`` in ``combined`` (ignored otherwise); ``None`` uses ``lam``.
        num_samples_ol: MI-OL's rounds in ``combined`` (ignored otherwise); ``None`` uses ``num_samples``.
        pool_batch_size: batch size used to load a Dataset pool.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> g = torch.Generator().manual_seed(0)
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3)).eval()
        >>> pool = (torch.rand(12, 3, 4, 4, generator=g), torch.arange(12) % 3)
        >>> mi = MIPredictor(model, pool, num_classes=3, mode="pl", num_samples=4, seed=0, deterministic=True)
        >>> x = torch.rand(2, 3, 4, 4, generator=g)
        >>> out = mi(x)
        >>> out.shape
        torch.Size([2, 3])
        >>> torch.allclose(out.exp().sum(1), torch.ones(2))
        True
        >>> torch.equal(out, mi(x))  # deterministic: same draws every call
        True
        >>> draws = mi.draw(model(x).argmax(1), generator=torch.Generator().manual_seed(1))
        >>> draws["pl"].shape  # pool indices (B, N), replayable with mi(x, draws=draws)
        torch.Size([2, 4])
        >>> bool((mi.pool_labels[draws["pl"]] == model(x).argmax(1)[:, None]).all())
        True
    """

    pool_images: Tensor
    pool_labels: Tensor
    pool_order: Tensor
    class_offsets: Tensor
    class_counts: Tensor
    norm_mean: Tensor | None
    norm_std: Tensor | None

    def __init__(self, model: nn.Module, pool: Dataset | tuple[Tensor, Tensor], *, num_classes: int,
                 mode: Literal["ol", "pl", "combined"] = "ol", num_samples: int = 30, lam: float = 0.5,
                 chunk_size: int | None = 1024,
                 normalize: tuple[Sequence[float] | Tensor, Sequence[float] | Tensor] | None = None,
                 deterministic: bool = False, seed: int | None = None, generator: torch.Generator | None = None,
                 threshold: float = 0.2, lam_ol: float | None = None, num_samples_ol: int | None = None,
                 pool_batch_size: int = 256) -> None:
        super().__init__()
        self.register_state_dict_post_hook(_store_model_once)
        self.register_load_state_dict_pre_hook(_load_model_stored_once)
        if not isinstance(model, nn.Module):
            raise VarMixupError(f"model must be a torch.nn.Module, got {type(model).__name__}; wrap functions in one")
        num_classes = check_int("num_classes", num_classes, minimum=2)
        if mode not in _MODES:
            raise VarMixupError(f"mode must be one of {_MODES}, got {mode!r}")
        self.mode, self.num_classes = mode, num_classes
        self.num_samples = _check_count("num_samples", num_samples)
        self.lam = _check_lam("lam", lam)
        n_ol = self.num_samples if num_samples_ol is None else _check_count("num_samples_ol", num_samples_ol)
        lam_ol_ = self.lam if lam_ol is None else _check_lam("lam_ol", lam_ol)
        # MI-OL's own settings matter only in combined mode; in "ol" mode they are num_samples and lam.
        self.num_samples_ol = n_ol if mode == "combined" else self.num_samples
        self.lam_ol = lam_ol_ if mode == "combined" else self.lam
        self.chunk_size = check_int("chunk_size", chunk_size, allow_none=True,
                                    requirement="be an int >= 1 or None (all at once)")
        self.threshold = check_number("threshold", threshold, requirement="be a finite number (paper default 0.2)")
        self.deterministic = check_bool("deterministic", deterministic)
        seed = check_seed_and_generator(seed, generator)
        self._generator = generator if generator is not None else (
            torch.Generator().manual_seed(seed) if seed is not None else None)
        self._base_seed = seed if seed is not None else (generator.initial_seed() if generator is not None else 0)
        pool_batch_size = check_int("pool_batch_size", pool_batch_size)
        self.model = model
        self._ensure_eval(stacklevel=3)
        self._register_pool(*PoolIndex.load(pool, num_classes, batch_size=pool_batch_size), normalize)

    def _register_pool(self, images: Tensor, index: PoolIndex, normalize: Any) -> None:
        """Keep the sorted pool and its index as buffers on the model's device and dtype (``.to()`` moves them);
        draws use the index's CPU copy, so they match across devices."""
        index.check_classes(self.mode)
        self._index = index
        device, dtype = module_device_dtype(self.model)
        device, dtype = device or images.device, dtype or images.dtype
        self.register_buffer("pool_images", images.to(device=device, dtype=dtype), persistent=False)
        for name, t in (("pool_labels", index.labels), ("pool_order", index.order),
                        ("class_offsets", index.offsets), ("class_counts", index.counts)):
            self.register_buffer(name, t.to(device), persistent=False)
        mean, std = (None, None) if normalize is None else (
            t.view(1, -1, 1, 1).to(device=device, dtype=dtype)
            for t in parse_mean_std(normalize, images.shape[1], name="normalize"))
        self.register_buffer("norm_mean", mean, persistent=False)
        self.register_buffer("norm_std", std, persistent=False)

    @property  # type: ignore[override]
    def training(self) -> bool:
        """The wrapped model's mode: this module has none of its own, so a parent that records and restores its
        modules' modes (Lightning around validation) never finds it in a mode its model is not in."""
        model = self.__dict__.get("_modules", {}).get("model")
        return bool(model.training) if model is not None else self.__dict__.get("_own_training", True)

    @training.setter
    def training(self, mode: bool) -> None:
        self.__dict__["_own_training"] = mode

    # ---- helpers ---------------------------------------------------------------------------

    def extra_repr(self) -> str:
        s = (f"mode={self.mode!r}, num_classes={self.num_classes}, num_samples={self.num_samples}, lam={self.lam}, "
             f"pool_size={self.pool_images.shape[0]}, chunk_size={self.chunk_size}, "
             f"deterministic={self.deterministic}")
        if self.mode == "combined":
            s += f", num_samples_ol={self.num_samples_ol}, lam_ol={self.lam_ol}, threshold={self.threshold}"
        return s

    def _stream(self) -> torch.Generator | None:
        if self.deterministic:
            return torch.Generator().manual_seed(self._base_seed)
        return self._generator

    def _prep(self, images: Tensor) -> Tensor:
        if self.norm_mean is None or self.norm_std is None:
            return images
        return (images - self.norm_mean.to(images.dtype)) / self.norm_std.to(images.dtype)

    def _ensure_eval(self, stacklevel: int = 3) -> None:
        """MI is inference only: switch a model in train mode to eval mode, with a warning."""
        if self.model.training:
            warnings.warn(
                "MIPredictor: the model is in train mode; switching it to eval mode (MI is inference only)",
                UserWarning, stacklevel=stacklevel,
            )
            self.eval()

    def _check_input(self, x: Any) -> None:
        """The structure of ``x`` (no host sync); its values are checked by :meth:`_check_values`."""
        float_images(x, name="x", uint8=False, kind="floating point in [0, 1]",
                     uint8_hint="convert uint8 with x.float() / 255")
        if x.shape[1:] != self.pool_images.shape[1:]:
            raise VarMixupError(
                f"x has images of shape {tuple(x.shape[1:])} but the pool images are "
                f"{tuple(self.pool_images.shape[1:])}; build the pool with the same transform as the inputs"
            )
        if x.device != self.pool_images.device:
            raise VarMixupError(
                f"x is on {x.device} but the MIPredictor (pool) is on {self.pool_images.device}; "
                f"move it with mi.to({str(x.device)!r})"
            )

    @staticmethod
    def _out_of_range(x: Tensor) -> Tensor:
        """A 0-d int64 on ``x``'s device: 1 where ``x`` holds NaN, Inf or a value outside [0, 1] (with the one
        tolerance). Read together with the predicted classes, so the check costs no sync of its own."""
        with torch.no_grad():
            low, high = -RANGE_TOLERANCE, 1 + RANGE_TOLERANCE  # NaN fails both comparisons
            return (~((x >= low) & (x <= high)).all()).long()

    @staticmethod
    def _check_values(x: Tensor) -> None:
        """After the flag was raised: which rule ``x`` breaks, read on the host (failures only)."""
        check_image_values("x", tuple(read_host(image_stats(x.detach()))), (0.0, 1.0),  # type: ignore[arg-type]
                           message="{name} must lie in pixel space [0, 1] like the pool, got values in [{min:.3g}, "
                           "{max:.3g}]; convert 0..255 images with x / 255, and pass unnormalised images with the "
                           "model's normalisation as normalize=(mean, std)")

    def _model_dtype_input(self, x: Tensor) -> Tensor:
        """``x`` in the dtype of the model (and pool): a float64 or float16 batch is cast (differentiably)."""
        dtype = self.pool_images.dtype
        return x if x.dtype == dtype else x.to(dtype)

    def _logits(self, inputs: Tensor) -> Tensor:
        """The model's logits for ``inputs``: a tensor as it is, else the ``logits`` of a dict or of an output object
        (Hugging Face style), else the first element of a tuple/list; anything else is refused."""
        out = self.model(self._prep(inputs))
        if isinstance(out, Tensor):
            return out
        if isinstance(out, Mapping):
            if isinstance(out.get("logits"), Tensor):
                return out["logits"]
            raise VarMixupError(
                f"the model returned a {type(out).__name__} with keys {sorted(map(str, out))} but no 'logits' tensor; "
                "wrap it so that it returns the logits (B, num_classes)"
            )
        if isinstance(getattr(out, "logits", None), Tensor):
            return out.logits
        if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
            first = out[0]
            if first.ndim == 2 and first.shape == (inputs.shape[0], self.num_classes):
                return first
            shapes = ", ".join(f"{tuple(t.shape)}" if isinstance(t, Tensor) else type(t).__name__ for t in out)
            raise VarMixupError(
                f"the model returned a {type(out).__name__} ({shapes}) whose first element is not the logits "
                f"({inputs.shape[0]}, {self.num_classes}); wrap it so that it returns the logits"
            )
        raise VarMixupError(
            f"the model must return logits (B, num_classes), a dict with 'logits', an output with .logits or a tuple "
            f"starting with the logits, got {type(out).__name__}"
        )

    def _check_logits(self, logits: Any, batch: int) -> None:
        if not isinstance(logits, Tensor) or logits.shape != (batch, self.num_classes):
            got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise VarMixupError(
                f"the model's output must have shape (B, num_classes) = ({batch}, {self.num_classes}), got {got}; "
                "check num_classes and that the model returns logits"
            )

    # ---- draws -----------------------------------------------------------------------------

    def _draw(self, y_hat: Tensor, generator: torch.Generator | None) -> dict[str, Tensor]:
        """Pool indices for the predicted classes; ``y_hat`` is on the CPU (see :meth:`forward`)."""
        y = y_hat.detach().to("cpu", torch.long)
        b = y.shape[0]
        out: dict[str, Tensor] = {}
        if self.mode in ("pl", "combined"):
            u = torch.rand(b, self.num_samples, dtype=torch.float64, generator=generator)
            out["pl"] = self._index.pick(y[:, None].expand(b, self.num_samples), u)
        if self.mode in ("ol", "combined"):
            n = self.num_samples_ol
            u_cls = torch.rand(b, n, dtype=torch.float64, generator=generator)
            u_img = torch.rand(b, n, dtype=torch.float64, generator=generator)
            out["ol"] = self._index.pick_other(y, u_cls, u_img)
        device = self.pool_images.device
        return {key: v.to(device, non_blocking=True) for key, v in out.items()}

    def draw(self, y_hat: Tensor, *, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Draw pool indices for predicted classes ``y_hat`` ``(B,)``.

        Returns ``{"pl": (B, num_samples)}``, ``{"ol": (B, num_samples_ol)}`` or both (``combined``):
        int64 indices into ``pool_images`` (``pool_order`` maps them to positions in the given pool),
        on the pool's device. ``forward(x, draws=...)`` replays them. Uses ``generator`` if given,
        else the module's stream (see the class docstring).

        Example:
            >>> import torch
            >>> from torch import nn
            >>> pool = (torch.zeros(6, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1, 2]))
            >>> mi = MIPredictor(nn.Flatten().eval(), pool, num_classes=3, num_samples=5)
            >>> d = mi.draw(torch.tensor([0, 2]), generator=torch.Generator().manual_seed(0))
            >>> bool((mi.pool_labels[d["ol"]] != torch.tensor([[0], [2]])).all())  # MI-OL avoids y_hat
            True
        """
        if not isinstance(y_hat, Tensor) or y_hat.ndim != 1 or y_hat.is_floating_point() or y_hat.is_complex():
            got = f"{tuple(y_hat.shape)} {y_hat.dtype}" if isinstance(y_hat, Tensor) else type(y_hat).__name__
            raise VarMixupError(f"y_hat must be a (B,) integer tensor of predicted classes, got {got}")
        check_label_range("y_hat", y_hat, self.num_classes)
        check_seed_and_generator(None, generator)
        return self._draw(y_hat, generator if generator is not None else self._stream())

    def _check_draws(self, draws: Any, batch: int) -> dict[str, Tensor]:
        if not isinstance(draws, Mapping):
            raise VarMixupError(f"draws must be a dict from MIPredictor.draw, got {type(draws).__name__}")
        need = {"pl": self.num_samples} if self.mode == "pl" else {"ol": self.num_samples_ol}
        if self.mode == "combined":
            need = {"pl": self.num_samples, "ol": self.num_samples_ol}
        out = {}
        size = self.pool_images.shape[0]
        for key, n in need.items():
            d = draws.get(key)
            if not isinstance(d, Tensor) or d.shape != (batch, n) or d.is_floating_point() or d.dtype == torch.bool:
                got = f"{tuple(d.shape)} {d.dtype}" if isinstance(d, Tensor) else type(d).__name__
                raise VarMixupError(
                    f"draws[{key!r}] must be an integer tensor of shape (B, N) = ({batch}, {n}) for mode="
                    f"{self.mode!r}, got {got}; make it with MIPredictor.draw"
                )
            low, high = (int(v) for v in read_host([d.amin().reshape(1), d.amax().reshape(1)]))
            if low < 0 or high >= size:
                raise VarMixupError(f"draws[{key!r}] must index the pool, [0, {size}), got values in [{low}, {high}]")
            out[key] = d.to(self.pool_images.device, torch.long)
        return out

    # ---- inference -------------------------------------------------------------------------

    def _mixed_log_probs(self, x: Tensor, groups: list[tuple[Tensor, float]]) -> list[Tensor]:
        """log_softmax of the model on every mix, one batched pass in chunks; ``(B, N_g, K)`` per group."""
        b, device = x.shape[0], x.device
        rows = torch.cat([torch.arange(b, device=device).repeat_interleave(idx.shape[1]) for idx, _ in groups])
        index = torch.cat([idx.reshape(-1) for idx, _ in groups])
        if len(groups) == 1:
            lam: float | Tensor = groups[0][1]
        else:
            lam = torch.cat([torch.full((idx.numel(),), w, dtype=x.dtype, device=device) for idx, w in groups])
            lam = lam.view(-1, 1, 1, 1)
        total = rows.numel()
        step = self.chunk_size or total
        outs = []
        for s in range(0, total, step):
            xs = self.pool_images[index[s:s + step]].to(x.dtype)
            w = lam if isinstance(lam, float) else lam[s:s + step]
            mixed = torch.lerp(xs, x[rows[s:s + step]], w)  # w * x + (1 - w) * xs
            outs.append(torch.log_softmax(self._logits(mixed), dim=1))
        logp = outs[0] if len(outs) == 1 else torch.cat(outs)
        out, start = [], 0
        for idx, _ in groups:
            out.append(logp[start:start + idx.numel()].view(b, idx.shape[1], -1))
            start += idx.numel()
        return out

    def forward(self, x: Tensor, *, draws: Mapping[str, Tensor] | None = None) -> Tensor:
        """Log of the MI-averaged softmax, ``(B, num_classes)``, for images ``x`` ``(B, C, H, W)`` in ``[0, 1]``.

        ``draws`` (optional, from :meth:`draw`) replays fixed pool indices instead of drawing new
        ones; keys the mode does not use are ignored.
        """
        self._check_input(x)
        x = self._model_dtype_input(x)
        self._ensure_eval()
        with torch.no_grad():  # y_hat: plain forward, chunked like the mixes to bound memory
            step = self.chunk_size or x.shape[0]
            logits = torch.cat([self._logits(c) for c in x.detach().split(step)])
        self._check_logits(logits, x.shape[0])
        flag = self._out_of_range(x)
        if draws is None:  # the call's one host read: the predicted classes (draws are made on the CPU) and the flag
            host = to_host(torch.cat([logits.argmax(1), flag.reshape(1)]))
            if bool(host[-1]):
                self._check_values(x)
            picked = self._draw(host[:-1], self._stream())
        else:
            if bool(flag):
                self._check_values(x)
            picked = self._check_draws(draws, x.shape[0])
        keys = [k for k in ("pl", "ol") if k in picked]
        weights = {"pl": self.lam, "ol": self.lam_ol}
        logps = self._mixed_log_probs(x, [(picked[k], weights[k]) for k in keys])
        # log mean_n p_n, computed stably in log space.
        avg = {k: torch.logsumexp(lp, dim=1) - math.log(lp.shape[1]) for k, lp in zip(keys, logps, strict=True)}
        if self.mode != "combined":
            return avg[keys[0]]
        with torch.no_grad():
            gap = logits.softmax(1).amax(1) - avg["pl"].exp().amax(1)
            use_pl = (gap < self.threshold)[:, None]
        return torch.where(use_pl, avg["pl"], avg["ol"])

    def predict_proba(self, x: Tensor) -> Tensor:
        """MI-averaged class probabilities ``(B, num_classes)``, rows summing to 1 (no gradient)."""
        with torch.inference_mode():
            return self.forward(x).exp()

    def predict(self, x: Tensor) -> Tensor:
        """MI class predictions ``(B,)`` (argmax of :meth:`predict_proba`)."""
        with torch.inference_mode():
            return self.forward(x).argmax(1)
