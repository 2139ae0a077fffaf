"""Print README's robustness tables from the JSON that ``varmixup-aug evaluate --results-json`` writes.

    python examples/robustness_summary.py results/robustness.json [--subset-json results/pgd_adaptive_subset.json]

Table 1 has the issue's columns (clean accuracy, ECE, mean corruption accuracy, FGSM, oblivious PGD-10
as plain / MI-PL / MI-OL, adaptive EOT-PGD-10 through MI-OL); table 2 the MI ``lam`` chosen on the
held-out training images and the adaptive attack's subset: its clean accuracy, plain PGD-10 on it (from
``--subset-json``, an ``evaluate --adaptive-limit`` run whose ``pgd_oblivious`` holds
``none_on_adaptive_subset``) and EOT-PGD-10 through MI-OL on it.
Numbers are copied from the JSON, never recomputed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def pct(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_json", type=Path)
    parser.add_argument("--subset-json", type=Path, default=None)
    args = parser.parse_args()
    rows: dict[str, dict[str, Any]] = json.loads(args.results_json.read_text())
    subset_rows: dict[str, dict[str, Any]] = json.loads(args.subset_json.read_text()) if args.subset_json else {}
    eps_keys = next(iter(rows.values()))["settings"]["eps_keys"]

    head = ["method", "clean", "ECE", "corruptions"]
    head += [f"FGSM {k}" for k in eps_keys]
    head += [f"PGD-10 obl. {k} none / PL / OL" for k in eps_keys]
    head += [f"PGD-10 adapt. {k} MI-OL" for k in eps_keys]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
    for name, r in rows.items():
        cells = [name, pct(r["clean"]["accuracy"]), pct(r["clean"]["ece"]), pct(r.get("corruptions", {}).get("mean"))]
        cells += [pct(r["fgsm"][k]["none"]) for k in eps_keys]
        cells += [" / ".join(pct(r["pgd_oblivious"][k][m]) for m in ("none", "mi_pl", "mi_ol")) for k in eps_keys]
        cells += [pct(r.get("pgd_adaptive", {}).get(k, {}).get("mi_ol")) for k in eps_keys]
        print("| " + " | ".join(cells) + " |")

    print()
    head = ["method", "lam MI-PL", "lam MI-OL", "MI clean PL / OL", "held-out: plain clean / PGD 2/255",
            "subset n", "subset clean"]
    head += [f"subset {k}: plain PGD-10 / adapt. MI-OL" for k in eps_keys]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
    for name, r in rows.items():
        sel = r.get("lam_selection") or {}
        plain = subset_rows.get(name, {}).get("pgd_oblivious", {})
        cells = [name, str(r["settings"]["mi_lam_pl"]), str(r["settings"]["mi_lam_ol"]),
                 f"{pct(r['clean']['mi_pl_accuracy'])} / {pct(r['clean']['mi_ol_accuracy'])}",
                 f"{pct(sel.get('base_clean_accuracy'))} / {pct(sel.get('base_pgd_accuracy'))}",
                 str(r.get("adaptive_n", "-")), pct(r.get("adaptive_clean", {}).get("none"))]
        cells += [f"{pct(plain.get(k, {}).get('none_on_adaptive_subset'))} / "
                  f"{pct(r.get('pgd_adaptive', {}).get(k, {}).get('mi_ol'))}" for k in eps_keys]
        print("| " + " | ".join(cells) + " |")

if __name__ == "__main__":
    main()
