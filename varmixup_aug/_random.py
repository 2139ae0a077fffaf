"""Random draws through ``torch.Generator`` only, and per-worker / per-rank streams."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import torch
from torch import Tensor

from ._checks import check_int, check_seed_and_generator
from ._errors import VarMixupError

__all__ = ["sample_beta", "sample_gamma", "distributed_rank", "derive_seed", "mix_seed", "StreamSource"]


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


def derive_seed(*parts: Any) -> int:
    """:func:`mix_seed` below ``2**62``: a seed for ``torch.Generator().manual_seed`` or an ``MIPredictor``."""
    return mix_seed(*parts) % 2**62


_MAX_WORKERS = 1024  # DataLoader workers per StreamSource that get an automatic epoch counter


class StreamSource:
    """Gives each process its own ``torch.Generator``, reproducible from one seed.

    - ``seed=int`` (or ``generator``): every stream is derived from ``(seed, rank, worker id, epoch)``
      with SHA-256, never from torch's global RNG, so ``seed`` alone reproduces a run whatever the
      number of workers (persistent or not) and ranks, and whether or not torch is seeded:

      * the main process (``num_workers=0``) keeps one stream for its lifetime, which moves on
        from batch to batch and from epoch to epoch;
      * DataLoader worker ``k`` counts, in a small shared-memory array made at construction, how many
        worker processes with id ``k`` this object has had: non-persistent workers are new processes
        every epoch, so epoch ``e``'s worker ``k`` draws stream ``(seed, rank, k, e)``; a persistent
        worker is one process whose stream moves on across epochs. No two epochs repeat draws.
      * ``set_epoch(e)`` (optional, like ``DistributedSampler.set_epoch``) keys every stream by ``e``
        instead: worker ``k`` of epoch ``e`` draws ``(seed, rank, k, "epoch", e)`` wherever the run
        stopped before, so a run resumed at epoch ``e`` draws what the full run drew. Call it before
        ``iter(loader)`` (persistent workers read the shared value at every batch).

    - ``seed=None`` and no generator: draws come from torch's global RNG, which torch seeds
      differently in every DataLoader worker. On a distributed rank ``r > 0`` each call takes one
      63-bit draw from the global RNG and mixes ``r`` into it, so ranks whose global RNG is seeded
      identically (as most DDP scripts do) still draw different streams.
    - ``generator=torch.Generator``: used as given in the process that owns it. In a DataLoader
      worker a copy would repeat the same stream in every worker, so the worker derives its own
      stream from the generator's ``initial_seed()`` as with ``seed``.

    Generators are not pickled; each process builds its own on first use. The rank is carried in
    the pickle for spawned workers, which do not inherit the process group.
    """

    def __init__(self, seed: int | None = None, generator: torch.Generator | None = None) -> None:
        self.seed = check_seed_and_generator(seed, generator)
        self._given = generator
        self._base = generator.initial_seed() if generator is not None else self.seed
        self._owner_pid = os.getpid()
        self._cached: tuple[Any, torch.Generator] | None = None
        self._start: tuple[int, int] | None = None  # (pid, how many processes of this worker id came before)
        # [0]: 1 once set_epoch was called, [1]: that epoch, [2 + k]: processes started as worker k so far.
        # Shared memory, so that forked, spawned and persistent workers all see the main process's writes.
        self._shared = (torch.zeros(2 + _MAX_WORKERS, dtype=torch.int64).share_memory_()
                        if self._base is not None else None)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_given"] = None
        state["_cached"] = None
        state["_start"] = None
        # Spawned workers do not inherit the process group: carry the owner's rank over.
        state["_pickled_rank"] = distributed_rank()
        return state

    def set_epoch(self, epoch: int) -> None:
        """Key every seeded stream by ``epoch`` (see the class docstring); no effect with ``seed=None``."""
        epoch = check_int("epoch", epoch, minimum=0)
        if self._shared is not None:
            self._shared[1] = epoch
            self._shared[0] = 1

    def _rank(self) -> int:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank()
        pickled = self.__dict__.get("_pickled_rank")
        return pickled if pickled is not None else distributed_rank()

    def _worker_start(self, worker_id: int) -> int:
        """How many processes ran as worker ``worker_id`` before this one (claimed once per process)."""
        pid = os.getpid()
        if self._start is None or self._start[0] != pid:
            if worker_id >= _MAX_WORKERS:
                raise VarMixupError(f"seeded streams support at most {_MAX_WORKERS} DataLoader workers, "
                                    f"got worker id {worker_id}")
            assert self._shared is not None
            slot = 2 + worker_id
            count = int(self._shared[slot])
            self._shared[slot] = count + 1  # only worker ``worker_id`` of the current epoch writes this slot
            self._start = (pid, count)
        return self._start[1]

    def get(self) -> torch.Generator | None:
        """The generator for the current process, or None for torch's global RNG."""
        info = torch.utils.data.get_worker_info()
        if self._base is None:
            rank = self._rank()
            if rank == 0:
                return None
            drawn = int(torch.randint(0, 2**62, (1,)).item())  # follows torch's global seeding
            return torch.Generator().manual_seed(mix_seed(drawn, rank))
        if info is None and self._given is not None and os.getpid() == self._owner_pid:
            return self._given
        assert self._shared is not None
        rank = self._rank()
        epoch_set, epoch = self._shared[:2].tolist()
        worker = "main" if info is None else f"worker{info.id}"
        if epoch_set:
            when: tuple[Any, ...] = ("epoch", epoch)
        else:
            when = ("start", self._worker_start(info.id)) if info is not None else ("start", 0)
        key = (os.getpid(), rank, worker, when)
        if self._cached is None or self._cached[0] != key:
            g = torch.Generator().manual_seed(mix_seed(self._base, rank, worker, *when))
            self._cached = (key, g)
        return self._cached[1]
