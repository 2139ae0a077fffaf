"""One run per output, ``--overwrite`` that deletes nothing until the new run has a checkpoint, one resume check for
every training command, data folders that mean what they say, and flag messages (exit code 2 naming the flag)."""

from __future__ import annotations

import json
import re
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from varmixup_aug import VarMixupError
from varmixup_aug.harness import claim_run, open_image_dataset
from varmixup_aug.harness.cli import main
from varmixup_aug.harness.outputs import RunClaim

from _helpers import REPO, train_args

_VAE = ["--image-size", "32", "--latent-dim", "4", "--widths", "4,8", "--batch-size", "16", "--limit-eval", "8",
        "--checkpoint-every", "2", "--no-progress", "--num-workers", "0", "--epochs", "1"]


def vae_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["train-vae", "--data-dir", str(root), "--out", str(out), "--max-steps", "2", *_VAE, *extra]


def fast_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["train-fast", "--method", "erm", "--data-dir", str(root), "--out", str(out), "--holdout", "20",
            "--batch-size", "16", "--widths", "4,8,8", "--epochs", "1", "--max-steps", "2", "--no-progress", *extra]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.name.endswith(".lock")}


# The child pauses in its first safetensors write (temp file written, not yet renamed) until it is killed.
_PAUSED_RUN = textwrap.dedent("""
    import os, sys, time
    import varmixup_aug._io as io
    _real = io.save_file
    def slow_save(tensors, path, metadata=None):
        _real(tensors, path, metadata=metadata)
        open(os.environ["PAUSED"], "w").write(path)
        time.sleep(120)
    io.save_file = slow_save
    from varmixup_aug.harness.cli import main
    main(sys.argv[1:])
""")


