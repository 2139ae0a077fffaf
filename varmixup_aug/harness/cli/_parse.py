"""Parsing comma-separated flag values (``--widths 32,64,128``, ``--eps 2/255,4/255``)."""

from __future__ import annotations

from ... import VarMixupError

__all__ = ["float_list", "int_list"]


def int_list(text: str, flag: str, example: str) -> tuple[int, ...]:
    """``"32,64,128"`` -> ``(32, 64, 128)``; ``example`` shows a valid value in the error."""
    try:
        return tuple(int(item) for item in text.split(","))
    except ValueError as exc:
        raise VarMixupError(f"{flag} must be comma-separated ints like {example}, got {text!r}") from exc


def float_list(text: str, flag: str) -> tuple[float, ...]:
    """``"2/255,0.5"`` -> ``(2 / 255, 0.5)``: numbers or fractions."""
    out = []
    for item in text.split(","):
        item = item.strip()
        try:
            if "/" in item:
                num, den = item.split("/")
                out.append(float(num) / float(den))
            else:
                out.append(float(item))
        except ValueError as exc:
            raise VarMixupError(f"{flag} must be comma-separated numbers like 2/255,4/255 or 0.5, got {text!r}") from exc
    return tuple(out)
