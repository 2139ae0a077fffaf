"""The evidence protocol's adaptive parts: the EOT-PGD sweep, APGD-CE then DLR with EOT, the binarization test of
that EOT-PGD, and transfer from a plain ERM model (attacks of :mod:`.adaptive`).

Each runs through :func:`~varmixup_aug.harness.evidence.run_evidence` like the other parts: per chunk of
images, stored per image, resumed chunk by chunk. The subset parts take the first ``*_n`` images of the fixed
adaptive subset (``n`` extends a finished file); ``transfer`` scores all the test images. The attacked
predictor is MI-OL at ``lam`` 0.5 with ``*_mi_samples`` fresh mixes per call, and the judge an independent
MI-OL with ``mi_samples_ol`` mixes (30 by default) and its own seed.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from varmixup_aug import VarMixupError
from varmixup_aug._random import derive_seed
from .adaptive import AutocastAttacker, apgd, apgd_ce_then_dlr, binarization_test, eot_pgd, eot_sweep, transfer_attack
from .classifier_checkpoint import checkpoint_file, load_classifier
from .evidence_results import binarization_part, binarization_task
from .scoring import eps_key

if TYPE_CHECKING:
    from .evidence import EvidenceConfig, _Context

__all__ = ["ADAPTIVE_PARTS", "ATTACKER_PARTS", "BINARIZATION_ATTACKS", "adaptive_runners",
           "attacker_part_names"]

ADAPTIVE_PARTS = ("eot_sweep", "apgd", "binarization", "transfer")
BINARIZATION_ATTACKS = ("eot_pgd", "apgd")
ATTACKER_PARTS = ("eot_sweep", "apgd", "binarization")  # their attacker runs in attack_precision, stored per part


def _bits(t: Tensor) -> str:
    return "".join("1" if b else "0" for b in t.bool().tolist())


def _evidence() -> Any:
    from . import evidence

    return evidence


def _in_attack_precision(ctx: _Context, model: nn.Module) -> nn.Module:
    """The attacker's model, under bf16 autocast when ``attack_precision`` is ``"bf16"`` (judges stay fp32)."""
    return AutocastAttacker(model) if ctx.cfg.attack_precision == "bf16" else model


def _attacker_and_judge(ctx: _Context, tag: str, samples: int) -> tuple[nn.Module, nn.Module]:
    attacker = ctx.mi("ol", "paper", f"{tag}:attacker", samples=samples)
    return _in_attack_precision(ctx, attacker), ctx.mi("ol", "paper", f"{tag}:judge")


def attacker_part_names(cfg: EvidenceConfig) -> tuple[str, ...]:
    """The stored names of the parts ``cfg`` runs whose attacker runs in ``cfg.attack_precision``."""
    names = []
    if "eot_sweep" in cfg.parts and cfg.eot_sweep_n:
        names += [f"eot_sweep:{eps_key(eps)}" for eps in cfg.eot_sweep_eps]
    if "apgd" in cfg.parts and cfg.apgd_n:
        names.append(f"apgd:{eps_key(cfg.apgd_eps)}")
    if "binarization" in cfg.parts and cfg.binarization_n:
        names += [binarization_part(a, eps_key(cfg.binarization_eps), cfg.binarization_decoys)
                  for a in cfg.binarization_attacks]
    return tuple(names)


def _run_attacker_chunks(ctx: _Context, part: str, n: int, size: int, work: Callable[[int, int, int], dict[str, Any]],
                         desc: str) -> None:
    """The part's chunks, with the attacker's precision stored in the part (its chunks share one)."""
    ctx.store.part(part).setdefault("attack_precision", ctx.cfg.attack_precision)
    _evidence()._run_chunks(ctx, part, n, size, work, desc)


