"""ConvVAE, VAEConfig, save_vae / load_vae and every corrupt-checkpoint case."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from _helpers import tiny_conv_vae
from varmixup_aug import ConvVAE, VAEConfig, VAEProtocol, VarMixupError, load_vae, read_vae_metadata, save_vae


class TestVAEConfig:
    def test_round_trip_dict(self):
        cfg = VAEConfig(image_size=16, channels=1, latent_dim=3, widths=(2, 4), blocks_per_stage=1)
        assert VAEConfig.from_dict(cfg.to_dict()) == cfg

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"image_size": 12, "widths": (4, 8, 16)}, "image_size must be a multiple of 2\\*\\*len\\(widths\\) = 8"),
            ({"widths": ()}, "widths must be a non-empty"),
            ({"channels": 0}, "channels must be >= 1"),
            ({"latent_dim": 0}, "latent_dim must be >= 1"),
            ({"blocks_per_stage": -1}, "blocks_per_stage must be >= 0"),
            ({"input_range": (1.0, 0.0)}, "input_range must be \\(low, high\\)"),
        ],
    )
    def test_bad_config(self, kwargs, match):
        with pytest.raises(VarMixupError, match=match):
            VAEConfig(**kwargs)

    def test_unknown_keys(self):
        with pytest.raises(VarMixupError, match="unknown VAE config keys \\['colour'\\]"):
            VAEConfig.from_dict({"colour": 1})


class TestConvVAE:
    def test_shapes_and_range(self):
        vae = tiny_conv_vae()
        x = torch.rand(3, 3, 8, 8)
        mu, logvar = vae.encode(x)
        assert mu.shape == logvar.shape == (3, 4)
        out = vae.decode(mu)
        assert out.shape == x.shape and out.dtype == x.dtype
        assert out.min() >= 0 and out.max() <= 1
        assert isinstance(vae, VAEProtocol)

    def test_custom_input_range(self):
        vae = ConvVAE(VAEConfig(image_size=8, latent_dim=4, widths=(4,), input_range=(-1.0, 1.0)))
        out = vae.decode(torch.randn(2, 4) * 10)
        assert out.min() >= -1 and out.max() <= 1 and out.min() < 0

    def test_config_and_kwargs_conflict(self):
        with pytest.raises(VarMixupError, match="pass either config or keyword arguments"):
            ConvVAE(VAEConfig(), latent_dim=3)

    def test_forward_returns_reconstruction(self):
        recon, mu, logvar = tiny_conv_vae()(torch.rand(2, 3, 8, 8), sample=False)
        assert recon.shape == (2, 3, 8, 8) and mu.shape == (2, 4)


class TestSaveLoadVAE:
    def test_round_trip(self, tmp_path):
        vae = tiny_conv_vae().train()  # saved in train mode: load_vae must give eval mode
        path = save_vae(vae, tmp_path / "v.safetensors", trained_on="unit test", extra={"note": 1})
        loaded = load_vae(path)
        assert loaded.config == vae.config
        for (k, a), (_, b) in zip(vae.state_dict().items(), loaded.state_dict().items()):
            assert torch.equal(a, b), k
        assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
        meta = read_vae_metadata(path)
        assert meta["trained_on"] == "unit test" and meta["extra"] == {"note": 1}
        assert meta["input_range"] == [0.0, 1.0] and meta["format_version"] == 1
        assert meta["architecture"] == "ConvVAE" and meta["config"]["image_size"] == 8
        x = torch.rand(2, 3, 8, 8)
        assert torch.equal(vae.decode(vae.encode(x)[0]), loaded.decode(loaded.encode(x)[0]))

    def test_dtype(self, tmp_path):
        path = save_vae(tiny_conv_vae(), tmp_path / "v.safetensors")
        assert next(load_vae(path, dtype=torch.float64).parameters()).dtype == torch.float64

    def test_no_pickle_in_file(self, tmp_path):
        path = save_vae(tiny_conv_vae(), tmp_path / "v.safetensors")
        data = path.read_bytes()
        (n,) = struct.unpack("<Q", data[:8])
        json.loads(data[8 : 8 + n])  # the header is plain JSON

    def test_save_rejects_other_modules(self, tmp_path):
        with pytest.raises(VarMixupError, match="save_vae expects a ConvVAE, got Linear"):
            save_vae(torch.nn.Linear(2, 2), tmp_path / "x.safetensors")

    def test_missing_file(self, tmp_path):
        with pytest.raises(VarMixupError, match="nope.safetensors: checkpoint file does not exist"):
            load_vae(tmp_path / "nope.safetensors")

    def test_truncated(self, tmp_path):
        path = save_vae(tiny_conv_vae(), tmp_path / "v.safetensors")
        data = path.read_bytes()
        cut = tmp_path / "cut.safetensors"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(VarMixupError, match="cut.safetensors: truncated or corrupt: [0-9]+ bytes where the header needs"):
            load_vae(cut)
        cut.write_bytes(data[:100])
        with pytest.raises(VarMixupError, match="cut.safetensors: not a safetensors file, or truncated"):
            load_vae(cut)
        cut.write_bytes(data[:3])
        with pytest.raises(VarMixupError, match="cut.safetensors: not a safetensors file \\(only 3 bytes\\)"):
            load_vae(cut)

    def test_not_safetensors(self, tmp_path):
        bad = tmp_path / "model.pt"
        torch.save({"a": torch.zeros(2)}, bad)  # a pickle-based file
        with pytest.raises(VarMixupError, match="model.pt: not a safetensors file"):
            load_vae(bad)

    def test_foreign_safetensors(self, tmp_path):
        foreign = tmp_path / "foreign.safetensors"
        save_file({"w": torch.zeros(2)}, str(foreign))
        with pytest.raises(VarMixupError, match="foreign.safetensors: .*no 'varmixup_aug' metadata"):
            load_vae(foreign)

    def _rewrite(self, tmp_path, tensors=None, header_update=None):
        vae = tiny_conv_vae()
        path = save_vae(vae, tmp_path / "v.safetensors")
        header = read_vae_metadata(path)
        header.update(header_update or {})
        state = {k: v.contiguous() for k, v in vae.state_dict().items()}
        if tensors is not None:
            tensors(state)
        out = tmp_path / "edited.safetensors"
        save_file(state, str(out), metadata={"varmixup_aug": json.dumps(header)})
        return out

    def test_missing_tensor(self, tmp_path):
        path = self._rewrite(tmp_path, tensors=lambda s: s.pop("to_posterior.bias"))
        with pytest.raises(VarMixupError, match="edited.safetensors: tensors do not match .*missing \\['to_posterior.bias'\\]"):
            load_vae(path)

    def test_extra_tensor(self, tmp_path):
        path = self._rewrite(tmp_path, tensors=lambda s: s.update({"surprise": torch.zeros(1)}))
        with pytest.raises(VarMixupError, match="unexpected \\['surprise'\\]"):
            load_vae(path)

    def test_shape_mismatch(self, tmp_path):
        path = self._rewrite(tmp_path, tensors=lambda s: s.update({"to_posterior.bias": torch.zeros(3)}))
        with pytest.raises(VarMixupError, match="tensor 'to_posterior.bias' has shape \\(3,\\), expected \\(8,\\)"):
            load_vae(path)

    def test_unknown_version(self, tmp_path):
        path = self._rewrite(tmp_path, header_update={"format_version": 99})
        with pytest.raises(VarMixupError, match="edited.safetensors: unsupported format_version 99"):
            load_vae(path)

    def test_unknown_format_and_architecture(self, tmp_path):
        path = self._rewrite(tmp_path, header_update={"format": "other"})
        with pytest.raises(VarMixupError, match="unknown checkpoint format 'other'"):
            load_vae(path)
        path = self._rewrite(tmp_path, header_update={"architecture": "UNet"})
        with pytest.raises(VarMixupError, match="unknown architecture 'UNet'"):
            load_vae(path)

    def test_bad_config_in_file(self, tmp_path):
        path = self._rewrite(tmp_path, header_update={"config": {"image_size": 9, "widths": [4, 8]}})
        with pytest.raises(VarMixupError, match="invalid VAE config in metadata .*multiple of"):
            load_vae(path)


class TestSafetensorsHeader:
    """The one header reader behind checkpoint loading and the latent cache's shard checks."""

    def _file(self, tmp_path, header: bytes, data: bytes = b""):
        path = tmp_path / "f.safetensors"
        path.write_bytes(struct.pack("<Q", len(header)) + header + data)
        return path

    def test_reads_a_real_file_and_its_size(self, tmp_path) -> None:
        from varmixup_aug._io import safetensors_header

        path = tmp_path / "t.safetensors"
        save_file({"a": torch.zeros(3)}, str(path), metadata={"k": "v"})
        header, size = safetensors_header(path)
        assert header["a"]["shape"] == [3] and header["__metadata__"] == {"k": "v"}
        assert size == path.stat().st_size

    @pytest.mark.parametrize(("header", "data", "message"), [
        (b"[1, 2]", b"", r"header is not a JSON object"),
        (b'{"a": {"dtype": "F32"}}', b"", r"a tensor entry has no data_offsets"),
        (b"\xff\xfe", b"", r"header is not JSON"),
        (b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}', b"1234", r"truncated or corrupt: 73 bytes where the header needs 77"),
    ])
    def test_names_what_is_wrong(self, tmp_path, header: bytes, data: bytes, message: str) -> None:
        from varmixup_aug._io import BadSafetensorsFile, safetensors_header

        with pytest.raises(BadSafetensorsFile, match=message):
            safetensors_header(self._file(tmp_path, header, data))
