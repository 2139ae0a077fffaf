"""Random draws through ``torch.Generator`` only, and per-worker / per-rank streams."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import torch
from torch import Tensor

from ._checks import check_seed_and_generator
from ._errors import VarMixupError

__all__ = ["sample_beta", "sample_gamma", "distributed_rank", "mix_seed", "StreamSource"]


def sample_gamma(concentration: float, n: int, generator: torch.Generator | None = None) -> Tensor:
    """``n`` draws of Gamma(concentration, 1) in float64 on the generator's device.

    Marsaglia and Tsang (2000), with the ``U**(1/a)`` boost for ``a < 1``. Unlike
    ``torch.distributions.Gamma`` it takes a ``torch.Generator``.
    """
    device = generator.device if generator is not None else torch.device("cpu")
    a = float(concentration)
    boost = a < 1.0
    d = (a + 1.0 if boost else a) - 1.0 / 3.0
    c = 1.0 / (9.0 * d) ** 0.5
    out = torch.empty(n, dtype=torch.float64, device=device)
    todo = torch.arange(n, device=device)
    while todo.numel():
        m = todo.numel()
        x = torch.randn(m, dtype=torch.float64, device=device, generator=generator)
        u = torch.rand(m, dtype=torch.float64, device=device, generator=generator)
        v = (1.0 + c * x) ** 3
        ok = (v > 0) & (torch.log(u.clamp_min(1e-300)) < 0.5 * x * x + d - d * v + d * torch.log(v.clamp_min(1e-300)))
        out[todo[ok]] = d * v[ok]
        todo = todo[~ok]
    if boost:
        u = torch.rand(n, dtype=torch.float64, device=device, generator=generator)
        out = out * u.clamp_min(1e-300) ** (1.0 / a)
    return out


def sample_beta(alpha: float, n: int, generator: torch.Generator | None = None) -> Tensor:
    """``n`` draws of Beta(alpha, alpha) as float32, through ``generator``."""
    if not alpha > 0:
        raise VarMixupError(f"alpha must be > 0, got {alpha}")
    g1 = sample_gamma(alpha, n, generator)
    g2 = sample_gamma(alpha, n, generator)
    total = g1 + g2
    # Both gammas can underflow to 0 for tiny alpha; Beta is then 0 or 1 with equal odds.
    lam = torch.where(total > 0, g1 / total.clamp_min(1e-300), (g1 >= g2).double())
    return lam.float()


def distributed_rank() -> int:
    """This process's rank: from ``torch.distributed`` when initialised, else ``$RANK``, else 0."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return int(os.environ.get("RANK", "0"))


def mix_seed(*parts: Any) -> int:
    """A 63-bit seed derived from ``parts`` (a seed and names), the same in every process and run."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


_mix_seed = mix_seed  # the former private name, still imported by code written against it


class StreamSource:
    """Gives each process its own ``torch.Generator``, reproducible from one seed.

    - ``seed=None`` and no generator: draws come from torch's global RNG, which torch
      already seeds differently in every DataLoader worker.
    - ``seed=int``: the stream is derived from ``(seed, rank, worker seed)``. The worker seed
      changes with every epoch's workers and is reproducible when the main process is
      seeded, so workers, ranks and epochs never share a stream.
    - ``generator=torch.Generator``: used as given in the process that owns it. In a
      DataLoader worker a copy would repeat the same stream in every worker, so the
      worker derives its own stream from the generator's ``initial_seed()`` instead.

    Generators are not pickled; each process builds its own on first use.
    """

    def __init__(self, seed: int | None = None, generator: torch.Generator | None = None) -> None:
        check_seed_and_generator(seed, generator)
        self.seed = seed
        self._given = generator
        self._base = generator.initial_seed() if generator is not None else seed
        self._owner_pid = os.getpid()
        self._cached: tuple[Any, torch.Generator] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_given"] = None
        state["_cached"] = None
        # Spawned workers do not inherit the process group: carry the owner's rank over.
        state["_pickled_rank"] = distributed_rank()
        return state

    def _rank(self) -> int:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank()
        pickled = self.__dict__.get("_pickled_rank")
        return pickled if pickled is not None else distributed_rank()

    def get(self) -> torch.Generator | None:
        """The generator for the current process, or None for torch's global RNG."""
        if self._base is None:
            return None
        info = torch.utils.data.get_worker_info()
        if info is None and self._given is not None and os.getpid() == self._owner_pid:
            return self._given
        rank = self._rank()
        key = (os.getpid(), info.seed if info is not None else None, rank)
        if self._cached is None or self._cached[0] != key:
            worker_part = info.seed if info is not None else "main"
            g = torch.Generator().manual_seed(mix_seed(self._base, rank, worker_part))
            self._cached = (key, g)
        return self._cached[1]