def _part_eot_sweep(ctx: _Context) -> None:
    cfg, ev = ctx.cfg, _evidence()
    keep = ev._subset(ctx, cfg.eot_sweep_n)
    if not keep:
        return
    xs, ys = ctx.x[keep], ctx.y[keep]
    for eps in cfg.eot_sweep_eps:
        def work(i: int, s: int, e: int, eps: float = eps) -> dict[str, Any]:
            tag = f"eot_sweep:{eps_key(eps)}:{i}"
            attacker, judge = _attacker_and_judge(ctx, tag, cfg.eot_sweep_mi_samples)
            grid = eot_sweep(attacker, judge, ctx.model, xs[s:e], ys[s:e], eps=eps, steps=cfg.eot_sweep_steps,
                             eots=cfg.eot_sweep_eots, restarts=cfg.eot_sweep_restarts,
                             seed=derive_seed(cfg.seed, tag), batch_size=e - s)
            out: dict[str, Any] = {"indices": keep[s:e]}
            for name, bits in grid.items():
                out[f"{name}:mi_ol@paper"], out[f"{name}:none"] = _bits(bits["judge"]), _bits(bits["plain"])
            return out

        _run_attacker_chunks(ctx, f"eot_sweep:{eps_key(eps)}", len(keep), cfg.eot_sweep_chunk_size, work,
                             f"EOT-PGD sweep MI-OL {eps_key(eps)}")


def _part_apgd(ctx: _Context) -> None:
    cfg, ev = ctx.cfg, _evidence()
    keep = ev._subset(ctx, cfg.apgd_n)
    if not keep:
        return
    xs, ys = ctx.x[keep], ctx.y[keep]

    def work(i: int, s: int, e: int) -> dict[str, Any]:
        tag = f"apgd:{eps_key(cfg.apgd_eps)}:{i}"
        attacker, judge = _attacker_and_judge(ctx, tag, cfg.apgd_mi_samples)
        res = apgd_ce_then_dlr(attacker, xs[s:e], ys[s:e], eps=cfg.apgd_eps, judge=judge, steps=cfg.apgd_steps,
                               eot=cfg.apgd_eot, seed=derive_seed(cfg.seed, tag), batch_size=e - s)
        assert res.correct is not None  # a judge was given
        return {"indices": keep[s:e], "mi_ol@paper": _bits(res.correct),
                "none": _bits(ctx.plain_correct(res.adversarials, ys[s:e])[0]),
                "attack": "".join("d" if a == "dlr" else "c" for a in res.attack)}

    _run_attacker_chunks(ctx, f"apgd:{eps_key(cfg.apgd_eps)}", len(keep), cfg.apgd_chunk_size, work,
                         f"APGD-CE+DLR EOT-{cfg.apgd_eot} MI-OL")


def _binarization_attack(ctx: _Context, attack: str, eps: float, seed: int) -> Callable[..., Tensor]:
    """The attack under test on the binarized MI-OL: the evidence's EOT-PGD (``"eot_pgd"``) or APGD-CE."""
    cfg = ctx.cfg
    if attack == "apgd":
        def run_apgd(model: nn.Module, x: Tensor, y: Tensor, *, judge: nn.Module) -> Tensor:
            return apgd(_in_attack_precision(ctx, model), x, y, eps=eps, loss="ce", steps=cfg.binarization_steps,
                        eot=cfg.binarization_eot, judge=judge, seed=seed).adversarials

        return run_apgd

    def run_pgd(model: nn.Module, x: Tensor, y: Tensor, *, judge: nn.Module) -> Tensor:
        steps = cfg.binarization_steps
        return eot_pgd(_in_attack_precision(ctx, model), x, y, eps=eps, judge=judge, checkpoints=(steps,),
                       eot=cfg.binarization_eot, restarts=1, seed=seed).adversarials[steps]

    return run_pgd


