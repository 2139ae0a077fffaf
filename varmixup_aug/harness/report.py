"""The robustness report of a classifier: its settings, its parts, the markdown table, and a checkpoint's run.

Everything here takes a classifier that maps pixel-space images ``(B, C, H, W)`` in ``[0, 1]``
to logits ``(B, K)``; a model that needs input normalisation must do it inside (as
:class:`~varmixup_aug.harness.models.PreActResNet` does), so attacks and Mixup Inference act on pixels.
The parts come from :mod:`.calibration`, :mod:`.corruptions`, :mod:`.attacks` and :mod:`.lam_selection`.

Randomness: only the torch RNG and seeds. Albumentations seeds, the attacks' random starts and MI's
draws are derived from ``seed``, so a run repeats exactly under the same seed and batch order.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.data import Subset
from tqdm.auto import tqdm

from varmixup_aug import MIPredictor, VarMixupError
from varmixup_aug._checks import check_int, check_number, check_seed
from varmixup_aug._io import atomic_write_json, atomic_write_text
from varmixup_aug._random import derive_seed, mix_seed
from varmixup_aug._tensors import resolve_device, to_float_images
from .attacks import adversarial_examples
from .calibration import calibration_bins, expected_calibration_error, reliability_diagram
from .classifier_checkpoint import checkpoint_file, load_classifier, read_classifier_metadata
from .corruptions import CORRUPTIONS, SEVERITIES, corrupt
from .data import dataset_labels, load_tensor_dataset, open_image_dataset
from .markdown import render_table
from .eval_context import EvalContext
from .fast_training import batch_crop_flip
from .lam_selection import select_mi_lam
from .scoring import (
    accuracy_from_logits,
    eps_key,
    fixed_subset,
    stratified_subset,
    mi_correct,
)

__all__ = ["POOL_SOURCES", "EvalConfig", "evaluate_checkpoint", "evaluate_robustness", "load_evaluation_data",
           "markdown_table", "reference_pool_augment"]

_DEFAULT_EPS = (2 / 255, 4 / 255, 8 / 255)
TEST_SUBSETS = ("random", "stratified")
POOL_SOURCES = ("train", "test-augmented")


@dataclass
class EvalConfig:
    """Settings of :func:`evaluate_robustness`; the defaults are the issue's protocol.

    Cost: the adaptive PGD runs ``pgd_steps * eot_iter`` forward and backward passes of
    ``attack_mi_samples`` mixes per image, per eps and mode (10 * 5 * 30 = 1500 with the defaults);
    use ``adaptive_limit`` and ``attack_mi_samples`` to bound it on a CPU.

    Attributes:
        eps: L-inf radii of FGSM and PGD (pixel units of ``[0, 1]``).
        pgd_steps: PGD / EOT-PGD steps; the step size is ``eps / 4``.
        eot_iter: EOT samples per step of the adaptive attack through MI.
        mi_samples: MI rounds per input when measuring accuracy.
        attack_mi_samples: MI rounds per forward pass inside the adaptive attack (``None``: ``mi_samples``).
        mi_lam_pl, mi_lam_ol: MI-PL's and MI-OL's ``lam`` (see :func:`select_mi_lam`).
        corruptions: names from :data:`CORRUPTIONS`.
        severities: subset of ``(1, 2, 3)``.
        ece_bins: bins of the ECE and the reliability diagram.
        batch_size: images per call of the plain model and its attacks.
        mi_batch_size: inputs per MI call (each makes ``mi_samples`` mixes).
        adaptive_batch_size: inputs per adaptive-attack call (gradients through all the mixes).
        adaptive_limit: attack only a fixed random subset (from ``seed``) of this many images adaptively
            (``None``: all); the plain and MI numbers of the other parts still use every image.
        adaptive_modes: the MI modes attacked adaptively, a non-empty subset of ``("pl", "ol")``.
        mi_chunk_size: most mixes per model call inside MI.
        seed: seed of corruptions, attacks and MI draws.
        run_corruptions, run_fgsm, run_pgd, run_adaptive, run_mi: switch parts off.
    """

    eps: tuple[float, ...] = _DEFAULT_EPS
    pgd_steps: int = 10
    eot_iter: int = 5
    mi_samples: int = 30
    attack_mi_samples: int | None = None
    mi_lam_pl: float = 0.5
    mi_lam_ol: float = 0.5
    corruptions: tuple[str, ...] = CORRUPTIONS
    severities: tuple[int, ...] = SEVERITIES
    ece_bins: int = 15
    batch_size: int = 250
    mi_batch_size: int = 50
    adaptive_batch_size: int = 32
    adaptive_limit: int | None = None
    adaptive_modes: tuple[Literal["pl", "ol"], ...] = ("pl", "ol")
    mi_chunk_size: int = 1024
    seed: int = 0
    run_corruptions: bool = True
    run_fgsm: bool = True
    run_pgd: bool = True
    run_adaptive: bool = True
    run_mi: bool = True

    def __post_init__(self) -> None:
        self.eps = tuple(float(e) for e in self.eps)
        if not self.eps or any(not math.isfinite(e) or e < 0 or e > 1 for e in self.eps):
            raise VarMixupError(f"eps must be a non-empty list of radii in [0, 1] (e.g. 8/255), got {self.eps!r}")
        self.corruptions = tuple(self.corruptions)
        unknown = [c for c in self.corruptions if c not in CORRUPTIONS]
        if unknown:
            raise VarMixupError(f"corruptions {unknown} are unknown; choose from {list(CORRUPTIONS)}")
        self.severities = tuple(self.severities)
        if not self.severities or any(s not in SEVERITIES for s in self.severities):
            raise VarMixupError(f"severities must be a non-empty subset of {SEVERITIES}, got {self.severities!r}")
        for name in ("pgd_steps", "eot_iter", "mi_samples", "ece_bins", "batch_size", "mi_batch_size",
                     "adaptive_batch_size", "mi_chunk_size"):
            check_int(name, getattr(self, name))
        for name in ("attack_mi_samples", "adaptive_limit"):
            check_int(name, getattr(self, name), allow_none=True, requirement="be an int >= 1")
        self.adaptive_modes = tuple(self.adaptive_modes)
        if not self.adaptive_modes or any(m not in ("pl", "ol") for m in self.adaptive_modes) \
                or len(set(self.adaptive_modes)) != len(self.adaptive_modes):
            raise VarMixupError(
                "adaptive_modes must be a non-empty subset of ('pl', 'ol') without repeats, "
                f"got {self.adaptive_modes!r}"
            )
        for name in ("mi_lam_pl", "mi_lam_ol"):
            check_number(name, getattr(self, name), low=0, high=1, low_open=True)
        check_seed(self.seed, allow_none=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["eps_keys"] = [eps_key(e) for e in self.eps]
        d["step_size_rule"] = "eps / 4"
        d["attack_mi_samples"] = self.attack_mi_samples or self.mi_samples
        return d


def evaluate_robustness(model: nn.Module, images: Tensor, labels: Tensor, pool: tuple[Tensor, Tensor] | None, *,
                        config: EvalConfig | None = None, out_dir: str | os.PathLike[str] | None = None,
                        name: str = "model", progress: bool = True) -> dict[str, Any]:
    """Clean accuracy, ECE, corruption accuracy and FGSM/PGD accuracy with plain inference, MI-PL and MI-OL.

    Parts (accuracies are fractions of the ``N`` images; ``none``, ``mi_pl``, ``mi_ol``: plain inference and MI):
    ``clean`` (with ECE and reliability bins), ``corruptions`` (per corruption and severity, seeded),
    ``fgsm`` and ``pgd_oblivious`` (attacks on the plain model, per eps), and ``fgsm_adaptive`` and
    ``pgd_adaptive`` (EOT attacks through MI itself, per eps and mode; see :func:`_adaptive_part`) on
    ``adaptive_n`` images, all or a fixed subset (``adaptive_limit``), whose plain clean accuracy is
    ``adaptive_clean``; with a subset the oblivious parts also hold ``none_on_adaptive_subset``.

    Args:
        model: classifier on pixel-space inputs ``(B, C, H, W)`` in ``[0, 1]`` -> logits ``(B, K)``.
        images, labels: ``(N, C, H, W)`` test images, float in ``[0, 1]`` or ``uint8``, and ``(N,)``.
        pool: ``(images (P, C, H, W), labels (P,))`` clean *training* images for MI; ``None`` skips MI.
        config: :class:`EvalConfig` (default: the issue's protocol).
        out_dir: if given, writes ``reliability.png`` there; name: the figure title and markdown row.
        progress: tqdm bars.

    Returns:
        A JSON-serialisable dict with the parts above plus ``settings``, ``n_test`` and ``timing_s``.
    """
    cfg = config or EvalConfig()
    run = _Run.start(model, images, labels, pool, seed=cfg.seed, progress=progress, cfg=cfg)
    result: dict[str, Any] = {"name": name, "n_test": int(run.x.shape[0]), "num_classes": run.num_classes,
                              "settings": cfg.to_dict()}
    timing: dict[str, float] = {}
    with _timed(timing, "clean"):
        result["clean"], logits = _clean_part(run, out_dir, name)
    if cfg.run_corruptions:
        with _timed(timing, "corruptions"):
            result["corruptions"] = _corruptions_part(run)
    # The adaptive attack's images (all, or a fixed subset), also scored by the oblivious attacks.
    keep = fixed_subset(run.x.shape[0], cfg.adaptive_limit, cfg.seed, "adaptive-subset")
    for attack, key, on in (("fgsm", "fgsm", cfg.run_fgsm), ("pgd", "pgd_oblivious", cfg.run_pgd)):
        if on:
            with _timed(timing, key):
                result[key] = _oblivious_part(run, attack, key, keep)
    if cfg.run_adaptive and run.with_mi:
        result["adaptive_n"] = len(keep)
        result["adaptive_clean"] = {"none": accuracy_from_logits(logits[keep], run.y[keep])}
        for key, attack, on in (("fgsm_adaptive", "eotfgsm", cfg.run_fgsm), ("pgd_adaptive", "eotpgd", cfg.run_pgd)):
            if on:
                with _timed(timing, key):
                    result[key] = _adaptive_part(run, attack, key, keep)
    result["timing_s"] = {k: round(v, 2) for k, v in timing.items()}
    return result


@contextlib.contextmanager
def _timed(timing: dict[str, float], key: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timing[key] = time.perf_counter() - start


@dataclass
class _Run(EvalContext):
    """One ``evaluate`` run: the shared context and its :class:`EvalConfig`."""

    cfg: EvalConfig

    @property
    def with_mi(self) -> bool:
        return self.cfg.run_mi and self.pool is not None

    def mi(self, mode: Literal["pl", "ol"], part: str, samples: int | None = None) -> MIPredictor:
        """An MI predictor of ``mode`` with draws seeded by ``part``."""
        lam = self.cfg.mi_lam_pl if mode == "pl" else self.cfg.mi_lam_ol
        return self.make_mi(mode, part, mode, lam=lam, num_samples=samples or self.cfg.mi_samples,
                            chunk_size=self.cfg.mi_chunk_size)

    def plain_logits(self, images: Tensor) -> Tensor:
        return self.logits(images, self.cfg.batch_size)

    def scores(self, adv: Tensor, part: str, logits: Tensor | None = None) -> dict[str, float]:
        """Accuracy on ``adv`` (the first images) of the plain model and, if MI runs, of MI-PL and MI-OL."""
        y = self.y[: adv.shape[0]]
        out = {"none": accuracy_from_logits(self.plain_logits(adv) if logits is None else logits, y)}
        if self.with_mi:
            for mode in ("pl", "ol"):
                correct = mi_correct(self.mi(mode, part), adv, y, self.cfg.mi_batch_size)
                out[f"mi_{mode}"] = float(correct.double().mean())
        return out


def _clean_part(run: _Run, out_dir: str | os.PathLike[str] | None, name: str) -> tuple[dict[str, Any], Tensor]:
    """Clean accuracy, calibration (ECE, reliability bins and diagram) and MI's clean accuracy."""
    logits = run.plain_logits(run.x)
    conf, pred = logits.softmax(1).max(1)
    correct = pred == run.y
    bins = calibration_bins(conf, correct, n_bins=run.cfg.ece_bins)
    clean = run.scores(run.x, "clean", logits)
    part: dict[str, Any] = {
        "accuracy": clean["none"],
        "ece": expected_calibration_error(conf, correct, n_bins=run.cfg.ece_bins),
        "mean_confidence": float(conf.double().mean()),
        "mi_pl_accuracy": clean.get("mi_pl"),
        "mi_ol_accuracy": clean.get("mi_ol"),
        "reliability": {k: [round(float(v), 6) for v in t] for k, t in bins.items()},
    }
    if out_dir is not None:
        png = reliability_diagram(conf, correct, Path(out_dir) / "reliability.png", n_bins=run.cfg.ece_bins,
                                  title=name)
        part["reliability_png"] = str(png)
    return part, logits


def _corruptions_part(run: _Run) -> dict[str, Any]:
    """Plain accuracy per corruption and severity, the mean over severities, and the overall mean."""
    cfg = run.cfg
    per: dict[str, dict[str, float]] = {}
    jobs = [(c, s) for c in cfg.corruptions for s in cfg.severities]
    for c, s in tqdm(jobs, desc="corruptions", unit="set", disable=not run.progress, leave=False):
        logits = run.plain_logits(corrupt(run.x, c, s, seed=cfg.seed))
        per.setdefault(c, {})[str(s)] = accuracy_from_logits(logits, run.y)
    for c in per:
        per[c]["mean"] = sum(per[c][str(s)] for s in cfg.severities) / len(cfg.severities)
    return {"accuracy": per, "mean": sum(v["mean"] for v in per.values()) / len(per),
            "severities": list(cfg.severities)}


def _oblivious_part(run: _Run, attack: str, key: str, keep: list[int]) -> dict[str, dict[str, float]]:
    """Per eps: images attacked against the plain model, then classified by it and by MI."""
    cfg, out = run.cfg, {}
    for eps in cfg.eps:
        adv = adversarial_examples(run.model, run.x, run.y, attack=attack, eps=eps, steps=cfg.pgd_steps,
                                   batch_size=cfg.batch_size, seed=mix_seed(cfg.seed, key, eps_key(eps)),
                                   progress=run.progress, desc=f"{key} {eps_key(eps)}")
        adv_logits = run.plain_logits(adv)
        entry = run.scores(adv, f"{key}:{eps_key(eps)}", adv_logits)
        if len(keep) < run.x.shape[0]:
            entry["none_on_adaptive_subset"] = accuracy_from_logits(adv_logits[keep], run.y[keep])
        out[eps_key(eps)] = entry
    return out


def _adaptive_part(run: _Run, attack: str, key: str, keep: list[int]) -> dict[str, dict[str, float]]:
    """Per eps and MI mode: EOT attacks through MI itself, scored by an MI with independent draws.

    EOT-PGD is ``torchattacks.EOTPGD`` with ``eot_iter`` samples per step (EOT-FGSM: one step of
    ``eps``) through the :class:`MIPredictor`, with fresh MI draws on every forward pass (as Tramer et
    al., 2020); ``none_on_mi_*_adv`` is the plain model on those images.
    """
    cfg, out = run.cfg, {}
    xa, ya = run.x[keep], run.y[keep]
    for eps in cfg.eps:
        entry: dict[str, float] = {}
        tag = f"{key}:{eps_key(eps)}"
        for mode in cfg.adaptive_modes:
            attacked = run.mi(mode, f"{tag}:attacker", cfg.attack_mi_samples)
            adv = adversarial_examples(attacked, xa, ya, attack=attack, eps=eps, steps=cfg.pgd_steps,
                                       eot_iter=cfg.eot_iter, batch_size=cfg.adaptive_batch_size,
                                       seed=mix_seed(cfg.seed, key, mode, eps_key(eps)),
                                       progress=run.progress, desc=f"{key} MI-{mode.upper()} {eps_key(eps)}")
            judge = run.mi(mode, f"{tag}:judge")
            entry[f"mi_{mode}"] = float(mi_correct(judge, adv, ya, cfg.mi_batch_size).double().mean())
            entry[f"none_on_mi_{mode}_adv"] = accuracy_from_logits(run.plain_logits(adv), ya)
        out[eps_key(eps)] = entry
    return out


# ---- markdown ---------------------------------------------------------------------------------


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * float(v):.1f}"


