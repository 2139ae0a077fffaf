"""``varmixup-aug evaluate``: clean accuracy, ECE, corruptions, FGSM/PGD with and without Mixup Inference."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any

from ._flags import add_run_flags, float_list, int_list, start_run


EVAL_FILES = ("eval.json", "reliability.png", "row.md")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate",
        help="robustness report of a train-classifier checkpoint",
        description="Evaluate a classifier on a fixed subset of the test split: clean accuracy, ECE with a "
        "reliability diagram, accuracy under albumentations corruptions, FGSM and PGD (oblivious: attack the "
        "model, defend with MI-PL/MI-OL) and EOT-FGSM/EOT-PGD through MI (adaptive). Writes OUT/eval.json, "
        "OUT/reliability.png and OUT/row.md; --results-json/--results-md merge the row into a combined table.",
    )
    p.add_argument("--checkpoint", required=True, help="train-classifier run folder or its checkpoint.safetensors")
    p.add_argument("--data-dir", required=True, help="the dataset the model was trained on (same train split)")
    p.add_argument("--out", default=None, help="folder for eval.json, reliability.png, row.md")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an evaluation already in --out (put back if this one fails)")
    p.add_argument("--name", default=None, help="row name (default: the checkpoint's method)")
    p.add_argument("--limit-test", type=int, default=1000, help="fixed random subset of the test split (0: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the test subset, corruptions, attacks and MI draws")
    p.add_argument("--eps", default="2/255,4/255,8/255", help="L-inf radii")
    p.add_argument("--pgd-steps", type=int, default=10, help="PGD steps (step size eps/4)")
    p.add_argument("--eot-iter", type=int, default=5, help="EOT samples per step of the adaptive attack")
    p.add_argument("--mi-samples", type=int, default=30, help="MI rounds per input for accuracy")
    p.add_argument("--attack-mi-samples", type=int, default=None,
                   help="MI rounds per forward pass inside the adaptive attack (default: --mi-samples)")
    p.add_argument("--adaptive-limit", type=int, default=None,
                   help="run the adaptive attack on a fixed random subset of this many test images (default: all)")
    p.add_argument("--adaptive-modes", default="pl,ol",
                   help="MI modes attacked adaptively: pl,ol (default), pl or ol")
    p.add_argument("--mi-lam-pl", type=float, default=0.5, help="MI-PL lam (ignored with --select-lam)")
    p.add_argument("--mi-lam-ol", type=float, default=0.5, help="MI-OL lam (ignored with --select-lam)")
    p.add_argument("--select-lam", action="store_true",
                   help="choose each MI mode's lam on the checkpoint's held-out train images first")
    p.add_argument("--lam-grid", default="0.3,0.4,0.5,0.6,0.7,0.8,0.9")
    p.add_argument("--select-eps", default="2/255", help="lam selection: radius of the oblivious PGD")
    p.add_argument("--max-clean-drop", type=float, default=0.05,
                   help="lam selection: largest allowed MI clean-accuracy loss (fraction)")
    p.add_argument("--select-limit", type=int, default=1000, help="held-out images used for the lam selection")
    p.add_argument("--select-mi-samples", type=int, default=None,
                   help="MI rounds during selection (default: --mi-samples)")
    p.add_argument("--pool-size", type=int, default=5000,
                   help="clean train images (outside the held-out split) in the MI pool")
    p.add_argument("--corruptions", default="all", help="comma-separated names, 'all' or 'none'")
    p.add_argument("--severities", default="1,2,3")
    p.add_argument("--skip", default="",
                   help="comma-separated parts to skip: corruptions, fgsm, pgd, adaptive (EOT-FGSM and EOT-PGD "
                   "through MI), mi (every MI number)")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--mi-batch-size", type=int, default=50)
    p.add_argument("--adaptive-batch-size", type=int, default=32)
    p.add_argument("--results-json", default=None, help="merge this result into a JSON of all rows (by --name)")
    p.add_argument("--results-md", default=None, help="rewrite this markdown table from --results-json")
    add_run_flags(p)
    p.set_defaults(run=run)


_ORDER = ["erm", "mixup", "varmixup", "varmixup-residual"]


def _select_eps(text: str) -> float:
    from varmixup_aug import VarMixupError

    values = float_list(text, "--select-eps")
    if len(values) != 1 or not 0 < values[0] <= 1:
        raise VarMixupError(f"--select-eps must be one radius in (0, 1], e.g. 2/255, got {text!r}")
    return values[0]


def _merge_row(path: Path, name: str, result: dict[str, Any], md: Path | None) -> None:
    """Put one row into the combined JSON (and rebuild the markdown table): under a lock file, so that evaluations
    running side by side can share one results file, and replaced atomically, so that a full disk or a kill
    leaves the previous file whole."""
    from .. import markdown_table, merge_result_row

    def table(rows: dict[str, Any]) -> str:
        return ("# Robustness on a fixed subset of the CIFAR-10 test split\n\n"
                "Accuracy in %; ECE in %. `none / PL / OL` = plain inference / MI-PL / MI-OL. "
                "Oblivious: the attack targets the plain model, then MI classifies; adaptive: "
                "EOT-FGSM / EOT-PGD through MI itself.\n\n" + markdown_table(rows))

    merge_result_row(path, name, result, order=_ORDER, markdown=(md, table) if md is not None else None)
    print(f"updated {path}")
    if md is not None:
        print(f"wrote {md}")


def run(args: argparse.Namespace) -> int:
    from varmixup_aug import VarMixupError
    from .. import claim_run, evaluate_checkpoint, markdown_table, read_result_rows

    progress = start_run(args)
    if args.results_md and not args.results_json:
        raise VarMixupError("--results-md needs --results-json (the table is rebuilt from all rows in it)")
    if args.limit_test is not None and args.limit_test < 0:
        raise VarMixupError(f"--limit-test must be >= 0 (0: the whole test split), got {args.limit_test}")
    if args.results_json:
        read_result_rows(args.results_json)  # a foreign file is refused before the evaluation
    config = _eval_config(args)
    claim = (claim_run(args.out, resume=False, overwrite=args.overwrite, what="evaluate", run_files=EVAL_FILES)
             if args.out else contextlib.nullcontext())
    with claim as held:
        if held is not None:
            held.set_old_run_aside()
        result = evaluate_checkpoint(
            args.checkpoint, args.data_dir, config=config, limit_test=args.limit_test or None,
            pool_size=args.pool_size, select_lam=args.select_lam, lam_grid=float_list(args.lam_grid, "--lam-grid"),
            select_limit=args.select_limit, select_mi_samples=args.select_mi_samples,
            max_clean_drop=args.max_clean_drop, select_eps=_select_eps(args.select_eps), out_dir=args.out,
            name=args.name, device=args.device, progress=progress,
        )
    name = result["name"]
    _print_summary(name, result)
    print(markdown_table({name: result}), end="")
    if args.results_json:
        _merge_row(Path(args.results_json), name, result, Path(args.results_md) if args.results_md else None)
    if args.out:
        print(f"wrote {Path(args.out) / 'eval.json'}, reliability.png and row.md")
    return 0


def _eval_config(args: argparse.Namespace) -> Any:
    """The EvalConfig of the flags: --skip, --corruptions and the attack and MI settings."""
    from varmixup_aug import VarMixupError
    from .. import CORRUPTIONS, EvalConfig

    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - {"corruptions", "fgsm", "pgd", "adaptive", "mi"}
    if unknown:
        raise VarMixupError(f"--skip takes corruptions,fgsm,pgd,adaptive,mi; got {sorted(unknown)}")
    if args.corruptions == "all":
        corruptions = CORRUPTIONS
    elif args.corruptions == "none":
        corruptions, skip = CORRUPTIONS, skip | {"corruptions"}
    else:
        corruptions = tuple(c.strip() for c in args.corruptions.split(",") if c.strip())
    return EvalConfig(
        eps=float_list(args.eps, "--eps"), pgd_steps=args.pgd_steps, eot_iter=args.eot_iter, mi_samples=args.mi_samples,
        attack_mi_samples=args.attack_mi_samples, mi_lam_pl=args.mi_lam_pl, mi_lam_ol=args.mi_lam_ol,
        corruptions=corruptions, severities=int_list(args.severities, "--severities", "1,2,3"),
        batch_size=args.batch_size, mi_batch_size=args.mi_batch_size, adaptive_batch_size=args.adaptive_batch_size,
        adaptive_limit=args.adaptive_limit,
        adaptive_modes=tuple(m.strip() for m in args.adaptive_modes.split(",") if m.strip()),
        seed=args.seed, run_corruptions="corruptions" not in skip,
        run_fgsm="fgsm" not in skip, run_pgd="pgd" not in skip, run_adaptive="adaptive" not in skip,
        run_mi="mi" not in skip,
    )


def _print_summary(name: str, result: dict[str, Any]) -> None:
    sel = result.get("lam_selection")
    if sel:
        print(f"lam selection on {sel['n_images']} held-out train images (PGD {sel['eps_key']}, clean drop <= "
              f"{100 * sel['max_clean_drop']:.1f} points): MI-PL lam={sel['pl']['lam']}, MI-OL lam={sel['ol']['lam']}")
    clean = result["clean"]
    print(f"{name}: clean {100 * clean['accuracy']:.2f}%  ECE {100 * clean['ece']:.2f}%"
          + (f"  corruptions {100 * result['corruptions']['mean']:.2f}%" if "corruptions" in result else "")
          + f"  on {result['n_test']} test images")
