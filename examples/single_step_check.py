"""Catastrophic overfitting check of a single-step adversarially trained model.

Its accuracy under FGSM from a random start (in the eps ball, step 1.25 eps: the attack of FGSM-RS training)
against PGD-10, on the evidence's stratified test images; the JSON names the model's
method and, for ``adv-train``, its training attack.

    python examples/single_step_check.py results/cifar10-papers/seed0/adv-train --data-dir \\
        ../shared/data/cifar10-jpg.tar.gz --out results/cifar10-papers/seed0/adv-train/single_step_check.json

A model that resists one FGSM step far better than PGD (Wong, Rice and Kolter 2020, "catastrophic
overfitting") has learnt to mask that step, not robustness; it is not an adversarial-training baseline.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from _report_args import add_report_args, apply_report_args, write_report  # a sibling module (the script's folder)
from varmixup_aug import VarMixupError
from varmixup_aug.harness import adversarial_examples, fgsm_random_start, load_evaluation_data


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).double().mean())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a train-fast run folder or checkpoint")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--n", type=int, default=500, help="stratified test images (the evidence's draw, seed 0)")
    p.add_argument("--eps", default="2/255,8/255")
    add_report_args(p)
    args = p.parse_args()
    apply_report_args(p, args)
    try:
        eps_values = [float(a) / float(b) for a, b in (e.split("/") for e in args.eps.split(","))]
    except ValueError:
        p.error(f"--eps must be fractions such as 2/255,8/255, got {args.eps!r}")
    try:
        data = load_evaluation_data(args.run, args.data_dir, n_test=args.n, pool_size=10, select_n=0, seed=0,
                                    test_subset="stratified", progress=False)
    except VarMixupError as exc:
        p.error(str(exc))
    model, x, y = data["model"], data["x"], data["y"]
    rows = []
    for eps in eps_values:
        targets = F.one_hot(y, int(model(x[:1]).shape[1])).float()
        fgsm = fgsm_random_start(model, x, targets, eps=eps, step_size=1.25 * eps,
                                 generator=torch.Generator().manual_seed(1))
        pgd = adversarial_examples(model, x, y, attack="pgd", eps=eps, steps=10, seed=0)
        rows.append({"eps": round(eps * 255, 3), "fgsm_random_start": accuracy(model, fgsm, y),
                     "pgd10": accuracy(model, pgd, y)})
    clean = accuracy(model, x, y)
    method = data["meta"].get("method")
    adv_attack = data["meta"].get("args", {}).get("adv_attack", "fgsm-rs") if method == "adv-train" else None
    result = {"run": str(args.run), "method": method, "adv_attack": adv_attack, "n": int(x.shape[0]),
              "clean": clean, "rows": rows}
    trained = f"{method}, {adv_attack}" if adv_attack else method
    print(f"clean {100 * clean:.1f}% on {x.shape[0]} images ({trained})")
    print("| eps (/255) | FGSM from a random start, step 1.25 eps | PGD-10 |")
    for r in rows:
        print(f"| {r['eps']:g} | {100 * r['fgsm_random_start']:.1f} | {100 * r['pgd10']:.1f} |")
    write_report(args, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
