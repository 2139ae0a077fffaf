"""Eval mode reaches every module of a VAE, wherever a wrapper keeps it (attribute, dict, list, tuple, bound
method, closure): batch-norm statistics stay as they were and one sample's image does not depend on its batch."""

from __future__ import annotations

import functools
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor, nn

from varmixup_aug import MixupParams, varmixup
from varmixup_aug._vae import eval_mode, find_modules


class BatchNormVAE(nn.Module):
    """A linear VAE for 3x4x4 images with a BatchNorm1d in the encoder (batch statistics in train mode)."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.enc, self.norm, self.dec = nn.Linear(48, 8), nn.BatchNorm1d(8), nn.Linear(4, 48)
        with torch.no_grad():
            for p in (*self.enc.parameters(), *self.dec.parameters()):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            self.norm.running_mean.fill_(0.1)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.norm(self.enc(x.flatten(1))).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.dec(z)).view(-1, 3, 4, 4)


class InDict:
    def __init__(self, vae: BatchNormVAE) -> None:
        self.parts = {"vae": vae}

    def encode(self, x):
        return self.parts["vae"].encode(x)

    def decode(self, z):
        return self.parts["vae"].decode(z)


class InList:
    def __init__(self, vae: BatchNormVAE) -> None:
        self.parts = [None, (vae,)]

    def encode(self, x):
        return self.parts[1][0].encode(x)

    def decode(self, z):
        return self.parts[1][0].decode(z)


def bound_methods(vae: BatchNormVAE) -> SimpleNamespace:
    return SimpleNamespace(encode=vae.encode, decode=vae.decode)


def closures(vae: BatchNormVAE) -> SimpleNamespace:
    return SimpleNamespace(encode=lambda x: vae.encode(x), decode=lambda z: vae.decode(z))


def partials(vae: BatchNormVAE) -> SimpleNamespace:
    return SimpleNamespace(encode=functools.partial(BatchNormVAE.encode, vae),
                           decode=functools.partial(BatchNormVAE.decode, vae))


WRAPPERS = [InDict, InList, bound_methods, closures, partials]


def _reconstruct(vae, x: Tensor) -> Tensor:
    """Every sample mixed with weight 1 on itself: ``D(mu_i)``, through the VAE's encoder and decoder."""
    b = x.shape[0]
    params = MixupParams(lam=torch.ones(b), index=torch.arange(b), applied=torch.ones(b, dtype=torch.bool),
                         noise_seed=0)
    return varmixup(x, torch.zeros(b, dtype=torch.long), vae, num_classes=2, posterior="mean", params=params)[0]


@pytest.mark.parametrize("wrap", WRAPPERS, ids=lambda w: w.__name__)
def test_wrapped_module_runs_in_eval_mode(wrap) -> None:
    vae = BatchNormVAE().train()
    stats = vae.norm.running_mean.clone(), vae.norm.running_var.clone()
    g = torch.Generator().manual_seed(1)
    x, others = torch.rand(4, 3, 4, 4, generator=g), torch.rand(3, 3, 4, 4, generator=g)
    wrapper = wrap(vae)
    first = _reconstruct(wrapper, x)
    alone = _reconstruct(wrapper, torch.cat([x[:1], others]))
    assert torch.equal(vae.norm.running_mean, stats[0]) and torch.equal(vae.norm.running_var, stats[1])
    assert torch.allclose(first[0], alone[0], atol=1e-6)  # sample 0 does not depend on the rest of its batch
    assert vae.training and vae.norm.training  # modes restored


def test_train_mode_would_change_both() -> None:
    """The control: the same VAE called in train mode updates its statistics and mixes its batch in."""
    vae = BatchNormVAE().train()
    g = torch.Generator().manual_seed(1)
    x, others = torch.rand(4, 3, 4, 4, generator=g), torch.rand(3, 3, 4, 4, generator=g)
    before = vae.norm.running_mean.clone()
    a = vae.decode(vae.encode(x)[0])
    b = vae.decode(vae.encode(torch.cat([x[:1], others]))[0])
    assert not torch.equal(vae.norm.running_mean, before) and not torch.allclose(a[0], b[0], atol=1e-4)


def test_find_modules_follows_attributes_containers_methods_and_closures() -> None:
    a, b, c, d = nn.Linear(1, 1), nn.Linear(1, 1), nn.Linear(1, 1), nn.Linear(1, 1)
    loose = torch.zeros(3)

    class Holder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.child = nn.Linear(1, 1)
            self.extra = {"kept": d}  # a plain dict on a module: not registered, still found

    holder = Holder()
    obj = SimpleNamespace(x={"a": a}, y=[(b,)], z=c.forward, f=lambda t: holder(t), w=loose, n=3, s="text",
                          long=[nn.Linear(1, 1)] + [0] * 300)
    found = find_modules(obj)
    assert set(found) == {"x.a", "y.0.0", "z.__self__", "f.holder", "f.holder.extra.kept"}
    assert found["x.a"] is a and found["f.holder.extra.kept"] is d
    assert "w" in find_modules(obj, tensors=True)
    assert find_modules(a) == {"": a}


def test_eval_mode_reaches_a_submodule_left_in_train_mode_under_an_eval_parent() -> None:
    vae = BatchNormVAE().eval()
    vae.norm.train()
    with eval_mode(InDict(vae)):
        assert not vae.norm.training
    assert vae.norm.training and not vae.training
