"""The evidence protocol: a per-image, resumable robustness evaluation of one classifier.

The ``n_test`` images are stratified (the same number per class) and stored in a seeded random
order (``test_subset="stratified"``), so a partial run is class-balanced too; files made before
that setting read as ``test_subset="random"`` (a uniform draw in test-split order).

Every part stores, for every image, whether each predictor got it right, so accuracies get
confidence intervals and methods can be compared pairwise on the same images
(:mod:`~varmixup_aug.harness.significance`). Results go into one JSON file per checkpoint,
written atomically after every chunk of images; a rerun skips the chunks already there.

Parts (``EvidenceConfig.parts``):

- ``lam_selection``: MI's ``lam`` per mode, chosen on held-out *training* images.
- ``calibration``: the plain model on *all* test images (correctness, confidence), and the
  temperature fitted on ``calibration_n`` held-out training images (Guo et al. 2017), with the
  confidences after scaling; ECE raw and scaled come from it.
- ``clean``: plain predictions with confidences (ECE, reliability), and MI at both ``lam`` sets.
- ``corruptions``: 11 corruptions x 3 severities, plain model.
- ``oblivious``: the MI paper's protocol, untargeted PGD-10 (step ``eps / 4``, random start)
  against the plain model, scored plain and with MI-PL (N=10), MI-OL (N=30) and MI-combined,
  at ``lam = 0.5`` (the paper) and at the selected ``lam``, per eps.
- ``published``: Tramer, Carlini, Brendel and Madry (2020)'s attack on MI: PGD-50, step
  ``0.5/255``, random start, through MI-OL itself with 15 fresh mixes on every forward pass; scored
  by an independent MI-OL (N=30) and the plain model, per eps, on a fixed subset.
- ``eot_sweep``: EOT-PGD through MI-OL (15 mixes) at 50, 100 and 200 steps x EOT 1, 5 and 15, 2 restarts,
  per image its best iterate under an independent MI-OL (N=30); scored by a fresh pass of that judge and
  by the plain model; on the first ``eot_sweep_n`` images of the subset, at 2/255 and 8/255.
- ``apgd``: our APGD-CE then APGD-DLR with EOT 20 through MI-OL (:func:`.adaptive.apgd_ce_then_dlr`),
  which returns every image's own best iterate; on the first ``apgd_n`` images. It replaces
  ``autoattack`` (torchattacks' AutoAttack-rand, which returns clean images it does not count as
  fooled); that part still runs when named in ``parts`` and old files are read as they are.
- ``binarization``: the binarization test (:func:`.adaptive.binarization_test`) of the EOT-PGD used
  above, on MI-OL; on the first ``binarization_n`` images; with ``binarization_decoys`` corners of the
  ball in the inner class, a harder task, stored as its own part (``...:decoys<k>``).
- ``transfer``: PGD-10 made on another plain model (``transfer_source``, an ERM checkpoint) and scored
  by this model plain and with MI, on all the test images; skipped without a source.

The four adaptive parts (``eot_sweep``, ``apgd``, ``binarization``, ``transfer``) are in :mod:`.evidence_adaptive`.

The MI pool is ``pool_size`` training images by default; ``pool_source="test-augmented"`` is the pool of
the MI reference code (test images, training augmentation; see ``load_evaluation_data``).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from varmixup_aug import MIPredictor, VarMixupError
from varmixup_aug._checks import check_int
from varmixup_aug._io import atomic_write_json
from varmixup_aug._random import derive_seed
from .attacks import adversarial_examples
from .calibration import expected_calibration_error, fit_temperature
from .corruptions import CORRUPTIONS, SEVERITIES, corrupt
from .evidence_adaptive import (ADAPTIVE_PARTS, ATTACKER_PARTS, BINARIZATION_ATTACKS,
                                adaptive_runners, attacker_part_names)
from .fast_training import resolve_precision
from .lam_selection import select_mi_lam
from .data import load_tensor_dataset, open_image_dataset
from .report import POOL_SOURCES, TEST_SUBSETS, load_evaluation_data
from .eval_context import EvalContext
from .evidence_results import attack_precision
from .scoring import batch_ranges, eps_key, mi_correct

__all__ = ["DEFAULT_PARTS", "EVIDENCE_PARTS", "EvidenceConfig", "autoattack_rand", "run_evidence", "vector_accuracy"]

EVIDENCE_PARTS = ("lam_selection", "calibration", "clean", "corruptions", "oblivious", "published", *ADAPTIVE_PARTS,
                  "autoattack")
# What a run does when no parts are named: every part but the superseded torchattacks AutoAttack-rand.
DEFAULT_PARTS = tuple(p for p in EVIDENCE_PARTS if p != "autoattack")
PAPER_LAM = 0.5
FORMAT = "varmixup-aug-evidence"


@dataclass(frozen=True)
class EvidenceConfig:
    """Settings of :func:`run_evidence`; the defaults are the protocol of the reproduction."""

    n_test: int = 1000
    test_subset: str = "stratified"
    calibration_n: int = 1000
    seed: int = 0
    chunk_size: int = 100
    ece_bins: int = 15
    pool_size: int = 5000
    oblivious_eps: tuple[float, ...] = (2 / 255, 4 / 255, 8 / 255)
    pgd_steps: int = 10
    mi_samples_pl: int = 10
    mi_samples_ol: int = 30
    combined_threshold: float = 0.2
    lam_grid: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    select_n: int = 500
    select_eps: float = 2 / 255
    select_mi_samples: int = 10
    max_clean_drop: float = 0.05
    published_eps: tuple[float, ...] = (8 / 255, 2 / 255)
    published_n: int = 500
    published_steps: int = 50
    published_step_size: float = 0.5 / 255
    published_mi_samples: int = 15
    published_chunk_size: int = 25
    autoattack_n: int = 0
    autoattack_eps: float = 8 / 255
    autoattack_steps: int = 100
    autoattack_eot: int = 20
    autoattack_mi_samples: int = 15
    autoattack_chunk_size: int = 5
    pool_source: str = "train"
    eot_sweep_n: int = 100
    eot_sweep_eps: tuple[float, ...] = (2 / 255, 8 / 255)
    eot_sweep_steps: tuple[int, ...] = (50, 100, 200)
    eot_sweep_eots: tuple[int, ...] = (1, 5, 15)
    eot_sweep_restarts: int = 2
    eot_sweep_mi_samples: int = 15
    eot_sweep_chunk_size: int = 5
    apgd_n: int = 100
    apgd_eps: float = 8 / 255
    apgd_steps: int = 100
    apgd_eot: int = 20
    apgd_mi_samples: int = 15
    apgd_chunk_size: int = 5
    binarization_n: int = 50
    binarization_eps: float = 8 / 255
    binarization_attacks: tuple[str, ...] = BINARIZATION_ATTACKS
    binarization_steps: int = 50
    binarization_eot: int = 5
    binarization_inner: int = 200
    binarization_mi_samples: int = 15
    binarization_chunk_size: int = 5
    binarization_decoys: int = 0
    attack_precision: str = "fp32"
    transfer_source: str | None = None
    transfer_eps: tuple[float, ...] = (8 / 255, 2 / 255)
    parts: tuple[str, ...] = DEFAULT_PARTS

    def __post_init__(self) -> None:
        unknown = [p for p in self.parts if p not in EVIDENCE_PARTS]
        if unknown:
            raise VarMixupError(f"parts {unknown} are unknown; choose from {list(EVIDENCE_PARTS)}")
        if self.test_subset not in TEST_SUBSETS:
            raise VarMixupError(f"test_subset must be one of {TEST_SUBSETS}, got {self.test_subset!r}")
        for name in ("n_test", "calibration_n", "chunk_size", "pool_size", "published_n", "published_chunk_size",
                     "autoattack_chunk_size", "select_n", "eot_sweep_restarts", "eot_sweep_mi_samples",
                     "eot_sweep_chunk_size", "apgd_steps", "apgd_eot", "apgd_mi_samples", "apgd_chunk_size",
                     "binarization_steps", "binarization_eot", "binarization_mi_samples", "binarization_chunk_size"):
            object.__setattr__(self, name, check_int(name, getattr(self, name)))
        for name in ("eot_sweep_n", "apgd_n", "binarization_n", "binarization_decoys"):  # 0: skip / none
            object.__setattr__(self, name, check_int(name, getattr(self, name), minimum=0))
        object.__setattr__(self, "binarization_inner", check_int("binarization_inner", self.binarization_inner,
                                                                 minimum=2))
        for name in ("eot_sweep_steps", "eot_sweep_eots"):
            object.__setattr__(self, name, tuple(check_int(name, v) for v in getattr(self, name)))
        for eps in (*self.oblivious_eps, *self.published_eps, self.autoattack_eps, *self.eot_sweep_eps,
                    self.apgd_eps, self.binarization_eps, *self.transfer_eps):
            if not math.isfinite(eps) or not 0 <= eps <= 1:
                raise VarMixupError(f"eps values must be in [0, 1] (pixel units, e.g. 8/255), got {eps!r}")
        if self.pool_source not in POOL_SOURCES:
            raise VarMixupError(f"pool_source must be one of {POOL_SOURCES}, got {self.pool_source!r}")
        # auto: bf16 only where the CPU has bf16 units (emulated bf16 is many times slower than fp32)
        object.__setattr__(self, "attack_precision", resolve_precision(self.attack_precision, "attack_precision"))
        attacks = self.binarization_attacks
        if not attacks or len(set(attacks)) < len(attacks) or not set(attacks) <= set(BINARIZATION_ATTACKS):
            raise VarMixupError(f"binarization_attacks must be distinct names from {BINARIZATION_ATTACKS}, got "
                                f"{attacks!r}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _bits(t: Tensor) -> str:
    return "".join("1" if b else "0" for b in t.bool().tolist())


def vector_accuracy(bits: str) -> float:
    """The accuracy of a stored per-image bit string."""
    return bits.count("1") / max(1, len(bits))


# Settings that do not change any stored chunk: which parts run (and which attacks the binarization test
# checks, at which eps and with how many decoys, a part each, its tasks seeded by both), how long the prefix
# of the adaptive subset is (its chunks are the same for any length), and the transfer source's path (its
# file's sha256 is checked per part instead, so the same file under another path is accepted). The
# attacker's precision is stored in each attacker part and checked there (:func:`_check_attack_precision`).
_EXTENDABLE = ("parts", "binarization_attacks", "binarization_eps", "binarization_decoys", "published_n",
               "autoattack_n", "eot_sweep_n", "apgd_n", "binarization_n", "transfer_source", "attack_precision")
# Settings added later, as the files made before them ran: the random test subset, and the MI pool of training
# images; the adaptive parts' settings at their defaults (no file made before them has those parts).
_ADAPTIVE_SETTINGS = ("eot_sweep", "apgd_", "binarization_", "transfer_")
_DEFAULTS_BEFORE = {"test_subset": "random", "calibration_n": 1000, "pool_source": "train",
                    **{k: v for k, v in EvidenceConfig().to_dict().items() if k.startswith(_ADAPTIVE_SETTINGS)}}


# Settings of one kind of part, by name prefix: they may change while no chunk of such a part is stored.
_PART_SETTINGS = {"published_": ("published",), "autoattack_": ("autoattack",), "eot_sweep_": ("eot_sweep",),
                  "apgd_": ("apgd",), "binarization_": ("binarization",), "transfer_": ("transfer",)}


def _identity(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: v for k, v in {**_DEFAULTS_BEFORE, **value}.items() if k not in _EXTENDABLE}
    return value


def _config_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    a, b = _identity(saved), _identity(now)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def _parts_of_setting(name: str) -> tuple[str, ...] | None:
    """The kinds of part a setting affects alone, or ``None`` when it affects every part."""
    return next((parts for prefix, parts in _PART_SETTINGS.items() if name.startswith(prefix)), None)


def _stored_parts(data: dict[str, Any]) -> set[str]:
    """The kinds of part (``oblivious``, ``eot_sweep``, ...) with at least one stored chunk or result."""
    return {name.split(":")[0] for name, entry in data.get("parts", {}).items()
            if entry.get("chunks") or entry.get("result") is not None}


def _binding_changes(data: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The config changes that would alter stored results: a part's own settings bind once it has a chunk."""
    stored = _stored_parts(data)
    changed = _config_changes(data.get("config") or {}, now)
    return [k for k in changed if (parts := _parts_of_setting(k)) is None or stored.intersection(parts)]


