"""seed alone reproduces a run with real DataLoaders (0 or 2 workers, persistent or not) without seeding torch,
no two epochs repeat draws, set_epoch keys the streams by epoch, and seed=None ranks differ."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from varmixup_aug import VarMixup, VarMixupCollate


def _data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.rand(16, 3, 4, 4, generator=g), torch.arange(16) % 4)


def _run(workers: int, persistent: bool, epochs: int = 3, torch_seed: int = 0, set_epoch: bool = False,
         start: int = 0) -> list[list[torch.Tensor]]:
    """Targets of every batch of every epoch, with a fresh collate as a new run would build it."""
    collate = VarMixupCollate(None, num_classes=4, space="input", seed=7)
    loader = DataLoader(_data(), batch_size=4, shuffle=False, num_workers=workers, collate_fn=collate,
                        persistent_workers=persistent)
    torch.manual_seed(torch_seed)  # the user's own seeding must not matter
    out = []
    for epoch in range(start, start + epochs):
        if set_epoch:
            collate.set_epoch(epoch)
        out.append([t for _, t in loader])
    return out


@pytest.mark.parametrize(("workers", "persistent"), [(0, False), (2, False), (2, True)],
                         ids=["main", "workers", "persistent"])
def test_seed_alone_reproduces_and_epochs_differ(workers, persistent) -> None:
    a = _run(workers, persistent, torch_seed=0)
    b = _run(workers, persistent, torch_seed=123)
    for ea, eb in zip(a, b):
        assert all(torch.equal(x, y) for x, y in zip(ea, eb))
    flat = [torch.cat(e) for e in a]
    for i in range(len(flat)):
        for j in range(i):
            assert not torch.equal(flat[i], flat[j]), (i, j)


@pytest.mark.parametrize(("workers", "persistent"), [(0, False), (2, False), (2, True)],
                         ids=["main", "workers", "persistent"])
def test_set_epoch_keys_streams_by_epoch(workers, persistent) -> None:
    full = _run(workers, persistent, epochs=3, set_epoch=True)
    resumed = _run(workers, persistent, epochs=1, set_epoch=True, start=2, torch_seed=5)
    assert all(torch.equal(x, y) for x, y in zip(full[2], resumed[0]))  # resuming at epoch 2 repeats it
    assert not torch.equal(torch.cat(full[0]), torch.cat(full[1]))


def test_seed_none_ranks_differ_when_torch_is_seeded_alike(monkeypatch) -> None:
    x, y = torch.rand(8, 3, 4, 4), torch.arange(8) % 4
    drawn = {}
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        torch.manual_seed(0)
        mixer = VarMixup(None, num_classes=4, space="input")
        drawn[rank] = mixer(x, y)[1]
        torch.manual_seed(0)
        assert torch.equal(VarMixup(None, num_classes=4, space="input")(x, y)[1], drawn[rank])  # follows torch
    assert not torch.equal(drawn["0"], drawn["1"])