def markdown_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """A markdown table with one row per result of :func:`evaluate_robustness` (keyed by row name).

    Columns: clean accuracy, ECE, mean corruption accuracy, MI clean accuracy (PL / OL), and per
    eps: FGSM and oblivious PGD as ``none / MI-PL / MI-OL``, adaptive EOT-FGSM and EOT-PGD through MI
    as ``MI-PL / MI-OL`` (with ``(n=...)`` when it ran on a subset, see ``EvalConfig.adaptive_limit``).
    All numbers are percentages.
    """
    if not isinstance(results, Mapping) or not results:
        raise VarMixupError("results must be a non-empty mapping of name -> evaluate_robustness result")
    eps_keys: list[str] = []
    for r in results.values():
        for k in r.get("settings", {}).get("eps_keys", []):
            if k not in eps_keys:
                eps_keys.append(k)
    head = ["method", "clean", "ECE", "corr. mean", "MI clean PL / OL"]
    head += [f"FGSM {k} none / PL / OL" for k in eps_keys]
    head += [f"PGD obl. {k} none / PL / OL" for k in eps_keys]
    head += [f"FGSM adapt. {k} PL / OL" for k in eps_keys]
    head += [f"PGD adapt. {k} PL / OL" for k in eps_keys]
    rows = []
    for name, r in results.items():
        clean = r.get("clean", {})
        cells = [str(name), _pct(clean.get("accuracy")), _pct(clean.get("ece")),
                 _pct(r.get("corruptions", {}).get("mean")),
                 f"{_pct(clean.get('mi_pl_accuracy'))} / {_pct(clean.get('mi_ol_accuracy'))}"]
        for part in ("fgsm", "pgd_oblivious"):
            for k in eps_keys:
                e = r.get(part, {}).get(k, {})
                cells.append(" / ".join(_pct(e.get(m)) for m in ("none", "mi_pl", "mi_ol")))
        n_adapt, n_test = r.get("adaptive_n"), r.get("n_test")
        subset = f" (n={n_adapt})" if n_adapt is not None and n_test is not None and n_adapt < n_test else ""
        for part in ("fgsm_adaptive", "pgd_adaptive"):
            for k in eps_keys:
                e = r.get(part, {}).get(k, {})
                cells.append(f"{_pct(e.get('mi_pl'))} / {_pct(e.get('mi_ol'))}" + (subset if e else ""))
        rows.append(cells)
    return render_table(head, rows) + "\n"


