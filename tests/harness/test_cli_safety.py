"""The CLI never loses work or hangs: run claims, --resume settings, flag validation, bad files, umask."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from varmixup_aug import VarMixupError
from varmixup_aug.harness.cli import main
from varmixup_aug.harness.cli._flags import prepare_out_dir, prepare_out_file

from _helpers import train_args

_VAE = ["--image-size", "32", "--latent-dim", "4", "--widths", "4,8", "--batch-size", "16", "--limit-eval", "8",
        "--checkpoint-every", "2", "--no-progress", "--num-workers", "0", "--epochs", "1"]


def vae_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["train-vae", "--data-dir", str(root), "--out", str(out), "--max-steps", "2", *_VAE, *extra]


class TestRunClaims:
    def test_train_vae_rerun_refused_resume_overwrite(self, image_folder, tmp_path, capsys):
        out = tmp_path / "vae.safetensors"
        assert main(vae_args(image_folder, out)) == 0
        before = out.read_bytes()
        assert main(vae_args(image_folder, out)) == 2
        assert "already holds a run" in capsys.readouterr().err and out.read_bytes() == before
        assert main(vae_args(image_folder, out, "--resume", "--lr", "0.01")) == 2
        assert "other settings (lr: 0.002 -> 0.01)" in capsys.readouterr().err
        assert main(vae_args(image_folder, out, "--resume", "--lr", "0.01", "--allow-changed-settings")) == 0
        assert main(vae_args(image_folder, out, "--overwrite")) == 0
        assert main(vae_args(image_folder, out, "--overwrite", "--resume")) == 2
        assert "exclude each other" in capsys.readouterr().err

    def test_train_classifier_rerun_refused_and_changed_settings(self, image_folder, tmp_path, capsys):
        out = tmp_path / "run"
        assert main(train_args(image_folder, out, "erm", "--max-steps", "2")) == 0
        before = (out / "checkpoint.safetensors").read_bytes()
        assert main(train_args(image_folder, out, "erm", "--max-steps", "2")) == 2
        assert "already holds a run" in capsys.readouterr().err
        assert (out / "checkpoint.safetensors").read_bytes() == before
        for flag, value, name in (("--seed", "3", "seed"), ("--lr", "0.5", "lr")):
            assert main(train_args(image_folder, out, "erm", "--max-steps", "3", "--resume", flag, value)) == 2
            assert f"other settings ({name}:" in capsys.readouterr().err
        assert main(train_args(image_folder, out, "erm", "--max-steps", "3", "--resume", "--limit-train", "40")) == 2
        assert "another split" in capsys.readouterr().err or "other settings" in capsys.readouterr().err
        assert main(train_args(image_folder, out, "erm", "--max-steps", "3", "--resume")) == 0
        assert main(train_args(image_folder, out, "erm", "--max-steps", "2", "--overwrite")) == 0

    def test_out_kinds_refused_before_training(self, image_folder, tmp_path, capsys):
        folder = tmp_path / "a_folder"
        folder.mkdir()
        assert main(vae_args(image_folder, folder)) == 2
        assert "--out" in (err := capsys.readouterr().err) and "is a folder" in err
        file = tmp_path / "a_file"
        file.write_text("keep")
        assert main(train_args(image_folder, file, "erm", "--max-steps", "1")) == 2
        assert "is a file" in capsys.readouterr().err and file.read_text() == "keep"

    def test_helpers(self, tmp_path):
        run = tmp_path / "run"
        assert prepare_out_dir(run, resume=False, overwrite=False, run_files=["ckpt"]).is_dir()
        (run / "ckpt").write_text("x")
        (run / "notes").write_text("mine")
        with pytest.raises(VarMixupError, match="already holds a run.*--resume.*--overwrite"):
            prepare_out_dir(run, resume=False, overwrite=False, run_files=["ckpt"])
        prepare_out_dir(run, resume=True, overwrite=False, run_files=["ckpt"])
        prepare_out_dir(run, resume=False, overwrite=True, run_files=["ckpt"])
        assert (run / "ckpt").read_text() == "x"  # checked only: --overwrite deletes nothing before the new run is valid
        with pytest.raises(VarMixupError, match="--resume given but there is no checkpoint"):
            prepare_out_dir(run, resume=True, overwrite=False, run_files=["other"])
        with pytest.raises(VarMixupError, match="--out .* is a folder"):
            prepare_out_file(run, resume=False, overwrite=False)


class TestFlagValidation:
    @pytest.mark.parametrize("flag,value", [("--epochs", "0"), ("--max-steps", "0"), ("--max-steps", "-3"),
                                            ("--batch-size", "0"), ("--checkpoint-every", "0"), ("--widths", "8,,16"),
                                            ("--widths", "8,x"), ("--widths", "0,8"), ("--lr", "nan"),
                                            ("--lr", "inf"), ("--lr", "-1")])
    def test_bad_values_exit_2_naming_the_flag(self, flag, value, tmp_path, capsys):
        data = tmp_path / "never-read"
        for argv in (["train-vae", "--data-dir", str(data), "--out", str(tmp_path / "v.safetensors")],
                     ["train-classifier", "--method", "erm", "--data-dir", str(data), "--out", str(tmp_path / "r")]):
            with pytest.raises(SystemExit) as exc:
                main([*argv, f"{flag}={value}"])
            assert exc.value.code == 2
            assert f"argument {flag}" in capsys.readouterr().err
        assert not (tmp_path / "r").exists() and not (tmp_path / "v.safetensors").exists()


class TestVAEFlags:
    """``--vae`` takes a checkpoint or a shipped VAE's name (``load_vae``); ``--pretrained`` names the default."""

    def _load(self, *argv: str):
        import argparse

        from varmixup_aug.harness.cli._flags import add_vae_flags, vae_from_flags, vae_label

        parser = argparse.ArgumentParser()
        add_vae_flags(parser)
        args = parser.parse_args(argv)
        return vae_from_flags(args), vae_label(args)

    def test_a_path_a_name_and_the_default(self, image_folder):
        path = str(image_folder / "vae.safetensors")
        vae, label = self._load("--vae", path)
        assert vae.config.latent_dim == 4 and label == path
        by_name, label = self._load("--vae", "cifar10")
        default, default_label = self._load()
        assert by_name.config == default.config and (label, default_label) == ("cifar10", "pretrained:cifar10")

    def test_neither_a_file_nor_a_name(self):
        with pytest.raises(VarMixupError, match="load_vae: 'cifar100' is neither a checkpoint file nor a shipped"):
            self._load("--vae", "cifar100")
        with pytest.raises(VarMixupError, match="unknown pretrained VAE 'cifar100'; available"):
            self._load("--pretrained", "cifar100")


