"""VarMixupDataset (encode once, cache, refuse random augmentation) and BatchRandomCropFlip."""

from __future__ import annotations

import torch
import pytest
from torch.utils.data import DataLoader, Dataset, TensorDataset

from conftest import CountingVAE
from varmixup_aug import (
    BatchRandomCropFlip,
    ConvVAE,
    Posterior,
    VAEConfig,
    VarMixup,
    VarMixupCollate,
    VarMixupDataset,
    VarMixupError,
    VarMixupLoader,
)


def _vae(seed=0):
    torch.manual_seed(seed)
    return ConvVAE(VAEConfig(image_size=8, latent_dim=4, widths=(4, 8))).eval()


def _data(n=20):
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.rand(n, 3, 8, 8, generator=g), torch.arange(n) % 4)


class RandomlyAugmented(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.rand(3, 8, 8), 0


class TestVarMixupDataset:
    def test_posteriors_match_encoder(self):
        vae, data = _vae(), _data()
        ds = VarMixupDataset(data, vae, batch_size=8, progress=False)
        mu, logvar = vae.encode(data.tensors[0])
        torch.testing.assert_close(ds.mu, mu)
        torch.testing.assert_close(ds.logvar, logvar)
        assert torch.equal(ds.labels, data.tensors[1]) and len(ds) == 20
        item, label = ds[3]
        assert isinstance(item, Posterior) and item.mu.shape == (4,) and label == 3

    def test_training_never_runs_encoder(self):
        vae = CountingVAE(_vae())
        ds = VarMixupDataset(_data(), vae, batch_size=8, progress=False)
        assert vae.encode_calls == 3  # ceil(20 / 8) batches, once
        loader = DataLoader(ds, batch_size=5, shuffle=True, collate_fn=VarMixupCollate(vae, num_classes=4, seed=0))
        for x, t in loader:
            assert x.shape == (5, 3, 8, 8) and t.shape == (5, 4) and torch.allclose(t.sum(1), torch.ones(5))
        assert vae.encode_calls == 3 and vae.decode_calls == 4
        # The same through default_collate + VarMixupLoader.
        for x, _ in VarMixupLoader(DataLoader(ds, batch_size=10), VarMixup(vae, num_classes=4, seed=0)):
            assert x.shape == (10, 3, 8, 8)
        assert vae.encode_calls == 3

    def test_cache_skips_encoding(self, tmp_path):
        data = _data()
        first = CountingVAE(_vae())
        ds1 = VarMixupDataset(data, first, cache_path=tmp_path, progress=False)
        assert first.encode_calls == 1 and ds1.cache_file.parent == tmp_path and ds1.cache_file.exists()
        second = CountingVAE(_vae())
        ds2 = VarMixupDataset(data, second, cache_path=tmp_path, progress=False)
        assert second.encode_calls == 0
        assert torch.equal(ds1.mu, ds2.mu) and torch.equal(ds1.labels, ds2.labels)
        # Another VAE has another fingerprint and encodes again.
        other = CountingVAE(_vae(seed=1))
        ds3 = VarMixupDataset(data, other, cache_path=tmp_path, progress=False)
        assert other.encode_calls == 1 and ds3.cache_file != ds1.cache_file

    def test_cache_file_path_and_corrupt_cache(self, tmp_path):
        data, path = _data(), tmp_path / "latents.safetensors"
        VarMixupDataset(data, _vae(), cache_path=path, progress=False)
        path.write_bytes(b"garbage")
        vae = CountingVAE(_vae())
        ds = VarMixupDataset(data, vae, cache_path=path, progress=False)
        assert vae.encode_calls == 1 and len(ds) == 20  # re-encoded and rewritten
        again = CountingVAE(_vae())
        VarMixupDataset(data, again, cache_path=path, progress=False)
        assert again.encode_calls == 0

    def test_refuses_random_augmentation(self):
        with pytest.raises(VarMixupError, match="dataset returns a different image each time the same index is read"):
            VarMixupDataset(RandomlyAugmented(), _vae(), progress=False)

    def test_bad_input(self):
        with pytest.raises(VarMixupError, match="dataset is empty"):
            VarMixupDataset(TensorDataset(torch.zeros(0, 3, 8, 8), torch.zeros(0)), _vae(), progress=False)
        with pytest.raises(VarMixupError, match="vae must implement encode/decode"):
            VarMixupDataset(_data(), torch.nn.Identity(), progress=False)
        with pytest.raises(VarMixupError, match="device=meta but the VAE is on cpu"):
            VarMixupDataset(_data(), _vae(), device="meta", progress=False)

    def test_repr(self):
        assert "VarMixupDataset(items=20, latent=(4,)" in repr(VarMixupDataset(_data(), _vae(), progress=False))


class TestBatchRandomCropFlip:
    def test_identity_without_padding_and_flip(self):
        x = torch.rand(4, 3, 8, 8)
        assert torch.equal(BatchRandomCropFlip(padding=0, flip=False)(x), x)

    def test_per_sample_shifted_windows(self):
        x = torch.rand(64, 2, 8, 8, dtype=torch.float64)
        out = BatchRandomCropFlip(padding=2, flip=False, seed=0)(x)
        assert out.shape == x.shape and out.dtype == x.dtype
        padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
        offsets = set()
        for i in range(64):
            match = [(dy, dx) for dy in range(5) for dx in range(5)
                     if torch.equal(out[i], padded[i, :, dy:dy + 8, dx:dx + 8])]
            assert match, f"sample {i} is not a crop of its padded image"
            offsets.add(match[0])
        assert len(offsets) > 5  # offsets differ per sample

    def test_flip_per_sample(self):
        x = torch.rand(64, 1, 4, 4)
        out = BatchRandomCropFlip(padding=0, flip=True, seed=0)(x)
        flipped = torch.tensor([torch.equal(out[i], x[i].flip(-1)) for i in range(64)])
        same = torch.tensor([torch.equal(out[i], x[i]) for i in range(64)])
        assert (flipped | same).all() and 10 < flipped.sum() < 54

    def test_seeded(self):
        x = torch.rand(8, 3, 8, 8)
        assert torch.equal(BatchRandomCropFlip(seed=1)(x), BatchRandomCropFlip(seed=1)(x))

    def test_errors(self):
        with pytest.raises(VarMixupError, match="padding must be an int >= 0, got -1"):
            BatchRandomCropFlip(padding=-1)
        with pytest.raises(VarMixupError, match="images must be a \\(B, C, H, W\\) tensor"):
            BatchRandomCropFlip()(torch.rand(3, 8, 8))
