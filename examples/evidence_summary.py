"""Rewrite the generated tables of docs/reproduction.md and README from the committed results.

    python examples/evidence_summary.py results/cifar10-fast          # rewrite the blocks and the figures
    python examples/evidence_summary.py results/cifar10-fast --check  # exit 1 if a block is stale

A block is the text between ``<!-- evidence:NAME -->`` and ``<!-- /evidence:NAME -->``; NAME is a
table of :func:`varmixup_aug.harness.reproduction_tables` (RESULTS: one run per method, the airbench
recipe with label smoothing 0.2, an ablation) or of :func:`varmixup_aug.harness.papers_tables`
(``papers ...``: the ``seed<k>/<method>`` runs of the papers' regime, by default ``cifar10-papers``
beside RESULTS; ``papers-long ...``: the longer schedule, ``cifar10-papers-long``) or of
:func:`varmixup_aug.harness.precision_tables` (``papers precision ...``: ERM by precision and seed, from
``cifar10-papers`` and ``cifar10-papers-precision``) or of :func:`varmixup_aug.harness.single_step_tables`
(``papers single-step check``: each adv-train run's single-step check, from ``cifar10-papers`` and
``cifar10-papers-fgsm-rs``) or of :func:`varmixup_aug.harness.adaptive_tables`
(``papers eot ...``, ``papers apgd``, ``papers binarization``, ``papers transfer ...``, ``papers attack
precision``: the adaptive parts of seed 0 in ``cifar10-papers``). Numbers are
computed from the per-image results in the JSON files, never typed in; a folder that does not exist
yet gives tables of ``-``. The reliability diagrams of RESULTS' finished clean results go to
``docs/figures/reliability-<method>.png``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from varmixup_aug.harness import (adaptive_tables, papers_tables, precision_tables, reliability_figures,
                                  reproduction_tables, single_step_tables)

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
    parser.add_argument("results", type=Path, help="folder with one sub-folder per method (one run each)")
    parser.add_argument("--papers", type=Path, default=None,
                        help="folder with seed<k>/<method> runs, the papers' regime (default: cifar10-papers beside "
                             "RESULTS)")
    parser.add_argument("--papers-long", type=Path, default=None,
                        help="the same for the longer schedule (default: cifar10-papers-long beside RESULTS)")
    parser.add_argument("--papers-precision", type=Path, default=None,
                        help="seed<k>/erm runs in the other precision, for the bf16 check (default: "
                             "cifar10-papers-precision beside RESULTS)")
    parser.add_argument("--check", action="store_true", help="only check that the blocks are up to date")
    args = parser.parse_args()
    tables = reproduction_tables(args.results)
    papers = args.papers or args.results.parent / "cifar10-papers"
    tables |= papers_tables(papers)
    tables |= adaptive_tables(papers)
    tables |= precision_tables([papers, args.papers_precision or args.results.parent / "cifar10-papers-precision"])
    tables |= single_step_tables([papers, args.results.parent / "cifar10-papers-fgsm-rs"])
    tables |= papers_tables(args.papers_long or args.results.parent / "cifar10-papers-long", prefix="papers-long")
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
