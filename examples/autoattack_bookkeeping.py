"""Why AutoAttack-rand leaves MI-OL some images that the published PGD-50 does not.

torchattacks decides with single forward passes which images are already fooled, and a forward pass
of MI-OL is random: ``APGD.perturb`` leaves unattacked an image that one pass misclassifies before
the attack starts, and ``MultiAttack`` returns the clean image wherever the pass after each attack
says "still right", throwing the perturbation away. The independent judge (MI-OL, N=30) then scores
what came back. This script measures both effects on the images of a finished AutoAttack part:

1. from the committed per-image results: which images the judge still calls right, and whether the
   plain model (which the adversarial images fool when they are kept) is right on them too;
2. for every scored image, how often one forward pass of the attacker's MI-OL (15 mixes, ``lam``
   0.5) misclassifies the clean image;
3. with ``--rerun``: AutoAttack-rand again on each image the judge called right, one at a time, and
   the L-inf distance of what it returns from the clean image (0 means the clean image came back)::

    python examples/autoattack_bookkeeping.py results/cifar10-fast/mixup \\
        --data-dir ../shared/data/cifar10-jpg.tar.gz --rerun \\
        --out results/cifar10-fast/mixup/autoattack_bookkeeping.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from _report_args import add_report_args, apply_report_args, write_report  # a sibling module (the script's folder)
from varmixup_aug import MIPredictor
from varmixup_aug.harness import (PAPER_LAM, autoattack_rand, bits_to_bool, load_evaluation_data, part_indices,
                                  part_vector)


def single_pass_error(attacker: MIPredictor, x: torch.Tensor, y: torch.Tensor, repeats: int) -> torch.Tensor:
    """Per image: the fraction of ``repeats`` independent attacker forward passes that misclassify it."""
    with torch.no_grad():
        wrong = [(attacker.predict(x[i:i + 1].expand(repeats, -1, -1, -1)) != y[i]).double().mean()
                 for i in range(len(y))]
    return torch.stack(wrong)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="train-fast run folder holding evidence.json with an AutoAttack part")
    p.add_argument("--data-dir", default="../shared/data/cifar10-jpg.tar.gz")
    p.add_argument("--evidence", default=None, help="the evidence JSON (default: RUN/evidence.json)")
    p.add_argument("--repeats", type=int, default=100, help="forward passes per image for the single-pass error")
    p.add_argument("--rerun", action="store_true", help="rerun AutoAttack-rand on the images the judge called right")
    add_report_args(p)
    args = p.parse_args()
    apply_report_args(p, args)
    evidence = json.loads(Path(args.evidence or Path(args.run) / "evidence.json").read_text())
    cfg = evidence["config"]
    part = next((k for k in evidence["parts"] if k.startswith("autoattack:")), None)
    positions = part_indices(evidence, part) if part else None
    if part is None or positions is None:
        p.error("the evidence JSON has no finished AutoAttack part; run `varmixup-aug evidence ... --parts autoattack`")
    data = load_evaluation_data(args.run, args.data_dir, n_test=cfg["n_test"], pool_size=cfg["pool_size"],
                                select_n=0, seed=cfg["seed"], progress=False)
    x, y = data["x"][positions], data["y"][positions]
    with torch.no_grad():
        num_classes = int(data["model"](x[:1]).shape[1])
    attacker = MIPredictor(data["model"], data["pool"], num_classes=num_classes, mode="ol", lam=PAPER_LAM,
                           num_samples=cfg["autoattack_mi_samples"], seed=1)
    error = single_pass_error(attacker, x, y, args.repeats)
    judged, plain = part_vector(evidence, part, "mi_ol@paper"), part_vector(evidence, part, "none")
    if judged is None or plain is None:
        p.error(f"the evidence JSON's part {part!r} lacks the finished 'mi_ol@paper' or 'none' results")
    survived, plain_right = bits_to_bool(judged), bits_to_bool(plain)
    report = {
        "part": part, "n": len(positions), "repeats": args.repeats,
        "judge_right": int(survived.sum()), "plain_right": int(plain_right.sum()),
        "judge_right_and_plain_right": int((survived & plain_right).sum()),
        "single_pass_error_mean": {"judge_right": float(error[survived].mean()) if survived.any() else None,
                                   "judge_wrong": float(error[~survived].mean()) if (~survived).any() else None},
        "images": [{"position": positions[i], "judge_right": bool(survived[i]), "plain_right": bool(plain_right[i]),
                    "single_pass_error": round(float(error[i]), 3)} for i in range(len(positions))],
    }
    print(f"{part}: {len(positions)} images; judge (MI-OL N={cfg['mi_samples_ol']}) right on {report['judge_right']}, "
          f"plain model right on {report['plain_right']}, both on {report['judge_right_and_plain_right']}")
    print(f"one attacker pass misclassifies the clean image: {report['single_pass_error_mean']}")
    if args.rerun:
        judge = MIPredictor(data["model"], data["pool"], num_classes=num_classes, mode="ol", lam=PAPER_LAM,
                            num_samples=cfg["mi_samples_ol"], seed=2)
        print("| position | L-inf of returned - clean (x255) | judge right on returned | seconds |")
        print("|---:|---:|---|---:|")
        for rec, i in ((r, k) for k, r in enumerate(report["images"]) if r["judge_right"]):
            t0 = time.perf_counter()
            torch.manual_seed(i)
            adv = autoattack_rand(attacker, x[i:i + 1], y[i:i + 1], eps=cfg["autoattack_eps"],
                                  steps=cfg["autoattack_steps"], eot_iter=cfg["autoattack_eot"], seed=i)
            rec["rerun_linf_255"] = round(255 * float((adv - x[i:i + 1]).abs().max()), 3)
            with torch.no_grad():
                rec["rerun_judge_right"] = bool(judge.predict(adv)[0] == y[i])
            rec["rerun_seconds"] = round(time.perf_counter() - t0, 1)
            print(f"| {rec['position']} | {rec['rerun_linf_255']} | {rec['rerun_judge_right']} "
                  f"| {rec['rerun_seconds']} |")
    write_report(args, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