def _store_attack_precision_per_part(data: dict[str, Any]) -> None:
    """Files made before the attacker precision was stored per part had one for all, in their config (fp32
    before the setting existed): each stored attacker part gets it, before the config is replaced."""
    for name, entry in data.get("parts", {}).items():
        if name.split(":")[0] in ATTACKER_PARTS and entry.get("chunks"):
            entry["attack_precision"] = attack_precision(data, name)


def _check_attack_precision(path: Path, data: dict[str, Any], now: str, parts: tuple[str, ...]) -> None:
    """Each attacker part keeps the attacker precision its first chunk had."""
    other = [f"{name} ({data['parts'][name]['attack_precision']})" for name in parts
             if data["parts"].get(name, {}).get("chunks") and data["parts"][name]["attack_precision"] != now]
    if other:
        raise VarMixupError(f"{path}: {', '.join(other)} were attacked with another attack_precision than {now!r}; "
                            "pass theirs (--attack-precision) to extend them, or leave them out of --parts "
                            "(--eot-sweep-n 0, --apgd-n 0, --binarization-attacks name the others)")


def _read_store(path: Path) -> dict[str, Any]:
    """The evidence file at ``path``; an empty, foreign or non-JSON file is refused, never overwritten."""
    fix = "pass another --out (out=), or move this file away"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise VarMixupError(f"--out {path} exists but cannot be read as an evidence file ({exc}); {fix}") from exc
    if not text.strip():
        raise VarMixupError(f"--out {path} exists but is empty, not an evidence file; {fix}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise VarMixupError(f"--out {path} exists but is not an evidence file (not JSON: {exc}); {fix}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise VarMixupError(f"{path} exists but is not an evidence file; choose another output path: {fix}")
    _store_attack_precision_per_part(data)
    return data


class _Store:
    """The results JSON of one checkpoint, rewritten atomically after every chunk."""

    def __init__(self, path: Path, header: dict[str, Any], attacker_parts: tuple[str, ...],
                 existing: dict[str, Any] | None) -> None:
        """``existing``: the file at ``path`` as :func:`_read_store` gave it, or None when there is none yet."""
        self.path = path
        if existing is not None:
            self.data = existing
            if self.data.get("checkpoint_sha") != header.get("checkpoint_sha"):
                raise VarMixupError(f"{path} was made with another checkpoint_sha (another checkpoint); use another "
                                    "output path or delete it to start over")
            _check_attack_precision(path, self.data, header["config"]["attack_precision"], attacker_parts)
            changed = _binding_changes(self.data, header["config"])
            if changed:
                raise VarMixupError(f"{path} was made with another config ({', '.join(changed)}); pass the settings it "
                                    "was made with, use another output path, or delete it to start over")
            self.data["config"] = header["config"]  # what changed, if anything, belongs to parts not run yet
        else:
            self.data = {"format": FORMAT, **header, "parts": {}}

    def part(self, name: str) -> dict[str, Any]:
        return self.data["parts"].setdefault(name, {"chunks": {}})

    def save(self) -> None:
        atomic_write_json(self.path, self.data, indent=1)


def _chunks(n: int, size: int) -> Iterator[tuple[int, int, int]]:
    for i, s in enumerate(range(0, n, size)):
        yield i, s, min(n, s + size)


@dataclass
class _Context(EvalContext):
    """One ``evidence`` run: the shared context, its settings and store, and the ``lam`` sets."""

    cfg: EvidenceConfig
    store: _Store
    lams: dict[str, dict[str, float]] = field(default_factory=dict)

    def mi(self, mode: Literal["pl", "ol", "combined"], lam_set: str, tag: str, *, samples: int | None = None
           ) -> MIPredictor:
        lam = self.lams[lam_set]
        if mode == "combined":
            return self.make_mi("combined", tag, mode, lam_set, lam=lam["pl"], num_samples=self.cfg.mi_samples_pl,
                                lam_ol=lam["ol"], num_samples_ol=self.cfg.mi_samples_ol,
                                threshold=self.cfg.combined_threshold)
        n = samples or (self.cfg.mi_samples_pl if mode == "pl" else self.cfg.mi_samples_ol)
        return self.make_mi(mode, tag, mode, lam_set, lam=lam[mode], num_samples=n)

    def plain_correct(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Whether the plain model is right on each image, and its confidence (one call for the chunk)."""
        conf, pred = self.logits(x, x.shape[0]).softmax(1).max(1)
        return pred == y, conf


def _mi_vectors(ctx: _Context, x: Tensor, y: Tensor, tag: str) -> dict[str, str]:
    out = {}
    for lam_set in ctx.lams:
        for mode in ("pl", "ol", "combined"):
            out[f"mi_{mode}@{lam_set}"] = _bits(mi_correct(ctx.mi(mode, lam_set, tag), x, y, 50))
    return out


def _run_chunks(ctx: _Context, part: str, n: int, size: int, work: Callable[[int, int, int], dict[str, Any]],
                desc: str) -> None:
    entry = ctx.store.part(part)
    done = entry["chunks"]
    todo = [c for c in _chunks(n, size) if done.get(str(c[0]), {}).get("range") != [c[1], c[2]]]
    t_part = time.perf_counter()
    for i, s, e in tqdm(todo, desc=desc, unit="chunk", disable=not ctx.progress):
        t0 = time.perf_counter()
        result = work(i, s, e)
        result["range"] = [s, e]
        result["seconds"] = round(time.perf_counter() - t0, 2)
        entry["chunks"][str(i)] = result
        ctx.store.save()
    entry["n"] = n
    if todo:  # a rerun with nothing left to do keeps the time of the run that did the work
        entry["seconds_this_run"] = round(time.perf_counter() - t_part, 1)
    ctx.store.save()


_SELECTED_LAM_PARTS = frozenset({"lam_selection", "clean", "oblivious", "transfer"})  # parts using ctx.lams["selected"]


def _part_lam_selection(ctx: _Context, held: tuple[Tensor, Tensor] | None) -> None:
    entry = ctx.store.part("lam_selection")
    if "result" not in entry:
        if held is None:
            raise VarMixupError("lam selection needs the checkpoint's held-out training images; it stores none")
        assert ctx.pool is not None  # run_evidence always loads a pool (load_evaluation_data)
        sel = select_mi_lam(ctx.model, held[0], held[1], ctx.pool, grid=ctx.cfg.lam_grid, eps=ctx.cfg.select_eps,
                            steps=ctx.cfg.pgd_steps, max_clean_drop=ctx.cfg.max_clean_drop,
                            num_samples=ctx.cfg.select_mi_samples, seed=ctx.cfg.seed, progress=ctx.progress)
        entry["result"] = sel
        ctx.store.save()
    sel = entry["result"]
    ctx.lams["selected"] = {"pl": sel["pl"]["lam"], "ol": sel["ol"]["lam"]}


def _part_calibration(ctx: _Context, calibration: tuple[Tensor, Tensor] | None,
                      load_test: Callable[[], tuple[Tensor, Tensor]]) -> None:
    entry = ctx.store.part("calibration")
    if "result" in entry:
        return
    if calibration is None:
        raise VarMixupError("the calibration part fits its temperature on the checkpoint's held-out training "
                            "images; this checkpoint stores none (train it with train-fast, which keeps them)")
    t0 = time.perf_counter()
    test = load_test()
    held_logits = ctx.logits(calibration[0], 500)
    temperature = fit_temperature(held_logits, calibration[1])
    logits = torch.cat([ctx.logits(test[0][s:e], 500) for s, e in batch_ranges(test[0].shape[0], 2000)])
    correct = logits.argmax(1) == test[1]

    def top(z: Tensor) -> Tensor:
        return z.softmax(1).max(1).values

    def ece(z: Tensor, right: Tensor) -> float:
        return expected_calibration_error(top(z), right, n_bins=ctx.cfg.ece_bins)

    held_right = held_logits.argmax(1) == calibration[1]
    entry["result"] = {
        "temperature": temperature,
        "fit": {"n": int(held_right.numel()), "nll_before": _nll(held_logits, calibration[1], 1.0),
                "nll_after": _nll(held_logits, calibration[1], temperature),
                "ece_before": ece(held_logits, held_right), "ece_after": ece(held_logits / temperature, held_right)},
        "test": {"n": int(correct.numel()), "correct": _bits(correct),
                 "confidence": [round(float(c), 5) for c in top(logits)],
                 "confidence_ts": [round(float(c), 5) for c in top(logits / temperature)],
                 "ece": ece(logits, correct), "ece_ts": ece(logits / temperature, correct),
                 "accuracy": float(correct.double().mean())},
        "seconds": round(time.perf_counter() - t0, 2),
    }
    ctx.store.save()


def _nll(logits: Tensor, labels: Tensor, temperature: float) -> float:
    return float(torch.nn.functional.cross_entropy(logits / temperature, labels))


def _part_clean(ctx: _Context) -> None:
    def work(i: int, s: int, e: int) -> dict[str, Any]:
        x, y = ctx.x[s:e], ctx.y[s:e]
        correct, conf = ctx.plain_correct(x, y)
        return {"none": _bits(correct), "confidence": [round(float(c), 5) for c in conf],
                **_mi_vectors(ctx, x, y, f"clean:{i}")}

    _run_chunks(ctx, "clean", ctx.x.shape[0], ctx.cfg.chunk_size, work, "clean + MI")


def _part_corruptions(ctx: _Context) -> None:
    jobs = [(c, s) for c in CORRUPTIONS for s in SEVERITIES]

    def work(i: int, s: int, e: int) -> dict[str, Any]:
        name, severity = jobs[i]
        xc = corrupt(ctx.x, name, severity, seed=ctx.cfg.seed)
        return {"corruption": name, "severity": severity, "none": _bits(ctx.plain_correct(xc, ctx.y)[0])}

    _run_chunks(ctx, "corruptions", len(jobs), 1, work, "corruptions")


def _part_oblivious(ctx: _Context) -> None:
    for eps in ctx.cfg.oblivious_eps:
        def work(i: int, s: int, e: int, eps: float = eps) -> dict[str, Any]:
            x, y = ctx.x[s:e], ctx.y[s:e]
            adv = adversarial_examples(ctx.model, x, y, attack="pgd", eps=eps, steps=ctx.cfg.pgd_steps,
                                       step_size=eps / 4, batch_size=e - s,
                                       seed=derive_seed(ctx.cfg.seed, "oblivious", eps_key(eps), i))
            return {"none": _bits(ctx.plain_correct(adv, y)[0]),
                    **_mi_vectors(ctx, adv, y, f"oblivious:{eps_key(eps)}:{i}")}

        _run_chunks(ctx, f"oblivious:{eps_key(eps)}", ctx.x.shape[0], ctx.cfg.chunk_size, work,
                    f"PGD-{ctx.cfg.pgd_steps} {eps_key(eps)}")


def _subset(ctx: _Context, limit: int | None = None) -> list[int]:
    """The first ``limit`` (default ``published_n``) of a fixed order of the test images for the adaptive
    attacks (the same for every model); every adaptive part takes a prefix of it, so they share images."""
    n = ctx.x.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(ctx.cfg.seed, "adaptive-subset")))
    return perm[:min(n, ctx.cfg.published_n if limit is None else limit)].tolist()


def _judge(ctx: _Context, adv: Tensor, y: Tensor, tag: str) -> dict[str, str]:
    judge = ctx.mi("ol", "paper", f"{tag}:judge")
    return {"mi_ol@paper": _bits(mi_correct(judge, adv, y, 50)), "none": _bits(ctx.plain_correct(adv, y)[0])}


def _part_published(ctx: _Context) -> None:
    keep = _subset(ctx)
    xs, ys = ctx.x[keep], ctx.y[keep]
    for eps in ctx.cfg.published_eps:
        def work(i: int, s: int, e: int, eps: float = eps) -> dict[str, Any]:
            tag = f"published:{eps_key(eps)}:{i}"
            attacker = ctx.mi("ol", "paper", f"{tag}:attacker", samples=ctx.cfg.published_mi_samples)
            adv = adversarial_examples(attacker, xs[s:e], ys[s:e], attack="pgd", eps=eps,
                                       steps=ctx.cfg.published_steps, step_size=ctx.cfg.published_step_size,
                                       batch_size=e - s, seed=derive_seed(ctx.cfg.seed, tag))
            return {"indices": keep[s:e], **_judge(ctx, adv, ys[s:e], tag)}

        _run_chunks(ctx, f"published:{eps_key(eps)}", len(keep), ctx.cfg.published_chunk_size, work,
                    f"published PGD-{ctx.cfg.published_steps} MI-OL {eps_key(eps)}")


def autoattack_rand(model: nn.Module, images: Tensor, labels: Tensor, *, eps: float, steps: int = 100,
                    eot_iter: int = 20, seed: int = 0) -> Tensor:
    """AutoAttack's "rand" version with ``steps`` iterations: APGD-CE, then APGD-DLR on what survives.

    ``torchattacks.AutoAttack(version="rand")`` keeps APGD at 10 steps; this builds the two attacks
    with ``steps`` and ``eot_iter`` as the standard for randomised defences asks.

    Args:
        model: the (randomised) predictor, ``(B, C, H, W)`` in ``[0, 1]`` -> scores ``(B, K)``.
        images: ``(B, C, H, W)`` in ``[0, 1]``; labels: ``(B,)``.
        eps: L-inf radius.

    Returns:
        ``(B, C, H, W)`` adversarial images within ``eps``.
    """
    import torchattacks

    steps, eot_iter = check_int("steps", steps), check_int("eot_iter", eot_iter)
    attacks = [torchattacks.APGD(model, eps=eps, steps=steps, loss=loss, eot_iter=eot_iter, n_restarts=1, seed=seed)
               for loss in ("ce", "dlr")]
    atk = torchattacks.MultiAttack(attacks)
    with torch.enable_grad():
        return atk(images, labels).detach()


def _part_autoattack(ctx: _Context) -> None:
    keep = _subset(ctx)[:ctx.cfg.autoattack_n]
    if not keep:
        return
    xs, ys = ctx.x[keep], ctx.y[keep]

    def work(i: int, s: int, e: int) -> dict[str, Any]:
        tag = f"autoattack:{i}"
        attacker = ctx.mi("ol", "paper", f"{tag}:attacker", samples=ctx.cfg.autoattack_mi_samples)
        with torch.random.fork_rng():
            torch.manual_seed(derive_seed(ctx.cfg.seed, tag))
            adv = autoattack_rand(attacker, xs[s:e], ys[s:e], eps=ctx.cfg.autoattack_eps,
                                  steps=ctx.cfg.autoattack_steps, eot_iter=ctx.cfg.autoattack_eot,
                                  seed=derive_seed(ctx.cfg.seed, tag) % 2**31)
        return {"indices": keep[s:e], **_judge(ctx, adv, ys[s:e], tag)}

    _run_chunks(ctx, f"autoattack:{eps_key(ctx.cfg.autoattack_eps)}", len(keep), ctx.cfg.autoattack_chunk_size,
                work, "AutoAttack-rand")


def _test_split(data_dir: str | os.PathLike[str], progress: bool) -> tuple[Tensor, Tensor]:
    """Every test image (uint8) and label, in test-split order."""
    x, y = load_tensor_dataset(open_image_dataset(data_dir, "test"), desc="decoding test split", progress=progress)
    return x, y.long()


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run_evidence(
    checkpoint: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    out_json: str | os.PathLike[str],
    *,
    config: EvidenceConfig | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or resume) the evidence protocol for one classifier checkpoint; return the results dict.

    The test images are the fixed ``n_test`` test images of seed ``config.seed`` (the same for
    every checkpoint); the MI pool is ``pool_size`` training images outside the checkpoint's
    held-out split; ``lam`` is chosen on ``select_n`` of the held-out images.
    """
    cfg = config or EvidenceConfig()
    ckpt = Path(checkpoint)
    # a foreign or empty file is refused before any data is read; it is read once
    existing = _read_store(Path(out_json)) if Path(out_json).is_file() else None
    data = load_evaluation_data(ckpt, data_dir, n_test=cfg.n_test, pool_size=cfg.pool_size,
                                select_n=cfg.select_n, seed=cfg.seed, test_subset=cfg.test_subset,
                                calibration_n=cfg.calibration_n if "calibration" in cfg.parts else 0,
                                pool_source=cfg.pool_source, progress=progress)
    model = data["model"]
    header = {"config": cfg.to_dict(), "checkpoint_sha": _sha256(data["checkpoint_file"]),
              "checkpoint": str(checkpoint), "method": data["meta"].get("method"),
              "test_indices": data["test_indices"]}
    store = _Store(Path(out_json), header, attacker_part_names(cfg), existing)
    ctx = _Context.start(model, data["x"], data["y"], data["pool"], seed=cfg.seed, progress=progress, cfg=cfg,
                         store=store, lams={"paper": {"pl": PAPER_LAM, "ol": PAPER_LAM}})
    if _SELECTED_LAM_PARTS.intersection(cfg.parts) or "result" in store.data["parts"].get("lam_selection", {}):
        _part_lam_selection(ctx, data["held"])  # these parts report MI at the selected lam too
    runners: dict[str, Callable[[], None]] = {
        "calibration": lambda: _part_calibration(ctx, data["calibration"], lambda: _test_split(data_dir, progress)),
        "clean": lambda: _part_clean(ctx), "corruptions": lambda: _part_corruptions(ctx),
        "oblivious": lambda: _part_oblivious(ctx), "published": lambda: _part_published(ctx),
        "autoattack": lambda: _part_autoattack(ctx), **adaptive_runners(ctx),
    }
    for part in cfg.parts:
        if part in runners:
            runners[part]()
    return store.data