def _part_binarization(ctx: _Context) -> None:
    """One part per attack under test, ``binarization:<attack>:<eps>``, on the same images and binary tasks."""
    cfg, ev = ctx.cfg, _evidence()
    keep = ev._subset(ctx, cfg.binarization_n)
    if not keep:
        return
    xs, ys, eps, decoys = ctx.x[keep], ctx.y[keep], cfg.binarization_eps, cfg.binarization_decoys
    task = binarization_task(eps_key(eps), decoys)
    for attack in cfg.binarization_attacks:
        def work(i: int, s: int, e: int, attack: str = attack) -> dict[str, Any]:
            tag = f"binarization:{task}:{i}"  # the same tasks (inner points) for every attack
            # the defence is binarized as it is; the attack on the binarized defence runs in attack_precision
            defence = ctx.mi("ol", "paper", f"{tag}:attacker", samples=cfg.binarization_mi_samples)
            judge = ctx.mi("ol", "paper", f"{tag}:judge")
            run_attack = _binarization_attack(ctx, attack, eps, derive_seed(cfg.seed, tag, attack))
            res = binarization_test(defence, xs[s:e], ys[s:e], run_attack, eps=eps, judge=judge,
                                    n_inner=cfg.binarization_inner, n_decoys=decoys,
                                    seed=derive_seed(cfg.seed, tag))
            rounded = partial(_rounded, digits=4)
            return {"indices": keep[s:e], "valid": _bits(res.valid), "success": _bits(res.success),
                    "random_hit": _bits(res.random_hit), "clean_correct": _bits(res.clean_correct),
                    "p_clean": rounded(res.p_clean), "p_boundary": rounded(res.p_boundary),
                    "p_adversarial": rounded(res.p_adversarial)}

        _run_attacker_chunks(ctx, binarization_part(attack, eps_key(eps), decoys), len(keep),
                             cfg.binarization_chunk_size, work, f"binarization test of {attack} {task}")


def _rounded(t: Tensor, digits: int) -> list[float | None]:
    return [None if v != v else round(float(v), digits) for v in t.tolist()]  # NaN (not run) as null


def _source(ctx: _Context) -> nn.Module | None:
    """The transfer source, a plain classifier on the evaluation's device, once its file is the one each
    stored transfer part was made from (its sha256, recorded in the part)."""
    cfg = ctx.cfg
    if cfg.transfer_source is None:
        return None
    path = checkpoint_file(Path(cfg.transfer_source))
    sha = _evidence()._sha256(path)
    for eps in cfg.transfer_eps:
        part = f"transfer:{eps_key(eps)}"
        if ctx.store.part(part).setdefault("source_sha", sha) != sha:
            raise VarMixupError(f"{part} in {ctx.store.path} was made from another source checkpoint than "
                                f"{cfg.transfer_source}; use another output path or pass that source")
    device = next((p.device for p in ctx.model.parameters()), torch.device("cpu"))
    return load_classifier(path, device=device).eval()


def _part_transfer(ctx: _Context) -> None:
    cfg, ev = ctx.cfg, _evidence()
    model = _source(ctx)
    if model is None:
        return  # no source checkpoint configured (transfer_source): nothing to transfer from
    for eps in cfg.transfer_eps:
        part = f"transfer:{eps_key(eps)}"

        def work(i: int, s: int, e: int, eps: float = eps) -> dict[str, Any]:
            x, y, tag = ctx.x[s:e], ctx.y[s:e], f"transfer:{eps_key(eps)}:{i}"
            targets = {"none": ctx.model, "mi_ol@paper": ctx.mi("ol", "paper", tag),
                       "mi_pl@paper": ctx.mi("pl", "paper", tag), "mi_ol@selected": ctx.mi("ol", "selected", tag)}
            res = transfer_attack(model, x, y, eps=eps, targets=targets, steps=cfg.pgd_steps,
                                  seed=derive_seed(cfg.seed, tag), batch_size=e - s)
            return {name: _bits(bits) for name, bits in res.correct.items()}

        ev._run_chunks(ctx, part, ctx.x.shape[0], cfg.chunk_size, work, f"transfer PGD-{cfg.pgd_steps} {eps_key(eps)}")


def adaptive_runners(ctx: _Context) -> dict[str, Callable[[], None]]:
    """The runner of each adaptive part for one evidence run."""
    return {"eot_sweep": lambda: _part_eot_sweep(ctx), "apgd": lambda: _part_apgd(ctx),
            "binarization": lambda: _part_binarization(ctx), "transfer": lambda: _part_transfer(ctx)}
