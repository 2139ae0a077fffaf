"""The op's numerics and the one validator: NaN lam refused, a huge logvar clamped, NaN from encode/decode named
by method and item, one value tolerance and one uint8 rule everywhere, and the core's clear refusals (non-square
image_size, channel-first numpy, unknown devices, numpy MI pools, batches mixing label kinds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _helpers import tiny_conv_vae
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from varmixup_aug import (
    MIPredictor,
    MixupParams,
    Posterior,
    VarMixup,
    VarMixupCollate,
    VarMixupDataset,
    VarMixupError,
    VarMixupLoader,
    varmixup,
)
from varmixup_aug._collate import collate_images
from varmixup_aug._validate import RANGE_TOLERANCE
from varmixup_aug.harness.scoring import as_float_images


class LinearVAE(nn.Module):
    """A linear VAE for 3x4x4 images; ``encode_hook``/``decode_hook`` change what it returns."""

    def __init__(self, encode_hook=None, decode_hook=None, image_size=None) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.enc, self.dec = nn.Linear(48, 8), nn.Linear(4, 48)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        self.encode_hook, self.decode_hook = encode_hook, decode_hook
        if image_size is not None:
            self.image_size, self.channels = image_size, 3

    def encode(self, x: Tensor):
        mu, logvar = self.enc(x.flatten(1)).chunk(2, dim=1)
        return self.encode_hook(mu, logvar) if self.encode_hook else (mu, logvar)

    def decode(self, z: Tensor):
        x = torch.sigmoid(self.dec(z)).view(-1, 3, 4, 4)
        return self.decode_hook(x) if self.decode_hook else x


def _batch(b: int = 4) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(b, 3, 4, 4, generator=g), torch.arange(b) % 3


def _mix(vae, x=None, y=None, **kwargs):
    bx, by = _batch()
    return varmixup(bx if x is None else x, by if y is None else y, vae, num_classes=3,
                    generator=torch.Generator().manual_seed(0), **kwargs)


# ---- class 1: NaN and overflow ------------------------------------------------------------------

def test_nan_lam_is_refused() -> None:
    with pytest.raises(VarMixupError, match=r"MixupParams.lam must lie in \[0, 1\] \(NaN is refused\)"):
        MixupParams(lam=torch.tensor([0.5, float("nan")]), index=torch.tensor([1, 0]),
                    applied=torch.ones(2, dtype=torch.bool), noise_seed=0)


def _huge_logvar(mu, logvar):
    logvar = logvar.clone()
    logvar[0] = 250.0
    return mu, logvar


def test_a_huge_logvar_is_clamped_not_a_nan_batch() -> None:
    xm, targets = _mix(LinearVAE(encode_hook=_huge_logvar))
    assert torch.isfinite(xm).all() and torch.isfinite(targets).all()


def test_huge_logvar_affects_only_the_items_that_use_it() -> None:
    b = 4
    params = MixupParams(lam=torch.ones(b), index=torch.arange(b), applied=torch.ones(b, dtype=torch.bool),
                         noise_seed=3)
    x, y = _batch()
    out = varmixup(x, y, LinearVAE(encode_hook=_huge_logvar), num_classes=3, params=params)[0]
    ref = varmixup(x, y, LinearVAE(), num_classes=3, params=params)[0]
    assert torch.isfinite(out).all()
    assert torch.equal(out[1:], ref[1:]) and not torch.equal(out[0], ref[0])


def _nan_at(item: int):
    def hook(t):
        t = t.clone()
        t[item] = float("nan")
        return t
    return hook


def test_decoder_nan_names_the_method_and_the_item() -> None:
    with pytest.raises(VarMixupError, match=r"vae\.decode returned NaN or Inf for item 2 of the batch \(1 of 4 items\)"):
        _mix(LinearVAE(decode_hook=_nan_at(2)))
    with pytest.raises(VarMixupError, match=r"vae\.decode returned NaN or Inf for item 1 of the batch"):
        _mix(LinearVAE(decode_hook=_nan_at(1)), residual=True)


def test_encoder_nan_names_the_method_and_the_item() -> None:
    with pytest.raises(VarMixupError, match=r"vae\.encode returned NaN or Inf in mu for item 3 of the batch"):
        _mix(LinearVAE(encode_hook=lambda mu, lv: (_nan_at(3)(mu), lv)))
    with pytest.raises(VarMixupError, match=r"vae\.encode returned NaN in logvar for item 0 of the batch"):
        _mix(LinearVAE(encode_hook=lambda mu, lv: (mu, _nan_at(0)(lv))))


def test_decoder_nan_from_cached_latents() -> None:
    mu, logvar = torch.zeros(4, 4), torch.zeros(4, 4)
    with pytest.raises(VarMixupError, match=r"vae\.decode returned NaN or Inf for item 0 of the batch"):
        varmixup(Posterior(mu, logvar), torch.arange(4) % 3, LinearVAE(decode_hook=_nan_at(0)), num_classes=3)


# ---- one validator: one tolerance, one uint8 rule ---------------------------------------------------

@pytest.mark.parametrize("overshoot", [RANGE_TOLERANCE / 2, RANGE_TOLERANCE * 3])
def test_one_tolerance_for_the_op_the_pool_mi_input_and_the_harness(overshoot) -> None:
    x, y = _batch()
    x = x.clone()
    x[0, 0, 0, 0] = 1 + overshoot
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 3)).eval()
    pool = (torch.rand(6, 3, 4, 4), torch.arange(6) % 3)
    calls = {
        "op": lambda: _mix(LinearVAE(), x=x),
        "pool": lambda: MIPredictor(model, (torch.cat([x, pool[0]]), torch.cat([y, pool[1]])), num_classes=3),
        "mi input": lambda: MIPredictor(model, pool, num_classes=3, num_samples=2)(x),
        "harness": lambda: as_float_images(x),
        "dataset": lambda: VarMixupDataset(TensorDataset(x, y), LinearVAE(), progress=False),
    }
    for call in calls.values():
        if overshoot < RANGE_TOLERANCE:
            call()  # accepted by every one
        else:
            with pytest.raises(VarMixupError, match=r"hold values in|must lie in pixel space"):
                call()


def test_uint8_is_read_as_x_over_255_wherever_images_are_only_read() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 3)).eval()
    images = torch.randint(0, 256, (6, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(6) % 3
    a = MIPredictor(model, (images, labels), num_classes=3, num_samples=2, seed=0, deterministic=True)
    b = MIPredictor(model, (images.float() / 255, labels), num_classes=3, num_samples=2, seed=0, deterministic=True)
    assert torch.equal(a.pool_images, b.pool_images)
    assert torch.equal(as_float_images(images), images.float() / 255)
    assert torch.equal(collate_images([(im, 0) for im in images])[0], images.float() / 255)
    with pytest.raises(VarMixupError, match=r"images must be floating point, got torch.uint8; convert"):
        _mix(LinearVAE(), x=images[:4])  # the op returns the input's dtype, which uint8 cannot hold


def test_integer_one_hot_rows_are_soft_labels() -> None:
    y = _batch()[1]
    one_hot = torch.nn.functional.one_hot(y, 3)  # int64 rows
    assert torch.equal(_mix(LinearVAE(), y=one_hot)[1], _mix(LinearVAE(), y=y)[1])
    with pytest.raises(VarMixupError, match=r"one-hot or soft rows need num_classes = 5 columns, got num_classes=3"):
        _mix(LinearVAE(), y=torch.nn.functional.one_hot(y, 5))


def test_a_batch_mixing_class_indices_and_one_hot_rows() -> None:
    x = _batch()[0]
    items = [(x[0], 1), (x[1], np.eye(3, dtype=np.float32)[2]), (x[2], 0)]
    with pytest.raises(VarMixupError, match=r"labels in a batch must be all class indices or all soft-label \(e\.g\. "
                                            r"one-hot\) vectors, got a class index at item 0 \(1\) and a vector of "
                                            r"shape \(3,\) at item 1"):
        collate_images(items)
    with pytest.raises(VarMixupError, match=r"a class index at item 1 .* at item 0"):
        collate_images([(x[0], torch.tensor([0.0, 1.0, 0.0])), (x[1], 2)])


# ---- class 8: the core's messages ----------------------------------------------------------------

def test_non_square_image_size_in_the_message() -> None:
    vae = LinearVAE(image_size=(32, 48))
    with pytest.raises(VarMixupError, match=r"images are 4x4 but the VAE expects 32x48 \(height x width\); resize"):
        _mix(vae)
    ok = LinearVAE(image_size=(4, 4))
    assert _mix(ok)[0].shape == (4, 3, 4, 4)


def test_channel_first_numpy_items_are_refused_not_misread() -> None:
    chw = (np.random.default_rng(0).random((4, 3, 8, 8)) * 255).astype(np.uint8)
    for space in ("input", "latent"):
        collate = VarMixupCollate(None if space == "input" else tiny_conv_vae(), num_classes=3, space=space, seed=0)
        with pytest.raises(VarMixupError, match=r"numpy images must be channel-last \(H, W, C\) or \(H, W\) like PIL "
                                                r"and albumentations give them, got shape \(3, 8, 8\), which looks "
                                                r"channel-first \(C, H, W\); pass arr\.transpose\(1, 2, 0\)"):
            collate([(im, 0) for im in chw])
    hwc = chw.transpose(0, 2, 3, 1)
    out = collate_images([(im, 0) for im in hwc])[0]
    assert torch.equal(out, torch.from_numpy(chw).float() / 255)


@pytest.mark.parametrize("device", ["tpu", "cuda:x", 3.5])
def test_unknown_device_names_the_argument(device) -> None:
    with pytest.raises(VarMixupError, match=r"device must be a torch device such as 'cpu', 'cuda' or 'cuda:1'"):
        VarMixupCollate(None, num_classes=3, space="input", device=device)
    with pytest.raises(VarMixupError, match=r"device must be a torch device"):
        VarMixupLoader([], VarMixup(None, num_classes=3, space="input"), device=device)


def test_numpy_pool_pair_is_images_and_labels() -> None:
    rng = np.random.default_rng(0)
    images = (rng.random((6, 8, 8, 3)) * 255).astype(np.uint8)  # numpy images are (N, H, W, C)
    labels = np.arange(6) % 3
    model = nn.Sequential(nn.Flatten(), nn.Linear(192, 3)).eval()
    mi = MIPredictor(model, (images, labels), num_classes=3, num_samples=2)
    ref = MIPredictor(model, (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255, torch.from_numpy(labels)),
                      num_classes=3, num_samples=2)
    assert mi.pool_images.shape == (6, 3, 8, 8) and torch.equal(mi.pool_images, ref.pool_images)
    with pytest.raises(VarMixupError, match=r"pool images must be channel-last \(N, H, W, C\) .* looks channel-first"):
        MIPredictor(model, (images.transpose(0, 3, 1, 2), labels), num_classes=3)


def test_a_two_item_dataset_is_still_a_dataset() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 3)).eval()
    ds = TensorDataset(torch.rand(2, 3, 4, 4), torch.tensor([0, 1]))
    mi = MIPredictor(model, ds, num_classes=2, num_samples=2)
    assert mi.pool_images.shape == (2, 3, 4, 4)
    pairs = [(torch.rand(3, 4, 4), 0), (torch.rand(3, 4, 4), 1)]  # a list of two (image, label) items
    assert MIPredictor(model, pairs, num_classes=2, num_samples=2).pool_images.shape == (2, 3, 4, 4)
