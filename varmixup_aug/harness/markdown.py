"""Markdown cells and tables for the generated docs (one home for the format every table shares)."""

from __future__ import annotations

from .significance import wilson_interval

__all__ = ["accuracy_cell", "render_table"]


def render_table(head: list[str], rows: list[list[str]]) -> str:
    """A markdown table: the first column left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def accuracy_cell(bits: str | None) -> str:
    """``"62.5 [51.3, 72.4]"``: the percentage of ``"1"`` in a per-image bit string with its Wilson 95%
    interval; ``"-"`` for ``None``."""
    if bits is None:
        return "-"
    k, n = bits.count("1"), len(bits)
    lo, hi = wilson_interval(k, n)
    return f"{100 * k / n:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"