class TestBadFiles:
    def test_corrupt_archive(self, tmp_path, capsys, monkeypatch):
        monkeypatch.setenv("VARMIXUP_AUG_CACHE", str(tmp_path / "cache"))
        archive = tmp_path / "data.tar.gz"
        archive.write_bytes(b"\x1f\x8b\x08\x00" + os.urandom(200))
        assert main(vae_args(archive, tmp_path / "v.safetensors")) == 2
        err = capsys.readouterr().err
        assert f"archive {archive} is corrupt or truncated" in err
        assert not list((tmp_path / "cache" / "unpacked").glob(".*"))

    def test_non_image_file(self, image_folder, tmp_path, capsys):
        root = tmp_path / "data"
        shutil.copytree(image_folder, root)
        bad = root / "train" / "class3" / "broken.png"
        bad.write_text("not an image")
        assert main(train_args(root, tmp_path / "run", "erm", "--max-steps", "1")) == 2
        assert f"{bad} is not a readable image" in capsys.readouterr().err
        with pytest.raises(VarMixupError, match=r"broken\.png is not a readable image"):
            from varmixup_aug.harness import open_image_dataset

            ds = open_image_dataset(root, "train")
            ds[ds.samples.index((str(bad), 3))]


class TestDemoAndUmask:
    def test_demo_with_a_tiny_train_split_does_not_hang(self, image_folder, tmp_path, capsys):
        root = tmp_path / "data"
        for split in ("train", "test"):
            for c in range(2):
                (root / split / f"c{c}").mkdir(parents=True)
                for i in range(3):
                    shutil.copy(image_folder / split / f"class{c}" / f"{i}.png", root / split / f"c{c}" / f"{i}.png")
        args = ["demo", "--data-dir", str(root), "--vae", str(image_folder / "vae.safetensors"), "--batch-size", "128",
                "--max-steps", "2", "--num-workers", "0", "--out-dir", str(tmp_path / "demo"), "--no-progress",
                "--device", "cpu", "--no-mi"]
        assert main(args) == 0
        assert "using batches of 6" in capsys.readouterr().out

    def test_written_files_follow_the_umask(self, tmp_path):
        import torch

        from _helpers import tiny_conv_vae
        from varmixup_aug import save_vae

        old = os.umask(0o002)
        try:
            path = save_vae(tiny_conv_vae(), tmp_path / "v.safetensors")
        finally:
            os.umask(old)
        assert os.stat(path).st_mode & 0o777 == 0o664
        assert torch.__version__  # the file is a normal file
