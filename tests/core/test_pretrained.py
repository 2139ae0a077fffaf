"""The shipped CIFAR-10 VAE: registry, sha256 check, config, and its quality on real test images."""

from __future__ import annotations

import re
import shutil

import pytest
import torch

from varmixup_aug import VarMixupError, list_pretrained, load_pretrained_vae, load_vae
from varmixup_aug._pretrained import pretrained_path
from varmixup_aug.harness import evaluate_vae

from _helpers import REPO

CARD = REPO / "pretrained_vae" / "cifar10.md"


def _card_value(label: str) -> float:
    match = re.search(rf"{label}\s*\|\s*([0-9.]+)", CARD.read_text())
    assert match, f"model card has no '{label}' row"
    return float(match.group(1))


class TestListPretrained:
    def test_names(self):
        assert "cifar10" in list_pretrained()


class TestLoadPretrainedVAE:
    def test_loads_with_documented_config(self):
        vae = load_pretrained_vae("cifar10")
        c = vae.config
        assert (c.image_size, c.channels, c.input_range) == (32, 3, (0.0, 1.0))
        card = CARD.read_text()
        assert f"latent size | {c.latent_dim}" in card
        assert f"widths | {list(c.widths)}" in card
        params = sum(p.numel() for p in vae.parameters())
        assert f"parameters | {params:,}" in card
        assert pretrained_path("cifar10").stat().st_size < 25 * 2**20

    def test_psnr_on_real_test_images_matches_card(self, cifar_test_images):
        vae = load_pretrained_vae("cifar10")
        report = evaluate_vae(vae, cifar_test_images[0])
        card_psnr = _card_value("test-split PSNR \\(dB\\)")
        assert report["images"] == 256
        assert abs(report["psnr_db"] - card_psnr) < 0.5, (report["psnr_db"], card_psnr)
        assert report["psnr_db"] >= 20.0

    def test_corrupted_copy_fails_sha256(self, tmp_path):
        copy = tmp_path / "cifar10.safetensors"
        shutil.copy(pretrained_path("cifar10"), copy)
        data = bytearray(copy.read_bytes())
        data[-100] ^= 0xFF  # flip bits in one weight
        copy.write_bytes(bytes(data))
        with pytest.raises(VarMixupError, match="cifar10.safetensors: sha256 [0-9a-f]{64} does not match the recorded"):
            load_pretrained_vae("cifar10", path=copy)
        shutil.copy(pretrained_path("cifar10"), copy)
        assert isinstance(load_pretrained_vae("cifar10", path=copy, dtype=torch.float64), torch.nn.Module)

    def test_unknown_name(self):
        with pytest.raises(VarMixupError, match="unknown pretrained VAE 'imagenet'; available: \\['cifar10'\\]"):
            load_pretrained_vae("imagenet")


class TestLoadVAEByName:
    """``load_vae`` takes a checkpoint path or a shipped VAE's name (what the CLI's ``--vae`` passes)."""

    def test_a_shipped_name_loads_the_checked_file(self):
        by_name, shipped = load_vae("cifar10", dtype=torch.float64), load_pretrained_vae("cifar10")
        assert by_name.config == shipped.config and next(by_name.parameters()).dtype == torch.float64
        for (k, a), (_, b) in zip(by_name.state_dict().items(), shipped.state_dict().items()):
            assert torch.equal(a, b.double()), k

    def test_an_existing_file_wins_over_a_shipped_name(self, tmp_path, monkeypatch):
        from varmixup_aug import save_vae

        from _helpers import tiny_conv_vae

        save_vae(tiny_conv_vae(), tmp_path / "cifar10")
        monkeypatch.chdir(tmp_path)
        assert load_vae("cifar10").config.image_size == 8

    def test_neither_a_file_nor_a_name(self):
        with pytest.raises(VarMixupError, match=r"load_vae: 'cifar100' is neither a checkpoint file nor a shipped "
                                                r"VAE's name; pass the path of a file written by save_vae, or one of "
                                                r"\['cifar10'\]"):
            load_vae("cifar100")

    def test_a_missing_path_keeps_its_message(self, tmp_path):
        with pytest.raises(VarMixupError, match="cifar10.safetensors: checkpoint file does not exist"):
            load_vae(tmp_path / "cifar10.safetensors")
        with pytest.raises(VarMixupError, match="checkpoint file does not exist"):
            load_vae("runs/vae")

    def test_not_a_path(self):
        with pytest.raises(VarMixupError, match="load_vae expects a checkpoint path or a shipped VAE's name, got int"):
            load_vae(3)  # type: ignore[arg-type]
