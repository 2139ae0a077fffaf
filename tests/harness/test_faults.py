"""SIGKILL in the middle of a write: a VAE training run and a latent-cache build leave nothing corrupt or stray,
and the rerun recovers (resume / rebuild)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch

from _helpers import REPO, tiny_conv_vae

# The child pauses inside the atomic write (temp file written, not yet renamed) on the N-th write, then waits
# to be killed.
_PAUSE = textwrap.dedent("""
    import os, sys, time
    import varmixup_aug._io as io
    _real, _count = io.save_file, [0]
    def slow_save(tensors, path, metadata=None):
        _real(tensors, path, metadata=metadata)
        _count[0] += 1
        if _count[0] == int(os.environ["PAUSE_AT"]):
            open(os.environ["PAUSED"], "w").write(path)
            time.sleep(120)
    io.save_file = slow_save
    _real_bytes = io._write_bytes
    def slow_bytes(path, data):
        _real_bytes(path, data)
        if os.environ.get("PAUSE_NAME") and path.name.startswith("." + os.environ["PAUSE_NAME"] + ".tmp-"):
            open(os.environ["PAUSED"], "w").write(str(path))
            time.sleep(120)
    io._write_bytes = slow_bytes
""")


def _kill_when_paused(code: str, tmp_path: Path, pause_at: int = 0, pause_name: str = "") -> str:
    """Run ``code`` in a child that pauses in the ``pause_at``-th safetensors write, or in the text write of the
    file named ``pause_name``, and SIGKILL it there; return the temp file it was writing."""
    paused = tmp_path / "paused"
    env = {**os.environ, "PAUSE_AT": str(pause_at), "PAUSE_NAME": pause_name, "PAUSED": str(paused),
           "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    proc = subprocess.Popen([sys.executable, "-c", _PAUSE + code], env=env, cwd=tmp_path)
    deadline = time.monotonic() + 60
    while not paused.exists():
        assert proc.poll() is None, "child ended before the write"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return paused.read_text()


def _strays(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


def test_killed_vae_training_resumes(image_folder, tmp_path):
    from varmixup_aug import load_vae
    from varmixup_aug.harness.cli import main

    out = tmp_path / "vae.safetensors"
    args = ["train-vae", "--data-dir", str(image_folder), "--out", str(out), "--latent-dim", "4", "--widths", "4,8",
            "--batch-size", "16", "--limit-eval", "8", "--checkpoint-every", "1", "--max-steps", "4", "--epochs", "1",
            "--no-progress", "--num-workers", "0"]
    code = f"from varmixup_aug.harness.cli import main; main({args!r})"
    tmp = _kill_when_paused(code, tmp_path, pause_at=2)  # the second training-state save
    assert ".tmp-" in Path(tmp).name and Path(tmp).exists()  # killed: the temp file is there, the target intact
    state = Path(str(out) + ".train-state.safetensors")
    assert state.is_file() and not out.exists()
    from varmixup_aug._io import read_header

    assert read_header(state, "varmixup_aug_train_state", writer="train-vae")["global_step"] == 1
    assert main(args + ["--resume"]) == 0
    assert _strays(tmp_path) == [] and load_vae(out) is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(  # nothing else: no temp or half file
        ["paused", out.name, state.name, out.name + ".report.json", f".{out.name}.lock"])  # the run's lock file


def test_killed_cache_build_rebuilds(tmp_path):
    from varmixup_aug import VarMixupDataset

    code = textwrap.dedent("""
        import torch
        from torch.utils.data import TensorDataset
        from varmixup_aug import VarMixupDataset
        from _helpers import tiny_conv_vae
        vae = tiny_conv_vae()
        x = torch.rand(40, 3, 8, 8, generator=torch.Generator().manual_seed(0))
        VarMixupDataset(TensorDataset(x, torch.arange(40) % 4), vae, cache_path="cache", progress=False)
    """)
    tmp = _kill_when_paused(code, tmp_path, pause_at=1)
    cache = tmp_path / "cache"
    [shards] = list(cache.iterdir())  # killed while writing its first shard: no manifest, so no cache to serve
    assert shards.name.endswith(".shards") and (tmp_path / tmp).parent == shards and (tmp_path / tmp).exists()
    assert not [p for p in shards.iterdir() if p.name.endswith(".safetensors")]  # no half shard
    from torch.utils.data import TensorDataset

    vae = tiny_conv_vae()
    x = torch.rand(40, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    ds = VarMixupDataset(TensorDataset(x, torch.arange(40) % 4), vae, cache_path=cache, progress=False)
    assert sorted(p.name for p in cache.iterdir()) == sorted([ds.cache_file.name, shards.name]) and len(ds) == 40
    assert not [p for p in shards.iterdir() if ".tmp-" in p.name]  # the dead build's temp file is gone
    torch.testing.assert_close(ds.mu, vae.encode(x)[0])


def test_killed_report_write_leaves_no_half_report(image_folder, tmp_path):
    """SIGKILL while train-fast writes train_report.json: no half report beside the checkpoint; --resume writes it."""
    from varmixup_aug.harness.cli import main

    out = tmp_path / "run"
    args = ["train-fast", "--method", "erm", "--data-dir", str(image_folder), "--out", str(out), "--holdout", "20",
            "--batch-size", "16", "--widths", "4,8,8", "--epochs", "1", "--max-steps", "2", "--no-progress"]
    code = f"from varmixup_aug.harness.cli import main; main({args!r})"
    tmp = Path(_kill_when_paused(code, tmp_path, pause_name="train_report.json"))
    assert tmp.exists() and tmp.parent == out  # the whole report was in the temp file, never at its name
    assert (out / "checkpoint.safetensors").is_file() and not (out / "train_report.json").exists()
    assert main(args + ["--resume"]) == 0
    assert json.loads((out / "train_report.json").read_text())["steps"] == 2
    assert _strays(out) == []


def test_killed_results_write_keeps_every_row(tmp_path):
    """SIGKILL while evaluate rewrites --results-json: the combined file keeps its 12 rows whole; the next merge works."""
    from varmixup_aug.harness.cli.evaluate import _merge_row

    path = tmp_path / "robustness.json"
    rows = {f"run{i:02d}": {"clean": {"accuracy": i / 100}} for i in range(12)}
    path.write_text(json.dumps(rows))
    code = textwrap.dedent(f"""
        from pathlib import Path
        from varmixup_aug.harness.cli.evaluate import _merge_row
        _merge_row(Path({str(path)!r}), "new", {{"clean": {{"accuracy": 0.5}}, "pad": "x" * 100000}}, None)
    """)
    tmp = Path(_kill_when_paused(code, tmp_path, pause_name="robustness.json"))
    assert tmp.stat().st_size > 100000  # the new file was written in full, beside the old one
    assert json.loads(path.read_text()) == rows
    _merge_row(path, "new", {"clean": {"accuracy": 0.5}}, None)  # the killed holder's lock is gone with it
    assert sorted(json.loads(path.read_text())) == sorted([*rows, "new"]) and _strays(tmp_path) == []
