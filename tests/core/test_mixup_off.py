"""Mixing switched off: ``mixup_off_epoch`` (timm's ``--mixup-off-epoch``) and the ``mixup_enabled`` switch,
in the main process and in persistent DataLoader workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from varmixup_aug import Posterior, VarMixup, VarMixupCollate, VarMixupError, varmixup

K = 4


def _data(n: int = 32) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.rand(n, 3, 8, 8, generator=g), torch.arange(n) % K)


def _mixed(t: torch.Tensor) -> bool:
    """Whether any target row is a mix of two classes (smoothing aside)."""
    return bool(((t > 0.2).sum(1) > 1).any())


def _epoch_batches(loader: DataLoader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x, t) for x, t in loader]


class TestOffEpoch:
    def test_persistent_workers(self, tiny_vae, one_thread):
        data = _data()
        collate = VarMixupCollate(tiny_vae, num_classes=K, seed=0, mixup_off_epoch=2, label_smoothing=0.1)
        loader = DataLoader(data, batch_size=8, collate_fn=collate, num_workers=2, persistent_workers=True)
        for epoch in range(4):
            collate.set_epoch(epoch)
            batches = _epoch_batches(loader)
            assert len(batches) == 4
            for i, (x, t) in enumerate(batches):
                assert torch.allclose(t.sum(1), torch.ones(8), atol=1e-5)
                if epoch < 2:
                    assert _mixed(t)
                else:
                    # Unmixed: the images as given (not reconstructed), one-hot smoothed targets.
                    xs, ys = data.tensors[0][8 * i: 8 * i + 8], data.tensors[1][8 * i: 8 * i + 8]
                    assert torch.equal(x, xs)
                    expected = torch.nn.functional.one_hot(ys, K).float() * 0.9 + 0.1 / K
                    assert torch.allclose(t, expected)
        assert loader._iterator is not None and loader._iterator._persistent_workers  # the same workers throughout

    def test_without_set_epoch_mixing_stays_on(self):
        mixer = VarMixup(None, num_classes=K, space="input", seed=0, mixup_off_epoch=0)
        x, y = _data(8).tensors
        assert mixer.mixing and _mixed(mixer(x, y)[1])
        mixer.set_epoch(0)
        assert not mixer.mixing and not _mixed(mixer(x, y)[1])

    def test_mixer_in_a_loop(self):
        # timm style: mixup_fn(input, target) in the loop, set_epoch at the start of each epoch.
        mixer = VarMixup(None, num_classes=K, space="input", seed=0, mixup_off_epoch=1)
        x, y = _data(8).tensors
        mixer.set_epoch(0)
        assert _mixed(mixer(x, y)[1])
        mixer.set_epoch(1)
        out, t = mixer(x, y)
        assert torch.equal(out, x) and out is not x and torch.equal(t, torch.nn.functional.one_hot(y, K).float())
        assert mixer.mixup_off_epoch == 1

    @pytest.mark.parametrize("bad", [-1, True, "3", 1.5])
    def test_bad_values(self, bad):
        with pytest.raises(VarMixupError, match="mixup_off_epoch must be an int >= 0"):
            VarMixup(None, num_classes=K, space="input", mixup_off_epoch=bad)
        with pytest.raises(VarMixupError, match="mixup_off_epoch"):
            VarMixupCollate(None, num_classes=K, space="input", mixup_off_epoch=bad)

    def test_numpy_int_and_functional(self):
        assert VarMixup(None, num_classes=K, space="input", mixup_off_epoch=np.int64(3)).mixup_off_epoch == 3
        x, y = _data(4).tensors
        # The functional op has no epoch: the option is accepted and has no effect there.
        assert _mixed(varmixup(x, y, None, num_classes=K, space="input", mixup_off_epoch=0,
                               generator=torch.Generator().manual_seed(0))[1])

    def test_bad_epoch(self):
        mixer = VarMixup(None, num_classes=K, space="input", mixup_off_epoch=1)
        with pytest.raises(VarMixupError, match="epoch"):
            mixer.set_epoch(-1)
        with pytest.raises(VarMixupError, match="epoch"):
            mixer.set_epoch(True)


class TestMixupEnabled:
    def test_flip_reaches_persistent_workers(self, tiny_vae, one_thread):
        data = _data()
        collate = VarMixupCollate(tiny_vae, num_classes=K, seed=0)
        loader = DataLoader(data, batch_size=8, collate_fn=collate, num_workers=2, persistent_workers=True)
        assert collate.mixup_enabled is True
        assert all(_mixed(t) for _, t in _epoch_batches(loader))
        collate.mixup_enabled = False  # in the main process, between epochs
        for i, (x, t) in enumerate(_epoch_batches(loader)):
            assert torch.equal(x, data.tensors[0][8 * i: 8 * i + 8]) and not _mixed(t)
            assert torch.allclose(t.sum(1), torch.ones(8))
        collate.mixup_enabled = True
        assert all(_mixed(t) for _, t in _epoch_batches(loader))

    def test_switch_on_the_mixer(self):
        mixer = VarMixup(None, num_classes=K, space="input", seed=0)
        x, y = _data(8).tensors
        mixer.mixup_enabled = False
        assert mixer.mixup_enabled is False and not _mixed(mixer(x, y)[1])
        mixer.mixup_enabled = True
        assert _mixed(mixer(x, y)[1])

    def test_switch_wins_over_epoch(self):
        mixer = VarMixup(None, num_classes=K, space="input", seed=0, mixup_off_epoch=5)
        mixer.set_epoch(0)
        mixer.mixup_enabled = False
        assert not mixer.mixing

    @pytest.mark.parametrize("bad", [0, 1, "False", None])
    def test_bad_values(self, bad):
        mixer = VarMixup(None, num_classes=K, space="input")
        with pytest.raises(VarMixupError, match="mixup_enabled must be True or False"):
            mixer.mixup_enabled = bad
        collate = VarMixupCollate(None, num_classes=K, space="input")
        with pytest.raises(VarMixupError, match="mixup_enabled must be True or False"):
            collate.mixup_enabled = bad

    def test_cached_latents_decode_the_mean(self, tiny_vae):
        mu, logvar = torch.randn(4, 4), torch.zeros(4, 4)
        y = torch.arange(4)
        mixer = VarMixup(tiny_vae, num_classes=K, seed=0)  # posterior="sample"
        mixer.mixup_enabled = False
        x, t = mixer(Posterior(mu, logvar), y)
        with torch.no_grad():
            expected = tiny_vae.decode(mu)
        assert torch.allclose(x, expected, atol=1e-6)
        assert torch.equal(t, torch.eye(K))
