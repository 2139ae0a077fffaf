"""The varmixup-aug command line on real CIFAR-10: train-vae (with resume), pictures, demo."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest
import torch

from varmixup_aug import VarMixupError, load_vae, read_vae_metadata
from varmixup_aug.harness.cli import main

from _helpers import CIFAR_ARCHIVE, REPO

_TINY = ["--latent-dim", "8", "--widths", "8,16", "--limit-train", "256", "--limit-eval", "64", "--batch-size", "32",
         "--checkpoint-every", "2", "--no-progress", "--num-workers", "0"]


class TestTrainVAECommand:
    def test_trains_resumes_and_loads(self, cifar_root, tmp_path, capsys):
        out = str(tmp_path / "vae.safetensors")
        assert main(["train-vae", "--data-dir", str(cifar_root), "--out", out, "--max-steps", "3", *_TINY]) == 0
        state = tmp_path / "vae.safetensors.train-state.safetensors"
        assert state.exists()
        first = read_vae_metadata(out)["extra"]["report"]
        assert first["steps"] == 3
        assert main(["train-vae", "--data-dir", str(cifar_root), "--out", out, "--max-steps", "5", "--resume", *_TINY]) == 0
        report = json.loads((tmp_path / "vae.safetensors.report.json").read_text())
        assert report["steps"] == 5
        for key in ("mse", "psnr_db", "kl_per_dim_nats", "elbo_bits_per_dim", "active_dims"):
            assert key in report
        assert len(report["kl_per_dim_nats"]) == 8 and report["images"] == 64
        vae = load_vae(out)
        assert vae.config.latent_dim == 8 and "256 images" in vae.trained_on
        assert "held-out report on 64 images" in capsys.readouterr().out

    def test_resume_equals_uninterrupted(self, cifar_root, tmp_path):
        a, b = str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")
        main(["train-vae", "--data-dir", str(cifar_root), "--out", a, "--max-steps", "4", *_TINY])
        main(["train-vae", "--data-dir", str(cifar_root), "--out", b, "--max-steps", "2", *_TINY])
        main(["train-vae", "--data-dir", str(cifar_root), "--out", b, "--max-steps", "4", "--resume", *_TINY])
        va, vb = load_vae(a), load_vae(b)
        for (k, x), (_, y) in zip(va.state_dict().items(), vb.state_dict().items()):
            torch.testing.assert_close(x, y, msg=k)

    def test_user_imagefolder_without_splits(self, tmp_path, capsys):
        import numpy as np
        from PIL import Image

        rng = np.random.default_rng(0)
        for cls in ("cats", "dogs"):
            (tmp_path / "photos" / cls).mkdir(parents=True)
            for i in range(20):
                Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(
                    tmp_path / "photos" / cls / f"{i}.png")
        out = str(tmp_path / "vae.safetensors")
        args = ["train-vae", "--data-dir", str(tmp_path / "photos"), "--out", out, "--image-size", "16",
                "--latent-dim", "4", "--widths", "4,8", "--batch-size", "8", "--max-steps", "2", "--no-progress",
                "--num-workers", "0"]
        assert main(args) == 0
        report = json.loads((tmp_path / "vae.safetensors.report.json").read_text())
        assert report["images"] == 2 and report["train_images"] == 38  # a fixed 5% is held out
        assert load_vae(out).config.image_size == 16  # resized and center-cropped to --image-size
        assert main([*args, "--max-steps", "3", "--resume"]) == 0

    def test_archive_input(self, tmp_path, monkeypatch):
        if not CIFAR_ARCHIVE.is_file():
            pytest.skip("needs ../shared/data/cifar10-jpg.tar.gz")
        monkeypatch.setenv("VARMIXUP_AUG_CACHE", str(tmp_path / "cache"))
        out = str(tmp_path / "vae.safetensors")
        assert main(["train-vae", "--data-dir", str(CIFAR_ARCHIVE), "--out", out, "--max-steps", "1", *_TINY]) == 0
        assert load_vae(out).config.image_size == 32

    def test_errors(self, tmp_path, capsys, monkeypatch):
        monkeypatch.setenv("VARMIXUP_AUG_CACHE", str(tmp_path / "cache"))
        assert main(["train-vae", "--data-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
        assert "neither an existing folder/archive nor a known torchvision dataset" in capsys.readouterr().err
        (tmp_path / "notes.txt").write_text("x")
        assert main(["train-vae", "--data-dir", str(tmp_path / "notes.txt"), "--out", str(tmp_path / "x")]) == 2
        assert "is a file but not a .tar.gz/.tgz/.tar archive" in capsys.readouterr().err

    def test_offline_download_names_data_dir(self, tmp_path, monkeypatch):
        import varmixup_aug.harness.data as data

        monkeypatch.setenv("VARMIXUP_AUG_CACHE", str(tmp_path / "cache"))

        def offline(*args, **kwargs):
            raise OSError("network is unreachable")

        import torchvision.datasets

        monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
        with pytest.raises(VarMixupError, match="Offline\\? Pass --data-dir with an ImageFolder directory"):
            data.open_image_dataset("cifar10", "train")

    def test_entry_point_installed_or_module(self):
        proc = subprocess.run([sys.executable, "-m", "varmixup_aug", "--help"], capture_output=True, text=True,
                              cwd=REPO, timeout=120)
        assert proc.returncode == 0 and "train-vae" in proc.stdout and "demo" in proc.stdout


@pytest.mark.usefixtures("one_thread")
class TestDemo:
    """``varmixup-aug demo`` on the tiny ImageFolder: a fixed number of seeded steps, then Mixup Inference."""

    def _args(self, image_folder, out, *extra: str) -> list[str]:
        return ["demo", "--data-dir", str(image_folder), "--vae", str(image_folder / "vae.safetensors"),
                "--batch-size", "16", "--max-steps", "3", "--num-workers", "0", "--eval-limit", "20",
                "--mi-images", "8", "--mi-pool", "40", "--mi-samples", "2", "--no-progress", "--device", "cpu",
                "--out-dir", str(out), *extra]

    def test_trains_the_given_steps_and_repeats_its_result(self, image_folder, tmp_path, monkeypatch, capsys):
        monkeypatch.chdir(tmp_path)  # the committed mixup model is not here: MI wraps the trained model
        results = []
        for run in ("a", "b"):
            assert main(self._args(image_folder, tmp_path / run)) == 0
            results.append(json.loads((tmp_path / run / "demo_result.json").read_text()))
        out = capsys.readouterr().out
        assert "results/cifar10-fast/mixup not found" in out and "trained 3 steps (48 VarMixup images" in out
        assert "model: the SmallCNN trained above (3 VarMixup steps)" in out and "PGD-10 2/255" in out
        for r in results:
            r.pop("train_seconds"), r["mixup_inference"].pop("seconds")
        a, b = results
        assert a == b  # seeded: the same steps, losses, accuracies and MI draws
        assert a["steps"] == 3 and a["test_images"] == 20
        mi = a["mixup_inference"]
        assert mi["images"] == 8 and mi["pool"] == 40 and mi["eps"] == pytest.approx(2 / 255)
        assert set(mi["accuracy"]) == {"clean", "PGD-10 2/255"}
        assert all(set(v) == {"plain", "mi_ol"} for v in mi["accuracy"].values())

    def test_minutes_is_only_a_cap(self, image_folder, tmp_path, capsys):
        assert main(self._args(image_folder, tmp_path / "d", "--minutes", "1e-6", "--no-mi")) == 0
        assert "trained 1 steps" in capsys.readouterr().out  # the cap ran out after the first step
        assert "mixup_inference" not in json.loads((tmp_path / "d" / "demo_result.json").read_text())

    def test_a_checkpoint_is_wrapped_and_bad_flags_fail_before_training(self, image_folder, tmp_path, capsys):
        from varmixup_aug.harness.cli import demo

        mixup = REPO / "results" / "cifar10-fast" / "mixup"
        assert main(self._args(image_folder, tmp_path / "m", "--mi-model", str(mixup), "--max-steps", "1")) == 0
        assert f"model: mixup FastCifarNet ({mixup})" in capsys.readouterr().out
        assert json.loads((tmp_path / "m" / "demo_result.json").read_text())["mixup_inference"]["model"].startswith(
            "mixup FastCifarNet")
        two_classes = tmp_path / "two"
        for split in ("train", "test"):
            for c in range(2):
                (two_classes / split / f"c{c}").mkdir(parents=True)
                for i in range(2):
                    (two_classes / split / f"c{c}" / f"{i}.png").write_bytes(
                        (image_folder / split / f"class{c}" / f"{i}.png").read_bytes())
        args = self._args(image_folder, tmp_path / "e", "--mi-model", str(mixup))
        args[args.index("--data-dir") + 1] = str(two_classes)
        assert main(args) == 2
        err = capsys.readouterr()
        assert "predicts 10 classes but the data has 2; pass --mi-model trained" in err.err
        assert "training" not in err.out and not (tmp_path / "e" / "demo_result.json").exists()
        with pytest.raises(VarMixupError, match=r"--eps must be one L-inf radius in \[0, 1\] such as 2/255"):
            demo._one_eps("2/255,8/255")
        with pytest.raises(VarMixupError, match=r"--eps must be one L-inf radius"):
            demo._one_eps("8")
        with pytest.raises(VarMixupError, match="--eps must be comma-separated numbers"):
            demo._one_eps("two")
        assert main(self._args(image_folder, tmp_path / "f", "--eps", "8")) == 2
        assert "--eps must be one L-inf radius" in capsys.readouterr().err
        cpu = torch.device("cpu")
        with pytest.raises(VarMixupError, match=r"--mi-lam must be in \(0, 1\] \(the MI paper uses 0.5\), got 1.5"):
            demo._mi_model(argparse.Namespace(eps="2/255", mi_lam=1.5, mi_model="trained"), 10, cpu)
        with pytest.raises(VarMixupError, match="predicts 10 classes but the data has 2; pass --mi-model trained"):
            demo._mi_model(argparse.Namespace(eps="2/255", mi_lam=0.5, mi_model=str(mixup)), 2, cpu)
