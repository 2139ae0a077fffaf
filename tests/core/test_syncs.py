"""Host-device syncs in the steady-state hot path, counted on the CPU.

The counter follows the data: the inputs of a call (images, posteriors, labels, dataset tensors) and the weights
and buffers of the VAE or model are *device data*, and so is everything computed from them. A sync is an op that
needs device data on the host: ``aten._local_scalar_dense`` (what ``.item()``, ``bool(t)``, ``int(t)`` and
``float(t)`` dispatch to), the data-dependent ops whose output size depends on values (``nonzero``,
``masked_select``, ``unique``, ...), ``Tensor.tolist``/``Tensor.numpy``, and the package's one explicit
device-to-host copy (``_validate.to_host``, whose result is host data). Excluded: what runs inside
``torch.nn.functional.one_hot``, whose value checks run only for CPU tensors (on CUDA it has none), as the issue
counted. So that the package takes its device paths, ``_validate.needs_sync`` is patched to say every tensor
lives on a device. torchvision's ``v2.MixUp`` and ``v2.CutMix``, measured with the same counter, make none.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _helpers import tiny_conv_vae
from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.data import DataLoader, TensorDataset

import varmixup_aug._mi as mi_module
import varmixup_aug._mixup as mixup_module
import varmixup_aug._validate as validate
from varmixup_aug import (
    MIPredictor,
    Posterior,
    VarMixup,
    VarMixupCollate,
    VarMixupError,
    VarMixupLoader,
    varmixup,
)

SYNC_OPS = {"aten._local_scalar_dense", "aten.nonzero", "aten.nonzero_static", "aten.argwhere",
            "aten.masked_select", "aten.unique", "aten._unique", "aten._unique2", "aten.unique_dim",
            "aten.unique_consecutive", "aten.repeat_interleave", "aten.item", "aten.is_nonzero", "aten.equal"}
HOST_METHODS = {"tolist", "numpy", "__array__"}


class SyncCounter:
    """Records the syncs of the code run inside ``with counter:`` (see the module docstring)."""

    def __init__(self, *seeds: Any) -> None:
        self.keep: list[Tensor] = []
        self.ids: set[int] = set()
        self.events: list[str] = []
        self.in_one_hot = 0
        for seed in seeds:
            self.taint(list(seed.parameters()) + list(seed.buffers()) if isinstance(seed, torch.nn.Module) else seed)

    def taint(self, out: Any) -> None:
        for t in tree_flatten(out)[0]:
            if isinstance(t, Tensor) and id(t) not in self.ids:
                self.ids.add(id(t))
                self.keep.append(t)  # kept alive, so that no other tensor reuses its id

    def tainted(self, args: Any) -> bool:
        return any(isinstance(t, Tensor) and id(t) in self.ids for t in tree_flatten(args)[0])

    def __enter__(self):
        self._modes = [_Functions(self), _Dispatch(self)]
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)


class _Dispatch(TorchDispatchMode):
    def __init__(self, counter: SyncCounter) -> None:
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        hit = self.counter.tainted((args, kwargs))
        if hit and str(func.overloadpacket) in SYNC_OPS and not self.counter.in_one_hot:
            self.counter.events.append(str(func.overloadpacket))
        out = func(*args, **kwargs)
        if hit:
            self.counter.taint(out)
        return out


class _Functions(TorchFunctionMode):
    def __init__(self, counter: SyncCounter) -> None:
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.one_hot:
            self.counter.in_one_hot += 1
            try:
                out = func(*args, **kwargs)
            finally:
                self.counter.in_one_hot -= 1
            if self.counter.tainted((args, kwargs)):
                self.counter.taint(out)
            return out
        hit = self.counter.tainted((args, kwargs))
        if hit and getattr(func, "__name__", "") in HOST_METHODS:
            self.counter.events.append(f"Tensor.{func.__name__}")
        out = func(*args, **kwargs)
        if hit:
            self.counter.taint(out)
        return out


@pytest.fixture
def on_device(monkeypatch):
    """Every tensor counts as device data for the package's checks; ``to_host`` copies are counted."""
    monkeypatch.setattr(validate, "needs_sync", lambda t: True)
    monkeypatch.setattr(mixup_module, "_FUNCTION_CHECKS", validate.CheckSchedule())
    monkeypatch.delenv(validate.DEBUG_ENV, raising=False)
    state: dict[str, SyncCounter | None] = {"counter": None}

    def to_host(t: Tensor) -> Tensor:
        counter = state["counter"]
        out = t.detach().clone()
        if counter is not None and counter.tainted(t):
            counter.events.append("to_host")
            counter.ids.discard(id(out))  # the copy is host data
        return out

    monkeypatch.setattr(mi_module, "to_host", to_host)
    return state


