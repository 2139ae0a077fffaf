"""Helpers the benchmark scripts share: timings (medians, interleaved rounds) and the CIFAR ResNet-18.

Imported by its siblings as ``from _common import ...``: a script run as ``python benchmarks/<name>.py`` has
this folder on its import path.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch
from torch import nn
from torch.utils import benchmark
from torch.utils.data import Dataset, default_collate


def median_time(fn: Callable[[], Any], *, min_run_time: float, warmup: int = 2) -> float:
    """Median seconds per call of ``fn`` (``torch.utils.benchmark``), after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median


def interleaved(contenders: dict[str, Callable[[], float]], rounds: int) -> dict[str, Any]:
    """Run each contender once per round, in turn, so that drift of a shared machine hits all alike.

    Each contender returns the seconds it measured (its own unit of work). Returns per contender the
    median over rounds, and per contender after the first, the median over rounds of its ratio to the
    first measured in the same round.
    """
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            times[name].append(run())
    first = next(iter(contenders))
    out: dict[str, Any] = {f"{name}_s": statistics.median(t) for name, t in times.items()}
    for name in list(contenders)[1:]:
        out[f"ratio_{name}"] = statistics.median(t / f for t, f in zip(times[name], times[first]))
    out["rounds"] = rounds
    out["per_round_s"] = times
    return out


def timed(fn: Callable[[], Any], repeats: int) -> Callable[[], float]:
    """``fn`` run ``repeats`` times as one contender of :func:`interleaved`: returns seconds per call."""

    def run() -> float:
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - start) / repeats

    return run


def cifar_resnet18(num_classes: int = 10) -> nn.Module:
    """torchvision's ResNet-18 with the CIFAR stem: a 3x3 stride-1 first conv and no max-pool."""
    from torchvision.models import resnet18

    model = resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


class Items(Dataset):
    """A list of ready items as a map-style dataset."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        return self.items[i]


class TorchvisionMixupCollate:
    """torchvision's ``v2.MixUp`` (alpha 1, 10 classes) after ``default_collate``: the baseline collate."""

    def __init__(self) -> None:
        from torchvision.transforms import v2

        self.mixup = v2.MixUp(alpha=1.0, num_classes=10)

    def __call__(self, batch: list[Any]) -> Any:
        return self.mixup(*default_collate(batch))
