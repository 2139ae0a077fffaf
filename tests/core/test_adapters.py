"""``varmixup_aug.adapters.AutoencoderKLAdapter`` with a real, tiny, randomly initialised diffusers AutoencoderKL.

Nothing is downloaded: the autoencoder is built from a config (8/16 channels, 4 latent channels,
one downsampling step, so 32x32 images give 4x16x16 latents).
"""

from __future__ import annotations

import math
import pickle
import sys

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

diffusers = pytest.importorskip("diffusers")

from varmixup_aug import (  # noqa: E402
    MixupParams,
    VAEProtocol,
    VarMixup,
    VarMixupCollate,
    VarMixupDataset,
    VarMixupError,
    varmixup,
)
from varmixup_aug.adapters import AutoencoderKLAdapter  # noqa: E402

NUM_CLASSES = 4
SCALING = 0.18215


def make_kl(**overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    config = dict(
        block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=4, norm_num_groups=8,
        sample_size=32, scaling_factor=SCALING,
    )
    config.update(overrides)
    return diffusers.AutoencoderKL(**config).eval()


def images(n: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def labels(n: int = 4) -> torch.Tensor:
    return torch.arange(n) % NUM_CLASSES


@pytest.fixture
def kl() -> torch.nn.Module:
    return make_kl()


@pytest.fixture
def adapter(kl) -> AutoencoderKLAdapter:
    return AutoencoderKLAdapter(kl)


class TestAutoencoderKLAdapter:
    def test_shapes_and_ranges(self, adapter):
        mu, logvar = adapter.encode(images(3))
        assert mu.shape == logvar.shape == (3, 4, 16, 16)
        assert mu.dtype == logvar.dtype == torch.float32
        out = adapter.decode(mu)
        assert out.shape == (3, 3, 32, 32)
        assert out.min() >= 0.0 and out.max() <= 1.0
        assert adapter(images(3)).shape == (3, 3, 32, 32)

    def test_maps_unit_range_to_diffusers_range(self, kl, adapter):
        x = images(2)
        with torch.no_grad():
            dist = kl.encode(x * 2 - 1).latent_dist
            mu, logvar = adapter.encode(x)
            assert torch.equal(mu, dist.mean) and torch.equal(logvar, dist.logvar)
            expected = ((kl.decode(mu).sample + 1) / 2).clamp(0, 1)
            assert torch.equal(adapter.decode(mu), expected)

    def test_protocol_attributes(self, kl):
        adapter = AutoencoderKLAdapter(kl, image_size=32)
        assert isinstance(adapter, VAEProtocol)
        assert (adapter.channels, adapter.image_size, adapter.input_range) == (3, 32, (0.0, 1.0))
        assert (adapter.latent_channels, adapter.downsample_factor) == (4, 2)
        assert AutoencoderKLAdapter(kl).image_size is None  # sample_size is not a limit

    def test_state_dict_is_the_autoencoder_weights(self, kl, adapter):
        assert set(adapter.state_dict()) == {f"autoencoder.{k}" for k in kl.state_dict()}
        fresh = AutoencoderKLAdapter(make_kl(layers_per_block=1))
        torch.nn.init.zeros_(fresh.autoencoder.encoder.conv_in.weight)
        fresh.load_state_dict(adapter.state_dict())
        x = images(2)
        with torch.no_grad():
            assert torch.equal(fresh.encode(x)[0], adapter.encode(x)[0])

    def test_scaling_factor(self, kl, adapter):
        scaled = AutoencoderKLAdapter(kl, scale_latents=True)
        x = images(2)
        with torch.no_grad():
            mu, logvar = adapter.encode(x)
            mu_s, logvar_s = scaled.encode(x)
            torch.testing.assert_close(mu_s, mu * SCALING)
            torch.testing.assert_close(logvar_s, logvar + 2 * math.log(SCALING))
            # A posterior draw in the scaled space is the scaled draw.
            eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(1))
            torch.testing.assert_close(mu_s + eps * (0.5 * logvar_s).exp(), (mu + eps * (0.5 * logvar).exp()) * SCALING)
            torch.testing.assert_close(scaled.decode(mu_s), adapter.decode(mu), atol=1e-5, rtol=0)

    def test_shift_factor(self):
        raw = AutoencoderKLAdapter(make_kl(scaling_factor=0.5, shift_factor=0.1))
        scaled = AutoencoderKLAdapter(make_kl(scaling_factor=0.5, shift_factor=0.1), scale_latents=True)
        x = images(2)
        with torch.no_grad():
            mu, logvar = raw.encode(x)
            mu_s, logvar_s = scaled.encode(x)
            torch.testing.assert_close(mu_s, (mu - 0.1) * 0.5)
            torch.testing.assert_close(logvar_s, logvar + 2 * math.log(0.5))
            torch.testing.assert_close(scaled.decode(mu_s), raw.decode(mu), atol=1e-5, rtol=0)

    def test_per_channel_latents_mean_and_std(self):
        mean, std = (0.1, 0.2, 0.3, 0.4), (1.0, 2.0, 3.0, 4.0)
        cfg = dict(scaling_factor=0.5, latents_mean=mean, latents_std=std)
        raw, scaled = AutoencoderKLAdapter(make_kl(**cfg)), AutoencoderKLAdapter(make_kl(**cfg), scale_latents=True)
        m, s = torch.tensor(mean).view(1, 4, 1, 1), torch.tensor(std).view(1, 4, 1, 1)
        with torch.no_grad():
            mu, logvar = raw.encode(images(2))
            mu_s, logvar_s = scaled.encode(images(2))
        torch.testing.assert_close(mu_s, (mu - m) * 0.5 / s)
        torch.testing.assert_close(logvar_s, logvar + 2 * torch.log(0.5 / s))

    def test_dtype_and_device_round_trip(self, adapter):
        x = images(2)  # float32 in, the adapter's dtype out
        for dtype in (torch.float64, torch.bfloat16):
            vae = AutoencoderKLAdapter(make_kl()).to(dtype)
            with torch.no_grad():
                mu, logvar = vae.encode(x)
                out = vae.decode(mu)
            assert mu.dtype == logvar.dtype == out.dtype == dtype
            assert mu.device == out.device == x.device
            assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
        with torch.no_grad():
            ref = adapter.encode(x)[0]
            f64 = AutoencoderKLAdapter(make_kl()).to(torch.float64).encode(x)[0]
        torch.testing.assert_close(f64.float(), ref, atol=1e-4, rtol=1e-4)

    @pytest.mark.cuda
    def test_cuda_round_trip(self, kl):
        if not torch.cuda.is_available():
            pytest.skip("no CUDA device")
        vae = AutoencoderKLAdapter(kl, scale_latents=True).cuda()
        x = images(2).cuda()
        with torch.no_grad():
            mu, _ = vae.encode(x)
            out = vae.decode(mu)
        assert mu.device.type == out.device.type == "cuda" and out.shape == x.shape
        mixed, targets = VarMixup(vae, num_classes=NUM_CLASSES, seed=0, autocast_dtype=torch.bfloat16)(
            x, labels(2).cuda())
        assert mixed.device.type == "cuda" and mixed.dtype == torch.float32 and torch.isfinite(mixed).all()
        torch.testing.assert_close(targets.sum(1), torch.ones(2, device="cuda"))

    def test_pickles_for_spawned_workers(self, adapter):
        copy = pickle.loads(pickle.dumps(adapter))
        with torch.no_grad():
            assert torch.equal(copy.encode(images(2))[0], adapter.encode(images(2))[0])

    def test_from_pretrained_reads_a_local_folder(self, kl, tmp_path):
        kl.save_pretrained(tmp_path / "vae")
        loaded = AutoencoderKLAdapter.from_pretrained(tmp_path / "vae", scale_latents=True, image_size=32)
        assert not loaded.training and loaded.scale_latents and loaded.image_size == 32
        with torch.no_grad():
            expected = kl.encode(images(2) * 2 - 1).latent_dist.mean * SCALING
            torch.testing.assert_close(loaded.encode(images(2))[0], expected)

    def test_config_tells_scaled_from_raw(self, kl):
        assert AutoencoderKLAdapter(kl).config != AutoencoderKLAdapter(kl, scale_latents=True).config
        assert AutoencoderKLAdapter(kl).config["autoencoder"]["latent_channels"] == 4

    def test_missing_diffusers(self, monkeypatch):
        monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers now raises ImportError
        with pytest.raises(VarMixupError, match=r'pip install "varmixup-aug\[diffusers\]"'):
            AutoencoderKLAdapter.from_pretrained("any/model")

    def test_refuses_what_is_not_an_autoencoder(self):
        with pytest.raises(VarMixupError, match="must be a diffusers AutoencoderKL"):
            AutoencoderKLAdapter(object())

    def test_refuses_a_module_without_config(self):
        class NoConfig(torch.nn.Module):
            def encode(self, x):
                return x

            def decode(self, z):
                return z

        with pytest.raises(VarMixupError, match="no diffusers config"):
            AutoencoderKLAdapter(NoConfig())

    def test_refuses_different_in_and_out_channels(self):
        with pytest.raises(VarMixupError, match="reads 3 channels but writes 1"):
            AutoencoderKLAdapter(make_kl(out_channels=1))

    @pytest.mark.parametrize("size", [0, 2.0, True, "32"])
    def test_refuses_bad_image_size(self, kl, size):
        with pytest.raises(VarMixupError, match="image_size must be a positive int"):
            AutoencoderKLAdapter(kl, image_size=size)

    def test_refuses_image_size_off_the_latent_grid(self, kl):
        with pytest.raises(VarMixupError, match="multiple of the autoencoder's downsampling factor 2"):
            AutoencoderKLAdapter(kl, image_size=31)

    def test_refuses_non_bool_scale_latents(self, kl):
        with pytest.raises(VarMixupError, match="scale_latents must be True or False"):
            AutoencoderKLAdapter(kl, scale_latents=1)

    def test_refuses_bad_latent_statistics(self):
        with pytest.raises(VarMixupError, match="latents_std needs 1 or 4 values"):
            AutoencoderKLAdapter(make_kl(latents_mean=(0.0,) * 4, latents_std=(1.0, 1.0)), scale_latents=True)
        with pytest.raises(VarMixupError, match="unusable latent scale"):
            AutoencoderKLAdapter(make_kl(scaling_factor=-1.0), scale_latents=True)

    def test_refuses_images_off_the_latent_grid(self, adapter):
        with pytest.raises(VarMixupError, match="divisible by 2"):
            adapter.encode(images(2, size=31))

    def test_refuses_wrong_channels_and_latent_shapes(self, adapter):
        with pytest.raises(VarMixupError, match=r"images must have shape \(B, 3, H, W\)"):
            adapter.encode(torch.rand(2, 1, 32, 32))
        with pytest.raises(VarMixupError, match=r"latents must have shape \(B, 4, h, w\)"):
            adapter.decode(torch.rand(2, 8))


class TestAdapterInVarmixup:
    def test_residual_gives_back_the_sources_at_lam_0_and_1(self, adapter):
        x, y = images(4), labels(4)
        params = MixupParams(lam=torch.tensor([1.0, 0.0, 1.0, 0.0]), index=torch.tensor([1, 0, 3, 2]),
                             applied=torch.ones(4, dtype=torch.bool), noise_seed=0)
        mixed, targets = varmixup(x, y, adapter, num_classes=NUM_CLASSES, residual=True, params=params)
        assert torch.equal(mixed[0], x[0]) and torch.equal(mixed[2], x[2])  # lam = 1: itself
        assert torch.equal(mixed[1], x[0]) and torch.equal(mixed[3], x[2])  # lam = 0: its partner
        assert torch.equal(targets, torch.eye(NUM_CLASSES)[torch.tensor([0, 0, 2, 2])])

    def test_residual_with_drawn_lam(self, adapter):
        x = images(6)
        mixed, targets = varmixup(x, labels(6), adapter, num_classes=NUM_CLASSES, residual=True,
                                  generator=torch.Generator().manual_seed(0))
        assert mixed.shape == x.shape and mixed.min() >= 0 and mixed.max() <= 1
        torch.testing.assert_close(targets.sum(1), torch.ones(6))

    def test_scaling_does_not_change_the_mixed_images(self, kl, adapter):
        scaled = AutoencoderKLAdapter(kl, scale_latents=True)
        params = VarMixup(adapter, num_classes=NUM_CLASSES, seed=3).draw_params(4)
        for residual in (False, True):
            raw_out, raw_t = varmixup(images(4), labels(4), adapter, num_classes=NUM_CLASSES, residual=residual,
                                      params=params)
            scaled_out, scaled_t = varmixup(images(4), labels(4), scaled, num_classes=NUM_CLASSES,
                                            residual=residual, params=params)
            torch.testing.assert_close(scaled_out, raw_out, atol=1e-5, rtol=0)
            assert torch.equal(scaled_t, raw_t)

    def test_bfloat16_autocast(self, adapter):
        mixer = VarMixup(adapter, num_classes=NUM_CLASSES, seed=0, autocast_dtype=torch.bfloat16)
        mixed, targets = mixer(images(4), labels(4))
        assert mixed.dtype == torch.float32 and torch.isfinite(mixed).all()
        torch.testing.assert_close(targets.sum(1), torch.ones(4))

    def test_image_size_lets_the_core_refuse_early(self, kl):
        with pytest.raises(VarMixupError, match="expects 32x32"):
            varmixup(images(2, size=16), labels(2), AutoencoderKLAdapter(kl, image_size=32),
                     num_classes=NUM_CLASSES)


class TestAdapterInVarMixupCollate:
    @pytest.mark.parametrize("num_workers", [0, 2])
    def test_data_loader(self, adapter, num_workers):
        data = TensorDataset(images(12), labels(12))
        collate = VarMixupCollate(adapter, num_classes=NUM_CLASSES, seed=0, residual=num_workers == 2)
        loader = DataLoader(data, batch_size=4, shuffle=True, num_workers=num_workers, collate_fn=collate)
        batches = list(loader)
        assert len(batches) == 3
        for x, t in batches:
            assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
            assert x.min() >= 0 and x.max() <= 1 and torch.isfinite(x).all()
            assert t.shape == (4, NUM_CLASSES)
            torch.testing.assert_close(t.sum(1), torch.ones(4))
        assert not torch.equal(batches[0][1], batches[1][1])


class TestAdapterInVarMixupDataset:
    def test_latent_cache(self, kl, tmp_path):
        data = TensorDataset(images(10), labels(10))
        adapter = AutoencoderKLAdapter(kl)
        latents = VarMixupDataset(data, adapter, cache_path=tmp_path, batch_size=4, progress=False)
        assert latents.mu.shape == latents.logvar.shape == (10, 4, 16, 16)
        with torch.no_grad():
            torch.testing.assert_close(latents.mu, adapter.encode(images(10))[0])

        # The second time the encoder is not run: the file is read.
        def no_encode(x):
            raise AssertionError("encoded again instead of reading the cache")

        again_adapter = AutoencoderKLAdapter(kl)
        again_adapter.encode = no_encode
        again = VarMixupDataset(data, again_adapter, cache_path=tmp_path, progress=False)
        assert again.cache_file == latents.cache_file and torch.equal(again.mu, latents.mu)

        loader = DataLoader(latents, batch_size=5, shuffle=True,
                            collate_fn=VarMixupCollate(adapter, num_classes=NUM_CLASSES, seed=0))
        for x, t in loader:
            assert x.shape == (5, 3, 32, 32) and x.min() >= 0 and x.max() <= 1
            torch.testing.assert_close(t.sum(1), torch.ones(5))

    def test_scaled_latents_get_their_own_cache(self, kl, tmp_path):
        data = TensorDataset(images(6), labels(6))
        raw = VarMixupDataset(data, AutoencoderKLAdapter(kl), cache_path=tmp_path, progress=False)
        scaled = VarMixupDataset(data, AutoencoderKLAdapter(kl, scale_latents=True), cache_path=tmp_path,
                                 progress=False)
        assert raw.cache_file != scaled.cache_file
        torch.testing.assert_close(scaled.mu, raw.mu * SCALING)