# ---- from a checkpoint and a dataset ----------------------------------------------------------


def _decode(dataset: Any, indices: Sequence[int], desc: str, progress: bool) -> tuple[Tensor, Tensor]:
    x, y = load_tensor_dataset(Subset(dataset, list(indices)), desc=desc, progress=progress)
    return to_float_images(x), y.long()


def load_evaluation_data(checkpoint: str | os.PathLike[str], data_dir: str | os.PathLike[str], *,
                         n_test: int | None = 1000, pool_size: int = 5000, select_n: int | None = 1000, seed: int = 0,
                         test_subset: str = "random", calibration_n: int = 0, pool_source: str = "train",
                         device: str | torch.device = "auto", progress: bool = True) -> dict[str, Any]:
    """What evaluating one checkpoint reads: the model, a fixed test subset, the MI pool and held-out images.

    - ``x``, ``y``: ``n_test`` images (``None``: all) of the test split, a fixed subset drawn with
      ``seed`` (the same for every checkpoint), float in ``[0, 1]``. ``test_subset="random"``: a
      uniform draw, in test-split order; ``"stratified"``: the same number per class, in a seeded random
      order (:func:`~varmixup_aug.harness.scoring.stratified_subset`);
    - ``calibration``: ``calibration_n`` held-out training images (another fixed draw) for fitting a
      temperature, or ``None`` when ``calibration_n`` is 0 or the checkpoint stores no held-out split;
    - ``pool``: with ``pool_source="train"`` (the default), ``pool_size`` images of the train split outside
      the checkpoint's held-out split; with ``"test-augmented"``, the MI reference code's pool (github.com/
      P2333/Mixup-Inference): ``pool_size`` images of the *test* split (a fixed subset of seed ``seed``; all
      10,000 for CIFAR-10 with ``pool_size=10000``, as there, the evaluated images among them), each passed
      once through the training augmentation (:func:`reference_pool_augment`, seeded);
    - ``held``: ``select_n`` (``None``: all) of the held-out training images stored in the
      checkpoint, or ``None`` when it stores none or ``select_n`` is 0;
    - ``model`` (on ``device``), ``meta``, ``checkpoint_file``, ``test_indices``, ``test_size``, ``device``,
      ``pool_indices`` (into the pool's split) and ``pool_source``.
    """
    if pool_source not in POOL_SOURCES:
        raise VarMixupError(f"pool_source must be one of {POOL_SOURCES}, got {pool_source!r}")
    dev = resolve_device(device)
    path = checkpoint_file(checkpoint)
    meta = read_classifier_metadata(path)
    test_ds = open_image_dataset(data_dir, "test")
    train_ds = open_image_dataset(data_dir, "train")
    if test_subset not in TEST_SUBSETS:
        raise VarMixupError(f"test_subset must be one of {TEST_SUBSETS}, got {test_subset!r}")
    if test_subset == "stratified":
        test_idx = stratified_subset(dataset_labels(test_ds), n_test, seed, "test-subset")
    else:
        test_idx = fixed_subset(len(test_ds), n_test, seed, "test-subset")
    x, y = _decode(test_ds, test_idx, "decoding test", progress)
    held_idx = _held_out_indices(meta, len(train_ds), data_dir)
    if pool_source == "train":
        held_set = set(held_idx)
        candidates = [i for i in range(len(train_ds)) if i not in held_set]
        pool_idx = [candidates[i] for i in fixed_subset(len(candidates), pool_size, seed, "mi-pool")]
        pool = _decode(train_ds, pool_idx, "decoding MI pool", progress)
    else:
        pool_idx = fixed_subset(len(test_ds), pool_size, seed, "mi-pool-test")
        px, py = _decode(test_ds, pool_idx, "decoding MI pool (test split)", progress)
        pool = (reference_pool_augment(px, seed=derive_seed(seed, "mi-pool-augment")), py)
    held = None
    if held_idx and select_n != 0:
        sub = fixed_subset(len(held_idx), select_n, seed, "lam-subset")
        held = _decode(train_ds, [held_idx[i] for i in sub], "decoding held-out", progress)
    calibration = None
    if held_idx and calibration_n:
        sub = fixed_subset(len(held_idx), calibration_n, seed, "calibration-subset")
        calibration = _decode(train_ds, [held_idx[i] for i in sub], "decoding calibration images", progress)
    return {"model": load_classifier(path, device=dev), "meta": meta, "checkpoint_file": path, "x": x, "y": y,
            "pool": pool, "held": held, "calibration": calibration, "test_indices": test_idx,
            "test_size": len(test_ds), "device": dev, "pool_indices": pool_idx, "pool_source": pool_source}


