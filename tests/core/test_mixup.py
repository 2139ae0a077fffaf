"""draw_mixup_params, mix_targets, varmixup and VarMixup: the batch op's rules."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from varmixup_aug import (
    MixupParams,
    Posterior,
    VarMixup,
    VarMixupError,
    draw_mixup_params,
    mix_targets,
    varmixup,
)
from varmixup_aug._random import sample_beta

from _helpers import CountingVAE


def _batch(b=6, c=3, s=8, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, s, s, generator=g), torch.randint(0, k, (b,), generator=g)


def _params(lam, index=None):
    lam = torch.as_tensor(lam, dtype=torch.float32)
    b = lam.shape[0]
    index = torch.as_tensor(index) if index is not None else torch.arange(b).roll(1)
    return MixupParams(lam=lam, index=index, applied=torch.ones(b, dtype=torch.bool), noise_seed=0)


class TestSampleBeta:
    @pytest.mark.parametrize("alpha", [0.2, 1.0, 4.0])
    def test_moments(self, alpha):
        lam = sample_beta(alpha, 20000, torch.Generator().manual_seed(0))
        assert lam.min() >= 0 and lam.max() <= 1
        var = 1.0 / (4 * (2 * alpha + 1))
        assert abs(lam.mean().item() - 0.5) < 0.01
        assert abs(lam.var().item() - var) < 0.1 * var

    def test_generator_reproducible(self):
        a = sample_beta(0.4, 50, torch.Generator().manual_seed(3))
        b = sample_beta(0.4, 50, torch.Generator().manual_seed(3))
        assert torch.equal(a, b)


class TestDrawMixupParams:
    def test_permutation_and_range(self):
        p = draw_mixup_params(32, alpha=0.4, generator=torch.Generator().manual_seed(0))
        assert sorted(p.index.tolist()) == list(range(32))
        assert not torch.equal(p.index, torch.arange(32).roll(1))  # a random permutation, not a roll
        assert p.lam.dtype == torch.float32 and ((p.lam >= 0) & (p.lam <= 1)).all()
        assert p.lam.unique().numel() > 1  # per sample by default

    def test_batch_lam(self):
        p = draw_mixup_params(8, lam_per_sample=False, generator=torch.Generator().manual_seed(0))
        assert p.lam.unique().numel() == 1

    def test_prob(self):
        g = torch.Generator().manual_seed(0)
        p0 = draw_mixup_params(16, prob=0.0, generator=g)
        assert not p0.applied.any() and torch.equal(p0.lam, torch.ones(16))
        p = draw_mixup_params(4000, prob=0.3, generator=g)
        assert abs(p.applied.float().mean().item() - 0.3) < 0.03
        assert (p.lam[~p.applied] == 1).all()

    def test_batch_of_one_is_unmixed(self):
        p = draw_mixup_params(1)
        assert p.lam.tolist() == [1.0] and p.index.tolist() == [0] and not p.applied.any()

    def test_same_seed_same_params(self):
        a = draw_mixup_params(8, generator=torch.Generator().manual_seed(5))
        b = draw_mixup_params(8, generator=torch.Generator().manual_seed(5))
        assert torch.equal(a.lam, b.lam) and torch.equal(a.index, b.index) and a.noise_seed == b.noise_seed

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"alpha": 0.0}, "alpha must be a finite number > 0, got 0.0"),
            ({"alpha": -1}, "alpha must be a finite number > 0"),
            ({"prob": 1.5}, "prob must lie in \\[0, 1\\], got 1.5"),
            ({"prob": -0.1}, "prob must lie in \\[0, 1\\]"),
        ],
    )
    def test_bad_args(self, kwargs, match):
        with pytest.raises(VarMixupError, match=match):
            draw_mixup_params(4, **kwargs)

    def test_bad_batch_size(self):
        with pytest.raises(VarMixupError, match="batch_size must be a positive int, got 0"):
            draw_mixup_params(0)

    def test_params_validation(self):
        with pytest.raises(VarMixupError, match="lam must lie in \\[0, 1\\]"):
            _params([0.5, 1.5])
        with pytest.raises(VarMixupError, match="index must be a permutation"):
            _params([0.5, 0.5], index=[0, 0])
        with pytest.raises(VarMixupError, match="needs lam, index and applied of shape \\(B,\\)"):
            MixupParams(lam=torch.ones(2), index=torch.arange(3), applied=torch.ones(2, dtype=torch.bool),
                        noise_seed=0)


class TestMixTargets:
    def test_sums_to_one_and_values(self):
        y = torch.tensor([0, 1, 2])
        p = _params([1.0, 0.25, 0.5], index=[1, 2, 0])
        t = mix_targets(y, p, num_classes=3)
        assert torch.allclose(t.sum(1), torch.ones(3))
        assert torch.allclose(t[1], torch.tensor([0.0, 0.25, 0.75]))

    def test_label_smoothing(self):
        t = mix_targets(torch.tensor([0, 1]), _params([1.0, 1.0]), num_classes=4, label_smoothing=0.2)
        assert torch.allclose(t[0], torch.tensor([0.85, 0.05, 0.05, 0.05]))
        assert torch.allclose(t.sum(1), torch.ones(2))


class TestVarmixupFunction:
    def test_identity_vae_equals_torchvision_mixup(self, identity_vae):
        from torchvision.transforms import v2

        x, y = _batch(b=8)
        torch.manual_seed(123)
        x_tv, t_tv = v2.MixUp(alpha=1.0, num_classes=4)(x, y)
        torch.manual_seed(123)
        lam = torch.distributions.Beta(torch.tensor([1.0]), torch.tensor([1.0])).sample(()).item()
        params = _params([lam] * 8, index=torch.arange(8).roll(1))
        for posterior in ("sample", "mean"):
            x_vm, t_vm = varmixup(x, y, identity_vae, num_classes=4, posterior=posterior, params=params)
            torch.testing.assert_close(x_vm, x_tv)
            torch.testing.assert_close(t_vm, t_tv)
        x_in, t_in = varmixup(x, y, None, num_classes=4, space="input", params=params)
        torch.testing.assert_close(x_in, x_tv)
        torch.testing.assert_close(t_in, t_tv)

    def test_targets_sum_to_one_shapes_kept(self, tiny_vae):
        x, y = _batch()
        xm, t = varmixup(x, y, tiny_vae, num_classes=4, generator=torch.Generator().manual_seed(0))
        assert xm.shape == x.shape and xm.dtype == x.dtype and xm.device == x.device
        assert t.shape == (6, 4) and torch.allclose(t.sum(1), torch.ones(6))
        assert xm.min() >= 0 and xm.max() <= 1
        assert not torch.equal(xm, x)

    @pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
    def test_dtype_kept(self, tiny_vae, dtype):
        x, y = _batch()
        xm, t = varmixup(x.to(dtype), y, tiny_vae, num_classes=4, generator=torch.Generator().manual_seed(0))
        assert xm.dtype == dtype and t.dtype == torch.promote_types(dtype, torch.float32)

    def test_lam_one_and_zero_give_sources(self, identity_vae, tiny_vae):
        x, y = _batch()
        idx = [1, 2, 3, 4, 5, 0]
        ones, zeros = _params([1.0] * 6, idx), _params([0.0] * 6, idx)
        xm, t = varmixup(x, y, identity_vae, num_classes=4, params=ones)
        assert torch.equal(xm, x) and torch.equal(t, F.one_hot(y, 4).float())
        xm, t = varmixup(x, y, identity_vae, num_classes=4, params=zeros)
        assert torch.equal(xm, x[idx]) and torch.equal(t, F.one_hot(y[idx], 4).float())
        # Paper form with a real VAE gives the reconstruction of the single source ...
        xm, _ = varmixup(x, y, tiny_vae, num_classes=4, posterior="mean", params=ones)
        torch.testing.assert_close(xm, tiny_vae.decode(tiny_vae.encode(x)[0]))
        # ... and the residual form gives the source exactly.
        xm, _ = varmixup(x, y, tiny_vae, num_classes=4, residual=True, params=ones)
        assert torch.equal(xm, x)
        xm, _ = varmixup(x, y, tiny_vae, num_classes=4, residual=True, params=zeros)
        assert torch.equal(xm, x[idx])

    def test_residual_formula(self, tiny_vae):
        x, y = _batch()
        p = _params([0.3] * 6, [1, 2, 3, 4, 5, 0])
        xm, _ = varmixup(x, y, tiny_vae, num_classes=4, residual=True, posterior="mean", params=p)
        mu, _ = tiny_vae.encode(x)
        rec = tiny_vae.decode(mu)
        z = 0.3 * mu + 0.7 * mu[p.index]
        expected = (tiny_vae.decode(z) + 0.3 * (x - rec) + 0.7 * (x - rec)[p.index]).clamp(0, 1)
        torch.testing.assert_close(xm, expected)

    def test_paper_form_formula(self, tiny_vae):
        x, y = _batch()
        p = _params([0.3, 0.6, 0.1, 0.9, 0.5, 0.2], [3, 2, 1, 0, 5, 4])
        xm, _ = varmixup(x, y, tiny_vae, num_classes=4, posterior="mean", params=p)
        mu, _ = tiny_vae.encode(x)
        lam = p.lam[:, None]
        torch.testing.assert_close(xm, tiny_vae.decode(lam * mu + (1 - lam) * mu[p.index]))

    def test_posterior_sampling_is_used(self, tiny_vae):
        x, y = _batch()
        p = _params([0.5] * 6)
        mean, _ = varmixup(x, y, tiny_vae, num_classes=4, posterior="mean", params=p)
        sampled, _ = varmixup(x, y, tiny_vae, num_classes=4, posterior="sample", params=p)
        again, _ = varmixup(x, y, tiny_vae, num_classes=4, posterior="sample", params=p)
        assert not torch.allclose(mean, sampled) and torch.equal(sampled, again)

    def test_input_normalization(self, identity_vae):
        x, y = _batch()
        mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
        m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
        xn = (x - m) / s
        p = _params([0.3] * 6)
        out, _ = varmixup(xn, y, identity_vae, num_classes=4, input_normalization=(mean, std), params=p)
        ref, _ = varmixup(x, y, identity_vae, num_classes=4, params=p)
        torch.testing.assert_close(out, (ref - m) / s)
        with pytest.raises(VarMixupError, match="pass input_normalization=\\(mean, std\\) if the images are normalised"):
            varmixup(xn, y, identity_vae, num_classes=4, params=p)
        with pytest.raises(VarMixupError, match="input_normalization std needs 1 or 3 values"):
            varmixup(xn, y, identity_vae, num_classes=4, input_normalization=(mean, (1, 2)), params=p)
        with pytest.raises(VarMixupError, match="input_normalization std must be > 0"):
            varmixup(xn, y, identity_vae, num_classes=4, input_normalization=(mean, (1, 0, 1)), params=p)

    def test_prob_leaves_unmixed_samples(self, tiny_vae):
        x, y = _batch(b=64)
        g = torch.Generator().manual_seed(0)
        p = draw_mixup_params(64, prob=0.5, generator=g)
        xm, t = varmixup(x, y, tiny_vae, num_classes=4, params=p)
        keep = ~p.applied
        assert keep.any() and p.applied.any()
        assert torch.equal(xm[keep], x[keep]) and torch.equal(t[keep], F.one_hot(y[keep], 4).float())
        assert not torch.allclose(xm[p.applied], x[p.applied])

    def test_batch_of_one(self, tiny_vae):
        x, y = _batch(b=1)
        xm, t = varmixup(x, y, tiny_vae, num_classes=4, label_smoothing=0.1)
        assert torch.equal(xm, x)
        assert torch.allclose(t, F.one_hot(y, 4).float() * 0.9 + 0.025)

    def test_soft_labels_in(self, identity_vae):
        x, _ = _batch()
        soft = torch.softmax(torch.randn(6, 4), 1)
        p = _params([0.25] * 6)
        _, t = varmixup(x, soft, identity_vae, num_classes=4, params=p)
        torch.testing.assert_close(t, 0.25 * soft + 0.75 * soft[p.index])

    def test_loss_functions_accept_targets(self, tiny_vae):
        x, y = _batch()
        _, t = varmixup(x, y, tiny_vae, num_classes=4, generator=torch.Generator().manual_seed(0))
        logits = torch.randn(6, 4, requires_grad=True)
        ce = torch.nn.CrossEntropyLoss()(logits, t)
        soft_target_ce = torch.sum(-t * F.log_softmax(logits, dim=-1), dim=-1).mean()  # timm's formula
        torch.testing.assert_close(ce, soft_target_ce)
        ce.backward()
        assert logits.grad is not None

    def test_posterior_input_skips_encoder(self, tiny_vae):
        vae = CountingVAE(tiny_vae)
        x, y = _batch()
        mu, logvar = tiny_vae.encode(x)
        p = _params([0.4] * 6)
        from_latents, _ = varmixup(Posterior(mu, logvar), y, vae, num_classes=4, params=p)
        from_images, _ = varmixup(x, y, vae, num_classes=4, params=p)
        assert vae.encode_calls == 1
        torch.testing.assert_close(from_latents, from_images)
        with pytest.raises(VarMixupError, match="cached latents \\(Posterior\\) support only the paper form"):
            varmixup(Posterior(mu, logvar), y, vae, num_classes=4, residual=True)

    def test_autocast_bf16(self, tiny_vae):
        x, y = _batch()
        xm, _ = varmixup(x, y, tiny_vae, num_classes=4, autocast_dtype=torch.bfloat16,
                         generator=torch.Generator().manual_seed(0))
        ref, _ = varmixup(x, y, tiny_vae, num_classes=4, generator=torch.Generator().manual_seed(0))
        assert xm.dtype == torch.float32
        assert (xm - ref).abs().max() < 0.05

    def test_does_not_modify_input_and_no_grad(self, tiny_vae):
        x, y = _batch()
        x0 = x.clone()
        xm, _ = varmixup(x, y, tiny_vae, num_classes=4)
        assert torch.equal(x, x0) and not xm.requires_grad

    @pytest.mark.parametrize(
        "change, match",
        [
            (lambda x, y: (x[:, :1], y), "images have 1 channels but the VAE expects 3"),
            (lambda x, y: (x[:, :, :4, :4], y), "images are 4x4 but the VAE expects 8x8; resize them"),
            (lambda x, y: ((x * 255).to(torch.uint8), y), "images must be floating point, got torch.uint8; convert"),
            (lambda x, y: (x.index_put((torch.tensor([0]),), torch.tensor(float("nan"))), y), "images contain NaN or Inf"),
            (lambda x, y: (x.index_put((torch.tensor([1]),), torch.tensor(float("inf"))), y), "images contain NaN or Inf"),
            (lambda x, y: (x[0], y), "images must have shape \\(B, C, H, W\\), got \\(3, 8, 8\\)"),
            (lambda x, y: (x, y + 4), "labels must lie in \\[0, num_classes\\) = \\[0, 4\\), got values in"),
            (lambda x, y: (x, y - 1 - y.max()), "labels must lie in \\[0, num_classes\\)"),
            (lambda x, y: (x, torch.rand(6, 3)), "soft labels must have shape \\(B, num_classes\\) = \\(6, 4\\), got \\(6, 3\\)"),
            (lambda x, y: (x, y[:3]), "labels must have shape \\(B,\\) = \\(6,\\), got \\(3,\\)"),
            (lambda x, y: (x * 3, y), "images hold values in \\[.*\\] but the VAE expects \\[0, 1\\]"),
            (lambda x, y: (x.tolist(), y), "images must be a tensor \\(B, C, H, W\\), got list"),
        ],
    )
    def test_bad_batches(self, tiny_vae, change, match):
        x, y = _batch()
        bad_x, bad_y = change(x, y)
        with pytest.raises(VarMixupError, match=match):
            varmixup(bad_x, bad_y, tiny_vae, num_classes=4)

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"alpha": 0}, "alpha must be a finite number > 0"),
            ({"prob": 2}, "prob must lie in \\[0, 1\\]"),
            ({"label_smoothing": 1.0}, "label_smoothing must lie in \\[0, 1\\)"),
            ({"num_classes": 0}, "num_classes must be a positive int"),
            ({"space": "pixel"}, "space must be 'latent' or 'input', got 'pixel'"),
            ({"posterior": "mode"}, "posterior must be 'sample' or 'mean', got 'mode'"),
        ],
    )
    def test_bad_arguments(self, tiny_vae, kwargs, match):
        x, y = _batch()
        args = {"num_classes": 4, **kwargs}
        with pytest.raises(VarMixupError, match=match):
            varmixup(x, y, tiny_vae, **args)

    def test_vae_on_other_device(self, tiny_vae):
        x, y = _batch()
        with pytest.raises(VarMixupError, match="vae is on meta but images are on cpu; move it first"):
            varmixup(x, y, tiny_vae.to("meta"), num_classes=4)

    def test_not_a_vae(self):
        x, y = _batch()
        with pytest.raises(VarMixupError, match="vae must have encode\\(x\\) -> \\(mu, logvar\\)"):
            varmixup(x, y, torch.nn.Identity(), num_classes=4)

    def test_nothing_half_done_on_error(self, tiny_vae):
        vae = CountingVAE(tiny_vae)
        x, y = _batch()
        with pytest.raises(VarMixupError):
            varmixup(x, y + 10, vae, num_classes=4)
        assert vae.encode_calls == 0 and vae.decode_calls == 0


class TestVarMixup:
    def test_same_seed_same_output(self, tiny_vae):
        x, y = _batch()
        a = VarMixup(tiny_vae, num_classes=4, seed=7)
        b = VarMixup(tiny_vae, num_classes=4, seed=7)
        xa, ta = a(x, y)
        xb, tb = b(x, y)
        assert torch.equal(xa, xb) and torch.equal(ta, tb)
        xa2, _ = a(x, y)
        assert not torch.equal(xa, xa2)  # the stream moves on
        xc, _ = VarMixup(tiny_vae, num_classes=4, seed=8)(x, y)
        assert not torch.equal(xa, xc)

    def test_generator(self, tiny_vae):
        x, y = _batch()
        g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
        xa, _ = VarMixup(tiny_vae, num_classes=4, generator=g1)(x, y)
        xb, _ = VarMixup(tiny_vae, num_classes=4, generator=g2)(x, y)
        assert torch.equal(xa, xb)

    def test_matches_function(self, tiny_vae):
        x, y = _batch()
        mixer = VarMixup(tiny_vae, num_classes=4, alpha=0.4, residual=True, seed=0)
        p = mixer.draw_params(6)
        xa, ta = mixer(x, y, params=p)
        xb, tb = varmixup(x, y, tiny_vae, num_classes=4, residual=True, params=p)
        assert torch.equal(xa, xb) and torch.equal(ta, tb)

    def test_input_space_needs_no_vae(self):
        x, y = _batch()
        xm, t = VarMixup(None, num_classes=4, space="input", seed=0)(x, y)
        assert xm.shape == x.shape and torch.allclose(t.sum(1), torch.ones(6))

    def test_bad_construction(self, tiny_vae):
        with pytest.raises(VarMixupError, match="vae must implement encode/decode \\(VAEProtocol\\) when space='latent'"):
            VarMixup(None, num_classes=4)
        with pytest.raises(VarMixupError, match="alpha must be a finite number > 0"):
            VarMixup(tiny_vae, num_classes=4, alpha=-1)
        with pytest.raises(VarMixupError, match="pass seed or generator, not both"):
            VarMixup(tiny_vae, num_classes=4, seed=1, generator=torch.Generator())
        with pytest.raises(VarMixupError, match="input_normalization mean needs 1 or 3 values"):
            VarMixup(tiny_vae, num_classes=4, input_normalization=((0.1, 0.2), (0.3,)))

    def test_repr(self, tiny_vae):
        assert "num_classes=4" in repr(VarMixup(tiny_vae, num_classes=4))

    @pytest.mark.cuda
    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    def test_cpu_and_cuda_agree(self, tiny_vae):
        x, y = _batch()
        cpu, t_cpu = VarMixup(tiny_vae, num_classes=4, seed=0)(x, y)
        cuda, t_cuda = VarMixup(tiny_vae.cuda(), num_classes=4, seed=0)(x.cuda(), y.cuda())
        assert cuda.device.type == "cuda"
        torch.testing.assert_close(cuda.cpu(), cpu, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(t_cuda.cpu(), t_cpu)

    @pytest.mark.cuda
    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    def test_cuda_autocast(self, tiny_vae):
        x, y = _batch()
        out, _ = VarMixup(tiny_vae.cuda(), num_classes=4, autocast_dtype=torch.float16, seed=0)(x.cuda(), y.cuda())
        assert out.dtype == torch.float32 and torch.isfinite(out).all()
