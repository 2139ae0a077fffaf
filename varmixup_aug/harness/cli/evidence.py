"""``varmixup-aug evidence``: the per-image, resumable robustness protocol for one classifier."""

from __future__ import annotations

import argparse
from typing import Any

from .. import EVIDENCE_PARTS
from ._flags import add_run_flags, float_list, start_run


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "evidence",
        help="clean/ECE/corruptions, the MI paper's PGD protocol, the published adaptive attack, AutoAttack-rand",
        description="Evaluate one classifier checkpoint on a fixed subset of the test split and store, per image, "
        "whether each predictor was right (plain, MI-PL, MI-OL, MI-combined at lam 0.5 and at the lam chosen on "
        "held-out training images). Parts: " + ", ".join(EVIDENCE_PARTS) + ". Results go to OUT (JSON), "
        "rewritten atomically after every chunk of images; running the same command again resumes.",
    )
    p.add_argument("checkpoint", help="classifier checkpoint or its run folder")
    p.add_argument("--data-dir", required=True, help="the data the model was trained on")
    p.add_argument("--out", required=True, help="results JSON, e.g. results/cifar10-fast/erm/evidence.json")
    p.add_argument("--parts", default=",".join(EVIDENCE_PARTS), help="comma-separated subset of the parts")
    p.add_argument("--n-test", type=int, default=1000, help="fixed test images (seed --seed)")
    p.add_argument("--test-subset", choices=["stratified", "random"], default="stratified",
                   help="stratified: the same number per class, stored in random order; random: a uniform draw in "
                   "test-split order (files made before this setting)")
    p.add_argument("--calibration-n", type=int, default=1000,
                   help="held-out training images the calibration part fits the temperature on")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk-size", type=int, default=100, help="images per saved chunk")
    p.add_argument("--pool-size", type=int, default=5000, help="training images MI mixes with")
    p.add_argument("--oblivious-eps", default="2/255,4/255,8/255")
    p.add_argument("--mi-samples-pl", type=int, default=10)
    p.add_argument("--mi-samples-ol", type=int, default=30)
    p.add_argument("--select-n", type=int, default=500, help="held-out training images for choosing lam")
    p.add_argument("--published-eps", default="8/255,2/255")
    p.add_argument("--published-n", type=int, default=500, help="test images attacked adaptively")
    p.add_argument("--published-steps", type=int, default=50)
    p.add_argument("--published-mi-samples", type=int, default=15, help="MI-OL mixes per attacker forward")
    p.add_argument("--autoattack-n", type=int, default=0, help="images for AutoAttack-rand (0 skips it)")
    p.add_argument("--autoattack-steps", type=int, default=100)
    p.add_argument("--autoattack-eot", type=int, default=20)
    add_run_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .. import EvidenceConfig, hold_output, run_evidence

    progress = start_run(args)
    cfg = EvidenceConfig(
        n_test=args.n_test, test_subset=args.test_subset, calibration_n=args.calibration_n, seed=args.seed,
        chunk_size=args.chunk_size, pool_size=args.pool_size,
        oblivious_eps=float_list(args.oblivious_eps, "--oblivious-eps"), mi_samples_pl=args.mi_samples_pl,
        mi_samples_ol=args.mi_samples_ol, select_n=args.select_n,
        published_eps=float_list(args.published_eps, "--published-eps"), published_n=args.published_n,
        published_steps=args.published_steps, published_mi_samples=args.published_mi_samples,
        autoattack_n=args.autoattack_n, autoattack_steps=args.autoattack_steps, autoattack_eot=args.autoattack_eot,
        parts=tuple(p.strip() for p in args.parts.split(",") if p.strip()),
    )
    with hold_output(args.out, what="evidence"):
        data = run_evidence(args.checkpoint, args.data_dir, args.out, config=cfg, progress=progress)
    print(f"{data.get('method')}: parts {', '.join(sorted(data['parts']))} in {args.out}")
    return 0