def reference_pool_augment(images: Tensor, *, seed: int, padding: int = 4) -> Tensor:
    """Each image once through the training augmentation of the MI reference code, seeded.

    A horizontal flip with probability 1/2 and a random crop of the original size from the image padded
    with ``padding`` zero pixels on every side (torchvision's ``RandomHorizontalFlip`` and
    ``RandomCrop(32, padding=4)``, as ``cifar_transform`` in that code builds them), drawn from a generator
    seeded with ``seed``.

    Args:
        images: ``(N, C, H, H)`` square images (float or uint8). seed: the draws. padding: pixels of zeros.

    Returns:
        ``(N, C, H, H)``, the dtype of ``images``.

    Example:
        >>> import torch
        >>> x = torch.rand(4, 3, 8, 8)
        >>> reference_pool_augment(x, seed=0).shape
        torch.Size([4, 3, 8, 8])
    """
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[2] != images.shape[3]:
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise VarMixupError(f"images must be square images (N, C, H, H), got {got}")
    padding = check_int("padding", padding, minimum=0)
    g = torch.Generator().manual_seed(check_seed(seed, allow_none=False))
    flip = torch.rand(images.shape[0], generator=g) < 0.5
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    return batch_crop_flip(padded, torch.arange(images.shape[0]), size=images.shape[-1], flip=flip, generator=g)


