"""User VAEs that declare nothing (no image_size/channels) or return the wrong things: a VarMixupError
naming the VAE method, the shapes seen and the fix; Normal posteriors accepted; train mode not used."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from varmixup_aug import VarMixup, VarMixupError, varmixup


class PlainVAE(nn.Module):
    """A linear VAE for 3x4x4 images with no image_size/channels/input_range; returns what ``kind`` says."""

    def __init__(self, kind: str = "ok", dropout: float = 0.0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.enc = nn.Linear(48, 8)
        self.dec = nn.Linear(4, 48)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        self.drop = nn.Dropout(dropout)
        self.kind = kind

    def encode(self, x: Tensor):
        h = self.enc(self.drop(x.flatten(1)))
        mu, logvar = h.chunk(2, dim=1)
        if self.kind == "one_tensor":
            return h
        if self.kind == "normal":
            return torch.distributions.Normal(mu, (0.5 * logvar).exp())
        if self.kind == "shapes":
            return mu, logvar[:, :3]
        if self.kind == "triple":
            return mu, logvar, h
        return mu, logvar

    def decode(self, z: Tensor):
        x = torch.sigmoid(self.dec(z)).view(-1, 3, 4, 4)
        if self.kind == "decode_tuple":
            return x, z
        if self.kind == "decode_size":
            return torch.nn.functional.interpolate(x, size=(8, 8))
        return x


def _batch(size: int = 4) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(4, 3, size, size, generator=g), torch.tensor([0, 1, 2, 1])


def _mix(vae, size: int = 4, **kwargs):
    x, y = _batch(size)
    return varmixup(x, y, vae, num_classes=3, generator=torch.Generator().manual_seed(0), **kwargs)


@pytest.mark.parametrize(("kind", "size", "match"), [
    ("ok", 8, r"vae\.encode failed on images of shape \(4, 3, 8, 8\).*resize the images"),
    ("one_tensor", 4, r"vae\.encode must return \(mu, logvar\) or a torch\.distributions\.Normal, got one tensor "
                      r"of shape \(4, 8\); .*chunk\(2, dim=1\)"),
    ("triple", 4, r"vae\.encode must return two tensors \(mu, logvar\), got a tuple of 3"),
    ("shapes", 4, r"vae\.encode returned mu of shape \(4, 4\) and logvar of shape \(4, 3\); they must share"),
    ("decode_tuple", 4, r"vae\.decode must return one image tensor \(B, C, H, W\), got a tuple of \(\(4, 3, 4, 4\), "
                        r"\(4, 4\)\)"),
    ("decode_size", 4, r"vae\.decode returned \(4, 3, 8, 8\) .* for latents \(4, 4\), but VarMixup needs float "
                       r"images of shape \(4, 3, 4, 4\)"),
])
def test_bad_user_vaes_get_a_clear_error(kind, size, match) -> None:
    with pytest.raises(VarMixupError, match=match):
        _mix(PlainVAE(kind), size)


def test_wrong_channels_without_declared_channels() -> None:
    x = torch.rand(4, 1, 4, 4)
    with pytest.raises(VarMixupError, match=r"vae\.encode failed on images of shape \(4, 1, 4, 4\)"):
        varmixup(x, torch.tensor([0, 1, 2, 1]), PlainVAE(), num_classes=3)


def test_decode_size_checked_in_residual_and_for_cached_latents() -> None:
    with pytest.raises(VarMixupError, match=r"vae\.decode returned \(4, 3, 8, 8\)"):
        _mix(PlainVAE("decode_size"), residual=True)


def test_normal_posterior_is_accepted_and_equals_mu_logvar() -> None:
    x_ok, t_ok = _mix(PlainVAE("ok"))
    x_n, t_n = _mix(PlainVAE("normal"))
    assert torch.allclose(x_ok, x_n, atol=1e-6) and torch.equal(t_ok, t_n)


class StdPosterior:
    def __init__(self, mean: Tensor, stddev: Tensor) -> None:
        self.mean, self.stddev = mean, stddev


class LogvarPosterior:
    def __init__(self, mean: Tensor, logvar: Tensor) -> None:
        self.mean, self.logvar = mean, logvar


@pytest.mark.parametrize("wrap", [lambda mu, lv: StdPosterior(mu, (0.5 * lv).exp()),
                                  lambda mu, lv: LogvarPosterior(mu, lv),
                                  lambda mu, lv: torch.distributions.Independent(
                                      torch.distributions.Normal(mu, (0.5 * lv).exp()), 1)],
                         ids=["stddev", "logvar", "independent"])
def test_distribution_like_posteriors(wrap) -> None:
    class Wrapped(PlainVAE):
        def encode(self, x):
            return wrap(*super().encode(x))

    ref = _mix(PlainVAE())[0]
    assert torch.allclose(_mix(Wrapped())[0], ref, atol=1e-6)


def test_posterior_without_scale_is_refused() -> None:
    class MeanOnly(PlainVAE):
        def encode(self, x):
            return StdPosterior(super().encode(x)[0], None)  # type: ignore[arg-type]

    with pytest.raises(VarMixupError, match=r"with a mean but no tensor \.logvar, \.scale or \.stddev"):
        _mix(MeanOnly())


def test_vae_in_train_mode_runs_in_eval_mode_and_keeps_its_mode() -> None:
    vae = PlainVAE(dropout=0.5)
    vae.train()
    vae.enc.eval()  # a submodule the user keeps in eval mode stays so
    first, second = _mix(vae), _mix(vae)
    assert torch.equal(first[0], second[0])  # same generator, same batch: dropout was off
    assert torch.equal(first[0], _mix(PlainVAE(dropout=0.5).eval())[0])
    assert vae.training and vae.drop.training and not vae.enc.training  # modes restored, one by one


def test_vae_switched_back_to_train_after_varmixup_construction() -> None:
    vae = PlainVAE(dropout=0.5)
    mixer = VarMixup(vae, num_classes=3)
    vae.train()  # e.g. a parent model.train()
    x, y = _batch()
    params = mixer.draw_params(4)
    assert torch.equal(mixer(x, y, params=params)[0], mixer(x, y, params=params)[0])
    assert vae.training


def test_adapter_holding_a_module_in_train_mode() -> None:
    class Adapter:
        def __init__(self) -> None:
            self.inner = PlainVAE(dropout=0.5).train()

        def encode(self, x):
            return self.inner.encode(x)

        def decode(self, z):
            return self.inner.decode(z)

    adapter = Adapter()
    assert torch.equal(_mix(adapter)[0], _mix(adapter)[0]) and adapter.inner.training
