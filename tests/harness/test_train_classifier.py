"""train-classifier: the held-out split, the augmentation, the command with resume, and its checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from varmixup_aug import VarMixupError
from varmixup_aug.harness import (
    PreActResNet,
    TrainClassifierConfig,
    load_classifier,
    read_classifier_metadata,
    split_holdout,
    train_classifier,
)
from varmixup_aug.harness.cli import main
from varmixup_aug.harness.train_classifier import AugmentedImages

from _helpers import REPO, smooth_images, train_args

pytestmark = pytest.mark.usefixtures("one_thread")


class TestSplitHoldout:
    def test_fixed_disjoint_and_independent_of_limit(self) -> None:
        train, held = split_holdout(100, 20, seed=0)
        assert len(held) == 20 and not set(train) & set(held) and len(train) == 80
        small, held2 = split_holdout(100, 20, seed=0, limit_train=10)
        assert held2 == held and set(small) <= set(train) and len(small) == 10
        assert split_holdout(100, 20, seed=1)[1] != held

    @pytest.mark.parametrize(("args", "kwargs", "match"), [
        ((10, 10), {}, "holdout must be an int in \\[0, 9\\]"),
        ((10, 2), {"limit_train": 0}, "limit_train must be an int >= 1"),
        ((1, 0), {}, "at least 2 images"),
    ])
    def test_errors(self, args: tuple, kwargs: dict, match: str) -> None:
        with pytest.raises(VarMixupError, match=match):
            split_holdout(*args, **kwargs)


class TestAugmentedImages:
    def test_seeded_per_epoch_and_index(self) -> None:
        images = (smooth_images(6) * 255).round().byte()
        ds = AugmentedImages(images, torch.arange(6), padding=4, seed=0)
        a, label = ds[3]
        assert a.shape == (32, 32, 3) and a.dtype.name == "uint8" and label == 3
        assert (a == ds[3][0]).all()
        outs = []
        for epoch in range(4):
            ds.set_epoch(epoch)
            outs.append(ds[3][0])
        assert any((outs[0] != o).any() for o in outs[1:])
        plain = AugmentedImages(images, torch.arange(6), padding=0, flip=False)
        assert (plain[2][0] == images[2].permute(1, 2, 0).numpy()).all()

    def test_errors(self) -> None:
        with pytest.raises(VarMixupError, match="images must be a uint8 tensor"):
            AugmentedImages(torch.rand(2, 3, 8, 8), torch.arange(2))
        with pytest.raises(VarMixupError, match="labels must have shape \\(N,\\) = \\(2,\\)"):
            AugmentedImages(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.arange(3))




class TestTrainClassifierCommand:
    @pytest.mark.parametrize("method", ["erm", "mixup", "varmixup", "varmixup-residual"])
    def test_each_method_trains_a_few_steps_and_loads(self, image_folder: Path, tmp_path: Path, method: str) -> None:
        out = tmp_path / method
        assert main(train_args(image_folder, out, method, "--max-steps", "3")) == 0
        model = load_classifier(out)
        meta = model.checkpoint_metadata
        assert meta["method"] == method and meta["global_step"] == 3 and not meta["finished"]
        assert meta["holdout"]["count"] == 20 and meta["holdout"]["train_size"] == 100
        assert meta["args"]["lr"] == 0.1 and meta["args"]["nesterov"] and meta["data"]["train_images"] == 80
        assert isinstance(model, PreActResNet) and not model.training
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
        report = json.loads((out / "train_report.json").read_text())
        assert report["steps"] == 3 and 0 <= report["holdout_accuracy"] <= 1 and report["s_per_step"] > 0
        assert json.loads((out / "holdout.json").read_text())["indices"] == meta["holdout"]["indices"]
        assert any(k.startswith("optim.") for k in _tensor_names(out / "checkpoint.safetensors"))

    def test_resume_equals_uninterrupted(self, image_folder: Path, tmp_path: Path) -> None:
        a, b = tmp_path / "a", tmp_path / "b"
        assert main(train_args(image_folder, a, "varmixup", "--max-steps", "7")) == 0  # crosses an epoch (5 steps)
        assert main(train_args(image_folder, b, "varmixup", "--max-steps", "3")) == 0
        assert main(train_args(image_folder, b, "varmixup", "--max-steps", "7", "--resume")) == 0
        ma, mb = load_classifier(a), load_classifier(b)
        meta_a, meta_b = read_classifier_metadata(a), read_classifier_metadata(b)
        assert meta_b["global_step"] == 7 and meta_b["epoch"] == 1 and meta_b["history"] == meta_a["history"]
        for (k, x), (_, y) in zip(ma.state_dict().items(), mb.state_dict().items()):
            assert torch.equal(x, y), k

    def test_library_train_classifier_errors(self, tmp_path: Path) -> None:
        with pytest.raises(VarMixupError, match="method must be one of"):
            TrainClassifierConfig(out=str(tmp_path), method="cutmix")
        cfg = TrainClassifierConfig(out=str(tmp_path), method="varmixup", batch_size=4, max_steps=1)
        images = torch.zeros(8, 3, 8, 8, dtype=torch.uint8)
        with pytest.raises(VarMixupError, match="method 'varmixup' needs a VAE"):
            train_classifier(cfg, images, torch.arange(8) % 2, num_classes=2, progress=False)
        with pytest.raises(VarMixupError, match="batch_size 128 is larger than the 8 training images"):
            train_classifier(TrainClassifierConfig(out=str(tmp_path)), images, torch.arange(8) % 2, num_classes=2)

    def test_command_errors(self, image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        out = tmp_path / "run"
        assert main(train_args(image_folder, out, "erm", "--resume")) == 2
        assert "--resume given but there is no checkpoint" in capsys.readouterr().err
        assert main(train_args(image_folder, out, "erm", "--vae", "x.safetensors")) == 2
        assert "--vae is only used by --method varmixup" in capsys.readouterr().err
        assert main(train_args(image_folder, out, "erm", "--max-steps", "1")) == 0
        assert main(train_args(image_folder, out, "mixup", "--resume")) == 2
        assert "was trained with --method erm, not mixup" in capsys.readouterr().err
        with pytest.raises(VarMixupError, match="no 'varmixup_aug_classifier' metadata"):
            read_classifier_metadata(image_folder / "vae.safetensors")

    def test_evaluate_command_loads_checkpoint(self, image_folder: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
        run = tmp_path / "erm"
        assert main(train_args(image_folder, run, "erm", "--max-steps", "2")) == 0
        results = tmp_path / "results"
        args = ["evaluate", "--checkpoint", str(run), "--data-dir", str(image_folder), "--out", str(tmp_path / "ev"),
                "--limit-test", "12", "--seed", "0", "--pgd-steps", "1", "--eot-iter", "1", "--mi-samples", "2",
                "--severities", "1", "--corruptions", "gaussian_noise,fog", "--pool-size", "60", "--select-lam",
                "--lam-grid", "0.5,0.9", "--select-limit", "10", "--adaptive-limit", "4", "--eps", "8/255",
                "--results-json", str(results / "robustness.json"), "--results-md", str(results / "robustness.md"),
                "--no-progress"]
        assert main(args) == 0
        res = json.loads((tmp_path / "ev" / "eval.json").read_text())
        assert res["n_test"] == 12 and res["checkpoint"]["method"] == "erm" and res["data"]["pool_size"] == 60
        assert res["lam_selection"]["n_images"] == 10
        assert res["settings"]["mi_lam_pl"] == res["lam_selection"]["pl"]["lam"]
        assert set(res["corruptions"]["accuracy"]) == {"gaussian_noise", "fog"}
        assert json.loads((results / "robustness.json").read_text())["erm"]["n_test"] == 12
        assert "| erm |" in (results / "robustness.md").read_text()
        assert (tmp_path / "ev" / "reliability.png").is_file() and "lam selection on 10" in capsys.readouterr().out
        assert main([*args[:-5], "--results-md", "x.md", "--no-progress"]) == 2
        assert "--results-md needs --results-json" in capsys.readouterr().err
        assert main([*args, "--adaptive-modes", "ol,xx"]) == 2
        assert "adaptive_modes must be a non-empty subset of ('pl', 'ol')" in capsys.readouterr().err
        before = (tmp_path / "ev" / "eval.json").read_bytes()
        assert main(args) == 2  # an earlier evaluation in --out is kept unless --overwrite says otherwise
        assert "already holds" in capsys.readouterr().err
        assert (tmp_path / "ev" / "eval.json").read_bytes() == before
        assert main([*args[:-1], "--overwrite", "--no-progress"]) == 0
        assert json.loads((tmp_path / "ev" / "eval.json").read_text())["n_test"] == 12




def _tensor_names(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return list(f.keys())




class TestCommittedCheckpoints:
    @pytest.mark.parametrize("method", ["erm", "mixup", "varmixup", "varmixup-residual", "vae-recon"])
    def test_load_classifier_reads_every_committed_classifier(self, method: str) -> None:
        from varmixup_aug.harness import FastCifarNet

        run = REPO / "results" / "cifar10-fast" / method
        model = load_classifier(run)
        assert isinstance(model, FastCifarNet) and not model.training
        assert model.checkpoint_metadata == read_classifier_metadata(run)
        assert model.checkpoint_metadata["method"] == method
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