def _held_out_indices(meta: dict[str, Any], train_size: int, data_dir: Any) -> list[int]:
    holdout = meta.get("holdout") or {}
    held = sorted(int(i) for i in holdout.get("indices", []))
    if held and holdout.get("train_size") != train_size:
        raise VarMixupError(
            f"checkpoint's held-out split indexes a train split of {holdout.get('train_size')} images, but data_dir "
            f"{data_dir} has {train_size}; pass the --data-dir the model was trained on"
        )
    return held


def evaluate_checkpoint(checkpoint: str | os.PathLike[str], data_dir: str | os.PathLike[str], *,
                        config: EvalConfig | None = None, limit_test: int | None = 1000, pool_size: int = 5000,
                        select_lam: bool = False, lam_grid: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
                        select_limit: int | None = 1000, select_mi_samples: int | None = None,
                        max_clean_drop: float = 0.05, select_eps: float = 2 / 255,
                        out_dir: str | os.PathLike[str] | None = None, name: str | None = None,
                        device: str | torch.device = "auto", progress: bool = True) -> dict[str, Any]:
    """The ``varmixup-aug evaluate`` command as a function: load, (select lam,) evaluate, write files.

    Data: the test images are a fixed subset of ``limit_test`` images of the test split, drawn
    with ``config.seed`` (the same for every checkpoint). The MI pool is ``pool_size`` images of the
    train split outside the checkpoint's held-out split. With ``select_lam``, MI's ``lam`` is chosen
    by :func:`select_mi_lam` on ``select_limit`` images of the held-out split stored in the
    checkpoint (training images never trained on), scored under oblivious PGD at ``select_eps``
    with ``config.pgd_steps`` steps, then used for the evaluation.

    Writes into ``out_dir`` (when given): ``eval.json`` (every number), ``reliability.png`` and
    ``row.md`` (the markdown table with this one row).

    Returns:
        The :func:`evaluate_robustness` dict plus ``checkpoint`` (metadata) and ``lam_selection``.
    """
    cfg = config or EvalConfig()
    check_int("limit_test", limit_test, allow_none=True, requirement="be an int >= 1")
    check_int("pool_size", pool_size)
    data = load_evaluation_data(checkpoint, data_dir, n_test=limit_test, pool_size=pool_size,
                                select_n=select_limit if select_lam else 0, seed=cfg.seed, device=device,
                                progress=progress)
    meta, name = data["meta"], name or str(data["meta"].get("method", "model"))
    selection = None
    if select_lam:
        if data["held"] is None:
            raise VarMixupError(
                f"select_lam needs the held-out split stored by train-classifier, but {checkpoint} has none; "
                "pass --mi-lam-pl/--mi-lam-ol instead"
            )
        held_x, held_y = data["held"]
        selection = select_mi_lam(data["model"], held_x, held_y, data["pool"], grid=lam_grid, eps=select_eps,
                                  max_clean_drop=max_clean_drop, num_samples=select_mi_samples or cfg.mi_samples,
                                  **_selection_settings(cfg), progress=progress)
        cfg = replace(cfg, mi_lam_pl=selection["pl"]["lam"], mi_lam_ol=selection["ol"]["lam"])
    result = evaluate_robustness(data["model"], data["x"], data["y"], data["pool"], config=cfg, out_dir=out_dir,
                                 name=name, progress=progress)
    result["checkpoint"] = {"path": str(checkpoint), **{k: meta.get(k) for k in _CHECKPOINT_FACTS}}
    result["data"] = {"data_dir": str(data_dir), "test_size": data["test_size"], "limit_test": limit_test,
                      "pool_size": int(data["pool"][0].shape[0]), "device": str(data["device"])}
    result["lam_selection"] = selection
    if out_dir is not None:
        _write_results(Path(out_dir), name, result)
    return result


_CHECKPOINT_FACTS = ("method", "epoch", "global_step", "finished", "model")


def _selection_settings(cfg: EvalConfig) -> dict[str, Any]:
    """What the lam selection shares with the evaluation: the PGD steps, batch sizes and seed."""
    return {"steps": cfg.pgd_steps, "batch_size": cfg.batch_size, "mi_batch_size": cfg.mi_batch_size,
            "seed": cfg.seed}


def _write_results(out: Path, name: str, result: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "eval.json", result)
    atomic_write_text(out / "row.md", markdown_table({name: result}))
