"""Argument checks shared by the core and the harness. Each one raises ``VarMixupError`` naming the argument:
``"{name} must {requirement}, got {value!r}"``, optionally followed by a hint."""

from __future__ import annotations

import math
import numbers
from typing import Any, NoReturn

import torch
from torch import Tensor

from ._errors import VarMixupError
from ._validate import check_label_values, label_stats, read_host

__all__ = [
    "check_bool",
    "check_int",
    "check_label_range",
    "check_number",
    "check_seed",
    "check_seed_and_generator",
    "check_vae",
    "fail",
    "is_int",
    "is_vae",
    "parse_mean_std",
]


def fail(name: str, requirement: str, value: Any, hint: str = "") -> NoReturn:
    """Raise ``VarMixupError("{name} must {requirement}, got {value!r}[; {hint}]")``."""
    raise VarMixupError(f"{name} must {requirement}, got {value!r}" + (f"; {hint}" if hint else ""))


def is_int(value: Any) -> bool:
    """A Python int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def _scalar(value: Any) -> Any:
    """A numpy scalar or 0-d array, or a 0-d torch tensor, as the Python number it holds; anything else unchanged.

    Bools (Python, numpy or torch) stay bools, so the number checks refuse them.
    """
    if isinstance(value, Tensor):
        if value.ndim != 0 or value.is_complex():
            return value
        return value.item()  # a CUDA scalar syncs here, once, when the option is given
    if type(value).__module__ == "numpy":
        import numpy as np

        if isinstance(value, np.ndarray):
            if value.ndim != 0:
                return value
            value = value[()]
        if isinstance(value, (np.bool_, np.integer, np.floating)):
            return value.item()
    return value


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is ``True`` or ``False`` (numpy and 0-d torch bools too); strings and numbers are refused."""
    value = _scalar(value)
    if isinstance(value, bool):
        return value
    fail(name, "be True or False", value)


def check_int(name: str, value: Any, *, minimum: int = 1, maximum: int | None = None, allow_none: bool = False,
              requirement: str | None = None, hint: str = "") -> Any:
    """``value`` as a Python int if it is an integer in ``[minimum, maximum]`` (or None with ``allow_none``).

    numpy integers and 0-d integer tensors count as ints; bools, floats and strings do not.
    """
    if value is None and allow_none:
        return None
    value = _scalar(value)
    if is_int(value) and value >= minimum and (maximum is None or value <= maximum):
        return value
    if requirement is None:
        requirement = f"be an int >= {minimum}" if maximum is None else f"be an int in [{minimum}, {maximum}]"
        requirement += " or None" if allow_none else ""
    fail(name, requirement, value, hint)


def check_number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, allow_none: bool = False,
                 requirement: str | None = None, hint: str = "") -> Any:
    """``float(value)`` if it is a finite real number within the bounds (or None with ``allow_none``).

    numpy scalars and 0-d tensors count as numbers; bools and strings do not.
    """
    if value is None and allow_none:
        return None
    value = _scalar(value)
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if ok:
        return float(value)
    if requirement is None:
        if low is not None and high is not None:
            requirement = f"be a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        elif low is not None:
            requirement = f"be a finite number {'>' if low_open else '>='} {low:g}"
        else:
            requirement = "be a finite number"
        requirement += " or None" if allow_none else ""
    fail(name, requirement, value, hint)


def check_label_range(name: str, labels: Tensor, num_classes: int) -> None:
    """Integer class labels must lie in ``[0, num_classes)``; an empty tensor passes. One host read."""
    check_label_values(name, read_host(label_stats(labels, "index")), "index", num_classes)


def check_seed(seed: Any, *, allow_none: bool = True) -> Any:
    """``seed`` if it is an integer (Python or numpy, or a 0-d integer tensor), or None with ``allow_none``."""
    seed = _scalar(seed)
    if (seed is None and allow_none) or (isinstance(seed, numbers.Integral) and not isinstance(seed, bool)):
        return int(seed) if seed is not None else None
    fail("seed", "be an int or None" if allow_none else "be an int", seed)


def check_seed_and_generator(seed: Any, generator: Any) -> int | None:
    """At most one of ``seed`` (an int) and ``generator`` (a CPU ``torch.Generator``)."""
    if seed is not None and generator is not None:
        raise VarMixupError("pass seed or generator, not both")
    seed = check_seed(seed)
    if generator is not None and (not isinstance(generator, torch.Generator) or generator.device.type != "cpu"):
        fail("generator", "be a CPU torch.Generator (draws are made on the CPU)", generator)
    return seed


def is_vae(obj: Any) -> bool:
    """Whether ``obj`` has callable ``encode`` and ``decode`` (see ``VAEProtocol``)."""
    return callable(getattr(obj, "encode", None)) and callable(getattr(obj, "decode", None))


def check_vae(vae: Any, *, requirement: str = "implement encode/decode (VAEProtocol)") -> None:
    if not is_vae(vae):
        raise VarMixupError(f"vae must {requirement}, got {type(vae).__name__}")


def parse_mean_std(value: Any, channels: int, *, name: str) -> tuple[Tensor, Tensor]:
    """``(mean, std)`` with 1 or ``channels`` values each, finite, std > 0; as flat float64 tensors."""
    try:
        mean, std = value
        mean_t = torch.as_tensor(mean, dtype=torch.float64).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float64).flatten()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise VarMixupError(f"{name} must be (mean, std) or None, got {value!r}") from exc
    for part, t in (("mean", mean_t), ("std", std_t)):
        if t.numel() not in (1, channels):
            raise VarMixupError(
                f"{name} {part} needs {'1 value' if channels == 1 else f'1 or {channels} values'} "
                f"(one per channel), got {t.numel()}"
            )
    rule = f"{name} needs finite mean and std > 0"
    if not torch.isfinite(mean_t).all():
        raise VarMixupError(f"{rule}: {name} mean must be finite, got mean={mean_t.tolist()}")
    if not (torch.isfinite(std_t).all() and (std_t > 0).all()):
        raise VarMixupError(f"{rule}: {name} std must be > 0 and finite, got std={std_t.tolist()}")
    return mean_t, std_t

