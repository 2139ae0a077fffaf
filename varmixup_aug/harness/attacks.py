"""Adversarial examples from ``torchattacks``: FGSM, PGD and their EOT forms, batched and seeded."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from varmixup_aug import VarMixupError
from varmixup_aug._checks import check_int, check_number
from varmixup_aug._random import mix_seed
from varmixup_aug._tensors import module_device
from .scoring import as_float_images, as_labels, batch_ranges

__all__ = ["ATTACKS", "adversarial_examples"]

ATTACKS = ("fgsm", "pgd", "eotpgd", "eotfgsm")


@contextlib.contextmanager
def _seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Run with torch's global RNG seeded (torchattacks draws its random start from it), then restore it."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def adversarial_examples(model: nn.Module, images: Tensor, labels: Tensor, *, attack: str = "pgd", eps: float,
                         steps: int = 10, step_size: float | None = None, eot_iter: int = 5, batch_size: int = 250,
                         seed: int = 0, progress: bool = False, desc: str | None = None) -> Tensor:
    """L-inf adversarial examples from ``torchattacks``, batched and seeded.

    - ``"fgsm"``: ``torchattacks.FGSM(model, eps)``;
    - ``"pgd"``: ``torchattacks.PGD`` with a random start, ``steps`` steps of ``step_size``;
    - ``"eotpgd"``: ``torchattacks.EOTPGD``, the same with the gradient summed over ``eot_iter``
      forward passes per step (for randomised models such as :class:`MIPredictor`);
    - ``"eotfgsm"``: FGSM with the EOT gradient, as ``torchattacks.EOTPGD`` with one step of size
      ``eps`` and no random start (``steps`` and ``step_size`` are ignored).

    ``model`` is any module on pixel-space inputs in ``[0, 1]`` (a classifier, or an
    :class:`MIPredictor` for an adaptive attack); its loss is ``CrossEntropyLoss`` on its output.
    The random start of batch ``i`` uses torch's global RNG seeded from ``(seed, i)``, in a forked
    RNG state, so the result is reproducible and the caller's RNG is left untouched.

    Args:
        model: the attacked module; ``(B, C, H, W) -> (B, K)``.
        images, labels: ``(N, C, H, W)`` in ``[0, 1]`` and ``(N,)`` true classes.
        attack: one of :data:`ATTACKS`.
        eps: L-inf radius, >= 0 (e.g. ``8/255``).
        steps, step_size: PGD steps and step (``None``: ``eps / 4``).
        eot_iter: EOT samples per step (the ``eot*`` attacks only).
        batch_size: images per attack call; seed: seed of the random starts; progress, desc: tqdm bar.

    Returns:
        ``(N, C, H, W)`` float32 adversarial images on the CPU, within ``eps`` of ``images``, in ``[0, 1]``.
    """
    _check_attack(attack, eps, steps, step_size, eot_iter, batch_size)
    x = as_float_images(images)
    y = as_labels(labels, x.shape[0])
    device = module_device(model)
    atk = _make_attack(model, attack, float(eps), steps, eps / 4 if step_size is None else step_size, eot_iter)
    atk.set_device(device)
    out = []
    ranges = list(batch_ranges(x.shape[0], batch_size))
    for i, (s, e) in enumerate(tqdm(ranges, desc=desc or attack, unit="batch", disable=not progress, leave=False)):
        with _seeded_global_rng(mix_seed(seed, "attack", attack, i), device), torch.enable_grad():
            adv = atk(x[s:e].to(device, torch.float32), y[s:e].to(device))
        out.append(adv.detach().float().cpu())
    return torch.cat(out)


def _check_attack(attack: str, eps: float, steps: int, step_size: float | None, eot_iter: int, batch_size: int
                  ) -> None:
    if attack not in ATTACKS:
        raise VarMixupError(f"attack must be one of {ATTACKS}, got {attack!r}")
    check_number("eps", eps, low=0, requirement="be a finite number >= 0 (L-inf radius in [0, 1] pixel units)")
    if eps > 1:
        raise VarMixupError(f"eps must be in pixel units of [0, 1] images, got {eps!r}; did you mean {eps}/255?")
    check_int("steps", steps)
    check_int("eot_iter", eot_iter)
    check_int("batch_size", batch_size)
    check_number("step_size", step_size, low=0, allow_none=True,
                 requirement="be a finite number >= 0 or None (eps / 4)")


def _make_attack(model: nn.Module, attack: str, eps: float, steps: int, step_size: float, eot_iter: int) -> Any:
    import torchattacks

    if attack == "fgsm":
        return torchattacks.FGSM(model, eps=eps)
    if attack == "pgd":
        return torchattacks.PGD(model, eps=eps, alpha=float(step_size), steps=steps, random_start=True)
    if attack == "eotpgd":
        return torchattacks.EOTPGD(model, eps=eps, alpha=float(step_size), steps=steps, eot_iter=eot_iter,
                                   random_start=True)
    return torchattacks.EOTPGD(model, eps=eps, alpha=eps, steps=1, eot_iter=eot_iter, random_start=False)
