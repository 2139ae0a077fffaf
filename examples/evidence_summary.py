"""Rewrite the generated tables of docs/reproduction.md and README from the committed results.

    python examples/evidence_summary.py results/cifar10-fast          # rewrite the blocks and the figures
    python examples/evidence_summary.py results/cifar10-fast --check  # exit 1 if a block is stale

A block is the text between ``<!-- evidence:NAME -->`` and ``<!-- /evidence:NAME -->``; NAME is a
table of :func:`varmixup_aug.harness.reproduction_tables`. Numbers are computed from the per-image
results in the JSON files, never typed in. The reliability diagrams of the finished clean results go to
``docs/figures/reliability-<method>.png``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from varmixup_aug.harness import reliability_figures, reproduction_tables

REPO = Path(__file__).resolve().parents[1]
FILES = (REPO / "docs" / "reproduction.md", REPO / "README.md")
BLOCK = re.compile(r"(<!-- evidence:(?P<name>[^>]+?) -->\n)(?P<body>.*?)(<!-- /evidence:(?P=name) -->)", re.S)


def render(text: str, tables: dict[str, str]) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in tables:
            raise SystemExit(f"unknown table {name!r}; known: {sorted(tables)}")
        return f"{match.group(1)}{tables[name]}\n{match.group(4)}"

    return BLOCK.sub(fill, text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="folder with one sub-folder per method")
    parser.add_argument("--check", action="store_true", help="only check that the blocks are up to date")
    args = parser.parse_args()
    tables = reproduction_tables(args.results)
    stale = []
    for path in FILES:
        old = path.read_text()
        new = render(old, tables)
        if new != old:
            stale.append(path.name)
            if not args.check:
                path.write_text(new)
    if not args.check:
        reliability_figures(args.results, REPO / "docs" / "figures")
    if args.check and stale:
        print(f"stale tables in {', '.join(stale)}; run without --check", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
