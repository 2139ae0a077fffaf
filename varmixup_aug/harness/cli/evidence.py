"""``varmixup-aug evidence``: the per-image, resumable robustness protocol for one classifier."""

from __future__ import annotations

import argparse
from typing import Any

from .. import DEFAULT_PARTS, EVIDENCE_PARTS
from ._flags import add_run_flags, float_list, int_list, one_float, start_run


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "evidence",
        help="clean/ECE/corruptions, the MI paper's PGD protocol, the published and our adaptive attacks, transfer",
        description="Evaluate one classifier checkpoint on a fixed subset of the test split and store, per image, "
        "whether each predictor was right (plain, MI-PL, MI-OL, MI-combined at lam 0.5 and at the lam chosen on "
        "held-out training images). Parts: " + ", ".join(EVIDENCE_PARTS) + " (all but autoattack by default). Results "
        "go to OUT (JSON), rewritten atomically after every chunk of images; running the same command again "
        "resumes, and a larger --*-n extends a finished part.",
    )
    p.add_argument("checkpoint", help="classifier checkpoint or its run folder")
    p.add_argument("--data-dir", required=True, help="the data the model was trained on")
    p.add_argument("--out", required=True, help="results JSON, e.g. results/cifar10-fast/erm/evidence.json")
    p.add_argument("--parts", default=",".join(DEFAULT_PARTS), help="comma-separated subset of the parts")
    p.add_argument("--n-test", type=int, default=1000, help="fixed test images (seed --seed)")
    p.add_argument("--test-subset", choices=["stratified", "random"], default="stratified",
                   help="stratified: the same number per class, stored in random order; random: a uniform draw in "
                   "test-split order (files made before this setting)")
    p.add_argument("--calibration-n", type=int, default=1000,
                   help="held-out training images the calibration part fits the temperature on")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk-size", type=int, default=100, help="images per saved chunk")
    p.add_argument("--pool-size", type=int, default=5000, help="images MI mixes with (10000: the MI reference code)")
    p.add_argument("--pool-source", choices=("train", "test-augmented"), default="train",
                   help="train: training images outside the held-out split; test-augmented: the MI reference "
                   "code's pool, test images each once through random crop (4 px zero padding) and flip")
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
    p.add_argument("--eot-sweep-n", type=int, default=100, help="images for the EOT-PGD sweep (0 skips it)")
    p.add_argument("--eot-sweep-eps", default="2/255,8/255")
    p.add_argument("--eot-sweep-steps", default="50,100,200", help="step counts read from one run")
    p.add_argument("--eot-sweep-eots", default="1,5,15", help="EOT draws per step, one run each")
    p.add_argument("--eot-sweep-restarts", type=int, default=2)
    p.add_argument("--eot-sweep-mi-samples", type=int, default=15, help="MI-OL mixes per attacker forward")
    p.add_argument("--apgd-n", type=int, default=100, help="images for APGD-CE then DLR with EOT (0 skips it)")
    p.add_argument("--apgd-steps", type=int, default=100)
    p.add_argument("--apgd-eot", type=int, default=20)
    p.add_argument("--apgd-mi-samples", type=int, default=15, help="MI-OL mixes per attacker forward")
    p.add_argument("--binarization-n", type=int, default=50, help="images for the binarization test (0 skips it)")
    p.add_argument("--binarization-attacks", default="eot_pgd,apgd",
                   help="the attacks the binarization test checks, each a part (eot_pgd, apgd)")
    p.add_argument("--binarization-eps", default="8/255", help="the L-inf radius of the binary tasks (one eps)")
    p.add_argument("--binarization-steps", type=int, default=50)
    p.add_argument("--binarization-eot", type=int, default=5)
    p.add_argument("--binarization-inner", type=int, default=200, help="inner points per binary task")
    p.add_argument("--binarization-mi-samples", type=int, default=15, help="MI-OL mixes per attacked forward")
    p.add_argument("--binarization-decoys", type=int, default=0,
                   help="random corners of the ball in the inner class: a harder task, on which random corners "
                        "fail (0: the original task; each count is its own part)")
    p.add_argument("--attack-precision", choices=("auto", "fp32", "bf16"), default="fp32",
                   help="the adaptive attacks' own forward and backward (bf16: autocast; auto: bf16 where the CPU "
                        "has bf16 units), stored per part; every verdict stays fp32")
    p.add_argument("--transfer-source", default=None,
                   help="plain (ERM) checkpoint or run folder the transfer attack is made on (none: no transfer)")
    p.add_argument("--transfer-eps", default="8/255,2/255")
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
        pool_source=args.pool_source, eot_sweep_n=args.eot_sweep_n,
        eot_sweep_eps=float_list(args.eot_sweep_eps, "--eot-sweep-eps"),
        eot_sweep_steps=int_list(args.eot_sweep_steps, "--eot-sweep-steps", "50,100,200"),
        eot_sweep_eots=int_list(args.eot_sweep_eots, "--eot-sweep-eots", "1,5,15"),
        eot_sweep_restarts=args.eot_sweep_restarts, eot_sweep_mi_samples=args.eot_sweep_mi_samples,
        apgd_n=args.apgd_n, apgd_steps=args.apgd_steps, apgd_eot=args.apgd_eot, apgd_mi_samples=args.apgd_mi_samples,
        binarization_n=args.binarization_n,
        binarization_attacks=tuple(a.strip() for a in args.binarization_attacks.split(",") if a.strip()),
        binarization_mi_samples=args.binarization_mi_samples,
        binarization_eps=one_float(args.binarization_eps, "--binarization-eps"),
        binarization_steps=args.binarization_steps, binarization_eot=args.binarization_eot,
        binarization_inner=args.binarization_inner, binarization_decoys=args.binarization_decoys,
        transfer_source=args.transfer_source,
        attack_precision=args.attack_precision,
        transfer_eps=float_list(args.transfer_eps, "--transfer-eps"),
        parts=tuple(p.strip() for p in args.parts.split(",") if p.strip()),
    )
    with hold_output(args.out, what="evidence"):
        data = run_evidence(args.checkpoint, args.data_dir, args.out, config=cfg, progress=progress)
    print(f"{data.get('method')}: parts {', '.join(sorted(data['parts']))} in {args.out}")
    return 0