def _count(state: dict, fn, *seeds: Any) -> list[str]:
    counter = SyncCounter(*seeds)
    state["counter"] = counter
    with counter:
        fn()
    state["counter"] = None
    return counter.events


def _batch(b: int = 4, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, 8, 8, generator=g), torch.randint(0, 3, (b,), generator=g)


def test_the_counter_sees_what_syncs(on_device) -> None:
    """The control: the counter counts .item(), bool(), .tolist() and nonzero of device data, not of host data."""
    x, _ = _batch()
    host = torch.ones(3)

    def work() -> None:
        float(x.sum())
        bool((x > 0).all())
        (x * 2).tolist()
        torch.nonzero(x > 0.5)
        float(host.sum())  # host data: free

    assert _count(on_device, work, x) == ["aten._local_scalar_dense", "aten._local_scalar_dense", "Tensor.tolist",
                                          "aten.nonzero"]


def test_varmixup_on_images_syncs_on_the_first_batch_only(on_device) -> None:
    vae = tiny_conv_vae()
    mixer = VarMixup(vae, num_classes=3, seed=0)
    x, y = _batch()
    first = _count(on_device, lambda: mixer(x, y), x, y, vae)
    assert len(first) == 2  # the batch's values, then what encode and decode returned: one read each
    for seed in range(1, 4):
        x, y = _batch(seed=seed)
        assert _count(on_device, lambda x=x, y=y: mixer(x, y), x, y, vae) == []


def test_varmixup_on_cached_posteriors_and_the_function(on_device) -> None:
    vae = tiny_conv_vae()
    mixer = VarMixup(vae, num_classes=3, seed=0, residual=False)
    mu, logvar = torch.randn(4, 4), torch.randn(4, 4)
    y = torch.tensor([0, 1, 2, 1])
    mixer(Posterior(mu, logvar), y)
    assert _count(on_device, lambda: mixer(Posterior(mu, logvar), y), mu, logvar, y, vae) == []
    g = torch.Generator().manual_seed(0)
    varmixup(Posterior(mu, logvar), y, vae, num_classes=3, generator=g)
    assert _count(on_device, lambda: varmixup(Posterior(mu, logvar), y, vae, num_classes=3, generator=g),
                  mu, logvar, y, vae) == []


def test_collate_on_cached_posteriors_and_the_loader(on_device) -> None:
    vae = tiny_conv_vae()
    items = [(Posterior(torch.randn(4), torch.randn(4)), i % 3) for i in range(8)]
    collate = VarMixupCollate(vae, num_classes=3, seed=0)
    collate(items[:4])
    assert _count(on_device, lambda: collate(items[4:]), *(t for p, _ in items for t in p), vae) == []

    x, y = _batch(8)
    loader = VarMixupLoader(DataLoader(TensorDataset(x, y), batch_size=4), VarMixup(vae, num_classes=3, seed=0))
    batches = iter(loader)
    next(batches)
    assert _count(on_device, lambda: next(batches), x, y, vae) == []


def test_mi_predictor_makes_one_host_read_per_call(on_device) -> None:
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3)).eval()
    pool = (torch.rand(12, 3, 8, 8, generator=g), torch.arange(12) % 3)
    for mode in ("ol", "pl", "combined"):
        mi = MIPredictor(model, pool, num_classes=3, mode=mode, num_samples=4, seed=0)
        x, _ = _batch()
        mi(x)
        assert _count(on_device, lambda mi=mi, x=x: mi(x), x, model, mi) == ["to_host"], mode  # the predicted classes


def test_torchvision_mixup_and_cutmix_make_none(on_device) -> None:
    from torchvision.transforms import v2

    for op in (v2.MixUp(num_classes=3), v2.CutMix(num_classes=3)):
        x, y = _batch()
        op(x, y)
        assert _count(on_device, lambda op=op, x=x, y=y: op(x, y), x, y) == []


def test_value_checks_on_a_device_run_on_the_first_and_every_k_th_batch(on_device, monkeypatch) -> None:
    mixer = VarMixup(None, num_classes=3, space="input", seed=0)
    x, y = _batch()
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(VarMixupError, match="images contain NaN or Inf"):
        mixer(bad, y)  # batch 0 is checked
    for _ in range(validate.CHECK_EVERY - 1):
        mixer(bad, y)  # batches 1..k-1 are not: no sync, no error
    with pytest.raises(VarMixupError, match="images contain NaN or Inf"):
        mixer(bad, y)  # batch k
    monkeypatch.setenv(validate.DEBUG_ENV, "1")
    with pytest.raises(VarMixupError, match="images contain NaN or Inf"):
        mixer(bad, y)  # the debug switch checks every batch