def _start_paused(args: list[str], tmp_path: Path) -> subprocess.Popen:
    paused = tmp_path / "paused"
    env = {**os.environ, "PAUSED": str(paused), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    proc = subprocess.Popen([sys.executable, "-c", _PAUSED_RUN, *args], env=env, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not paused.exists():
        assert proc.poll() is None, "the first run ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return proc


class TestOneRunPerOutput:
    def test_second_run_refused_naming_the_first_and_overwrite_restored_after_a_kill(self, image_folder, tmp_path,
                                                                                    capsys):
        out = tmp_path / "vae.safetensors"
        assert main(vae_args(image_folder, out)) == 0
        before = _files(tmp_path)
        first = _start_paused(vae_args(image_folder, out, "--overwrite"), tmp_path)  # paused in its first save
        try:
            assert main(vae_args(image_folder, out, "--overwrite")) == 2
            err = capsys.readouterr().err
            assert f"locked by process {first.pid} on" in err and "(train-vae)" in err and "--out" in err
            assert all(_files(tmp_path / ".vae.safetensors.replaced")[n] == b for n, b in before.items())
        finally:
            os.kill(first.pid, signal.SIGKILL)
            first.wait()
        # The killed --overwrite had set the old run aside and written no checkpoint: the next claim puts it back,
        # even when that run is refused (here for a mistyped --data-dir).
        assert main(vae_args(tmp_path / "no-such-data", out, "--overwrite")) == 2
        assert "no-such-data" in capsys.readouterr().err
        after = _files(tmp_path)
        assert all(after[n] == b for n, b in before.items()) and not (tmp_path / ".vae.safetensors.replaced").exists()

    def test_run_folder_in_use_is_refused_at_once(self, image_folder, tmp_path, capsys):
        out = tmp_path / "run"
        with claim_run(out, resume=False, overwrite=False, what="another train-fast", run_files=("checkpoint",)):
            assert main(fast_args(image_folder, out)) == 2
        err = capsys.readouterr().err
        assert f"locked by process {os.getpid()}" in err and "another run writes into --out" in err
        assert not (out / "checkpoint.safetensors").exists()
        assert main(fast_args(image_folder, out)) == 0  # released


class TestOverwrite:
    def test_nothing_is_deleted_until_the_new_run_is_valid(self, image_folder, tmp_path, capsys):
        out = tmp_path / "run"
        assert main(train_args(image_folder, out, "erm", "--max-steps", "2")) == 0
        before = _files(out)
        assert main(train_args(tmp_path / "typo", out, "erm", "--max-steps", "2", "--overwrite")) == 2
        assert "typo" in capsys.readouterr().err and _files(out) == before
        assert main(train_args(image_folder, out, "erm", "--max-steps", "2", "--overwrite", "--batch-size", "512")) == 2
        assert "--batch-size 512 is larger than the 80 training images" in capsys.readouterr().err
        assert _files(out) == before
        assert main(train_args(image_folder, out, "erm", "--max-steps", "3", "--overwrite")) == 0
        assert json.loads((out / "train_report.json").read_text())["steps"] == 3
        assert sorted(p.name for p in out.iterdir()) == [".varmixup-aug.lock", "checkpoint.safetensors",
                                                          "holdout.json", "train_report.json"]

    def test_failure_before_the_first_checkpoint_restores(self, tmp_path):
        out = tmp_path / "run"
        out.mkdir()
        (out / "checkpoint").write_text("old")
        (out / "report").write_text("old report")
        with pytest.raises(RuntimeError, match="boom"):
            with claim_run(out, resume=False, overwrite=True, what="t", run_files=("checkpoint", "report")) as claim:
                claim.set_old_run_aside()
                assert not (out / "checkpoint").exists()
                (out / "report").write_text("new, half")
                raise RuntimeError("boom")
        assert (out / "checkpoint").read_text() == "old" and (out / "report").read_text() == "old report"
        with claim_run(out, resume=False, overwrite=True, what="t", run_files=("checkpoint", "report")) as claim:
            claim.set_old_run_aside()
            (out / "checkpoint").write_text("new")
            claim.commit()  # the first checkpoint: the old run is gone
            assert not (out / ".replaced-run").exists()
        assert (out / "checkpoint").read_text() == "new" and not (out / "report").exists()

    def test_a_killed_overwrite_gets_its_old_run_back(self, tmp_path, capsys):
        out = tmp_path / "run"
        out.mkdir()
        (out / "checkpoint").write_text("old")
        RunClaim(out, [out / "checkpoint"], True, out / ".replaced-run").set_old_run_aside()  # then "killed"
        assert not (out / "checkpoint").exists()
        with pytest.raises(VarMixupError, match="already holds a run"):
            with claim_run(out, resume=False, overwrite=False, what="t", run_files=("checkpoint",)):
                pass
        assert (out / "checkpoint").read_text() == "old" and "put back the run" in capsys.readouterr().err


class TestResume:
    def test_train_fast_refuses_a_missing_state_and_another_data_dir(self, image_folder, tmp_path, capsys):
        out = tmp_path / "run"
        assert main(fast_args(image_folder, out)) == 0
        copy = tmp_path / "copy"
        shutil.copytree(image_folder, copy)
        assert main(fast_args(copy, out, "--resume", "--max-steps", "3")) == 2
        assert f"--data-dir: '{image_folder}' -> '{copy}'" in capsys.readouterr().err
        assert main(fast_args(copy, out, "--resume", "--max-steps", "3", "--allow-changed-settings")) == 0
        ckpt = (out / "checkpoint.safetensors").read_bytes()
        (out / "train_state.safetensors").unlink()
        assert main(fast_args(copy, out, "--resume", "--max-steps", "4")) == 2
        assert "no training state at" in capsys.readouterr().err
        assert (out / "checkpoint.safetensors").read_bytes() == ckpt  # not restarted from step 0 over it

    def test_train_vae_refuses_another_data_dir(self, image_folder, tmp_path, capsys):
        out = tmp_path / "vae.safetensors"
        assert main(vae_args(image_folder, out)) == 0
        copy = tmp_path / "copy"
        shutil.copytree(image_folder, copy)
        assert main(vae_args(copy, out, "--resume", "--max-steps", "3")) == 2
        assert "--data-dir:" in capsys.readouterr().err


def _folder(root: Path, splits: dict[str, dict[str, list[tuple[int, int]]]]) -> Path:
    """An ImageFolder of tiny PNGs: ``{split: {class: [(height, width), ...]}}`` (split "" is the root)."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split, classes in splits.items():
        for name, sizes in classes.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i, (h, w) in enumerate(sizes):
                x = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8)
                Image.fromarray(x.numpy()).save(folder / f"{i}.png")
    return root


class TestDataFolders:
    def test_train_without_test_is_refused_with_the_fix(self, tmp_path, capsys):
        root = _folder(tmp_path / "data", {"train": {"a": [(32, 32)] * 4, "b": [(32, 32)] * 4}})
        with pytest.raises(VarMixupError, match=r"has train/ but no test/ \(or val/\).*--data-dir .*train"):
            open_image_dataset(root, "test")
        assert main(vae_args(root, tmp_path / "v.safetensors")) == 2
        assert "has train/ but no test/" in capsys.readouterr().err
        assert len(open_image_dataset(root / "train", "test")) == 1  # the documented 5% hold-out of train/

    def test_one_class_names_the_data_not_num_classes(self, tmp_path, capsys):
        root = _folder(tmp_path / "data", {s: {"only": [(32, 32)] * 30} for s in ("train", "test")})
        assert main(train_args(root, tmp_path / "run", "erm", "--max-steps", "1")) == 2
        err = capsys.readouterr().err
        assert "has 1 class folder ('only'); a classifier needs at least 2" in err and "num_classes" not in err

    def test_mixed_image_sizes_name_a_file(self, tmp_path, capsys):
        root = _folder(tmp_path / "data", {s: {"a": [(32, 32)] * 12, "b": [(32, 32)] * 11 + [(40, 36)]}
                                           for s in ("train", "test")})
        assert main(fast_args(root, tmp_path / "run", "--holdout", "0")) == 2
        err = capsys.readouterr().err
        assert "images differ in size" in err and "11.png is 40x36" in err and "--image-size" in err

    def test_bad_image_in_a_worker_is_one_line(self, image_folder, tmp_path, capsys):
        root = tmp_path / "data"
        shutil.copytree(image_folder, root)
        bad = root / "train" / "class3" / "broken.png"
        bad.write_text("not an image")
        args = vae_args(root, tmp_path / "v.safetensors")
        args[args.index("--num-workers") + 1] = "1"
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"{bad} is not a readable image" in err and "Traceback" not in err


class TestFlags:
    @pytest.mark.parametrize("argv,flag", [
        (["train-fast", "--method", "erm", "--max-steps", "0"], "--max-steps"),
        (["train-fast", "--method", "erm", "--max-steps", "-1"], "--max-steps"),
        (["train-fast", "--method", "erm", "--batch-size", "0"], "--batch-size"),
        (["train-vae", "--num-workers", "-1"], "--num-workers"),
        (["train-classifier", "--method", "erm", "--num-workers", "-1"], "--num-workers"),
    ])
    def test_bad_values_exit_2_naming_the_flag(self, argv, flag, tmp_path, capsys):
        with pytest.raises(SystemExit) as exc:
            main([*argv, "--data-dir", str(tmp_path / "never-read"), "--out", str(tmp_path / "out")])
        assert exc.value.code == 2 and f"argument {flag}" in capsys.readouterr().err
        assert not (tmp_path / "out").exists()

    def test_train_fast_batch_larger_than_the_data(self, image_folder, tmp_path, capsys):
        assert main(fast_args(image_folder, tmp_path / "run", "--batch-size", "512")) == 2
        assert "--batch-size 512 is larger than the 80 training images" in capsys.readouterr().err

    def test_num_workers_checked_in_the_library(self):
        from torch.utils.data import TensorDataset

        from varmixup_aug.harness import load_tensor_dataset

        with pytest.raises(VarMixupError, match=r"num_workers \(--num-workers\) must be an int >= 0.*got -1"):
            load_tensor_dataset(TensorDataset(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(2)),
                                num_workers=-1)

    @pytest.mark.parametrize("content,match", [("", "is empty, not an evidence file"),
                                               ("{not json", "not an evidence file \\(not JSON"),
                                               ("[1, 2]", "not an evidence file")])
    def test_evidence_out_on_a_foreign_file(self, content, match, tmp_path, capsys):
        out = tmp_path / "evidence.json"
        out.write_text(content)
        assert main(["evidence", str(tmp_path / "no-checkpoint"), "--data-dir", str(tmp_path), "--out", str(out),
                     "--no-progress"]) == 2
        assert re.search(match, capsys.readouterr().err)
        assert out.read_text() == content

    def test_evaluate_results_json_foreign_refused_before_the_evaluation(self, tmp_path, capsys):
        results = tmp_path / "rows.json"
        results.write_text("[]")
        assert main(["evaluate", "--checkpoint", str(tmp_path / "none"), "--data-dir", str(tmp_path),
                     "--results-json", str(results), "--no-progress"]) == 2
        assert "--results-json" in (err := capsys.readouterr().err) and "not evaluate's rows" in err
