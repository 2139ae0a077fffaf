"""VarMixup under real ``torch.distributed``: 2 CPU processes, gloo backend.

Every test starts two ranks with ``torch.multiprocessing.spawn``; the ranks write what
they saw to files under ``tmp_path`` (safetensors / json) and the test process checks
them. The functions the ranks run are module-level so that spawn can pickle them.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

import varmixup_aug
from varmixup_aug import VarMixup, VarMixupCollate, VarMixupDataset, VarMixupError

from _helpers import REPO, CountingVAE, tiny_conv_vae

EXAMPLE = REPO / "examples" / "ddp_train.py"
WORLD = 2
SPAWN_TIMEOUT_S = 60.0


# ----------------------------------------------------------------------------- helpers


def _spawn(fn: Callable[..., None], *args: Any, timeout: float = SPAWN_TIMEOUT_S) -> None:
    """Run ``fn(rank, WORLD, *args)`` in WORLD processes; fail (and kill them) after ``timeout``."""
    ctx = mp.spawn(fn, args=(WORLD, *args), nprocs=WORLD, join=False)
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=1.0):  # raises if a rank failed
        if time.monotonic() > deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
            for p in ctx.processes:
                p.join(5)
            pytest.fail(f"{fn.__name__}: ranks still running after {timeout:.0f} s (deadlock at a barrier?)")


def _init(rank: int, world: int, init_file: str) -> None:
    torch.set_num_threads(1)  # 2 ranks on a small CPU
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=30))


def _tiny_images(n: int = 16) -> TensorDataset:
    g = torch.Generator().manual_seed(123)  # the same data on every rank
    return TensorDataset(torch.rand(n, 3, 8, 8, generator=g), torch.arange(n) % 4)


def _load_example() -> Any:
    spec = importlib.util.spec_from_file_location("ddp_train_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- rank functions


def _draw_rank(rank: int, world: int, init_file: str, out_dir: str) -> None:
    _init(rank, world, init_file)
    try:
        vae = tiny_conv_vae()  # seeded: the same weights on every rank
        mixer = VarMixup(vae, num_classes=4, seed=0)
        first, second = mixer.draw_params(16), mixer.draw_params(16)
        # The same seed through VarMixupCollate in a forked DataLoader worker of this rank. The
        # global RNG (which seeds the workers) is equal on both ranks, so only the rank differs.
        loader = DataLoader(_tiny_images(16), batch_size=16, num_workers=1, multiprocessing_context="fork",
                            collate_fn=VarMixupCollate(vae, num_classes=4, seed=0))
        torch.manual_seed(1)
        _, worker_targets = next(iter(loader))
        save_file({
            "lam": first.lam, "index": first.index, "lam2": second.lam, "index2": second.index,
            "noise_seed": torch.tensor([first.noise_seed]), "worker_targets": worker_targets,
        }, os.path.join(out_dir, f"rank{rank}.safetensors"))
    finally:
        dist.destroy_process_group()


def _epochs_rank(rank: int, world: int, init_file: str, out_dir: str, torch_seed: int) -> None:
    """seed=0 with 2 workers (persistent and not) over 2 epochs, torch seeded by the caller's choice; and seed=None
    with torch seeded identically on every rank, in the main process and in workers."""
    _init(rank, world, init_file)
    try:
        torch.manual_seed(torch_seed)
        out: dict[str, Tensor] = {}
        for persistent in (False, True):
            collate = VarMixupCollate(None, num_classes=4, space="input", seed=0)
            loader = DataLoader(_tiny_images(16), batch_size=8, num_workers=2, persistent_workers=persistent,
                                multiprocessing_context="fork", collate_fn=collate)
            for epoch in range(2):
                out[f"p{int(persistent)}_e{epoch}"] = torch.cat([t for _, t in loader])
        torch.manual_seed(0)  # as most DDP scripts do, on every rank
        x, y = _tiny_images(16).tensors
        out["none_main"] = VarMixup(None, num_classes=4, space="input")(x, y)[1]
        loader = DataLoader(_tiny_images(16), batch_size=8, num_workers=2, multiprocessing_context="fork",
                            collate_fn=VarMixupCollate(None, num_classes=4, space="input"))
        out["none_workers"] = torch.cat([t for _, t in loader])
        save_file(out, os.path.join(out_dir, f"rank{rank}.safetensors"))
    finally:
        dist.destroy_process_group()


def _cache_rank(rank: int, world: int, init_file: str, cache_dir: str, out_dir: str) -> None:
    _init(rank, world, init_file)
    try:
        vae = CountingVAE(tiny_conv_vae())
        data = _tiny_images(24)
        first = VarMixupDataset(data, vae, cache_path=cache_dir, batch_size=8, progress=False)
        calls_first = vae.encode_calls
        again = VarMixupDataset(data, vae, cache_path=cache_dir, batch_size=8, progress=False)  # cache exists now
        calls_again = vae.encode_calls - calls_first
        save_file({"mu": first.mu, "logvar": first.logvar, "labels": first.labels, "mu_again": again.mu},
                  os.path.join(out_dir, f"rank{rank}.safetensors"))
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump({"encode_calls": calls_first, "encode_calls_again": calls_again,
                       "cache_file": str(first.cache_file)}, f)
        dist.barrier()  # neither rank tears gloo down while the other still talks to it
    finally:
        dist.destroy_process_group()


def _no_cache_rank(rank: int, world: int, init_file: str, out_dir: str) -> None:
    _init(rank, world, init_file)
    try:
        with pytest.raises(VarMixupError, match="cache_path is required under torch.distributed"):
            VarMixupDataset(_tiny_images(8), tiny_conv_vae(), progress=False)
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump({"raised": True, "world_size": dist.get_world_size()}, f)
    finally:
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- tests


class TestDistributedVarMixup:
    def _draws(self, tmp_path: Path, name: str) -> list[dict[str, Tensor]]:
        out = tmp_path / name
        out.mkdir()
        _spawn(_draw_rank, str(tmp_path / f"{name}.init"), str(out))
        return [load_file(str(out / f"rank{r}.safetensors")) for r in range(WORLD)]

    def test_ranks_draw_different_reproducible_streams(self, tmp_path: Path) -> None:
        run1 = self._draws(tmp_path, "run1")
        run2 = self._draws(tmp_path, "run2")
        r0, r1 = run1
        # Same seed, different ranks: different lam, pairs, noise, and worker draws.
        assert not torch.equal(r0["lam"], r1["lam"])
        assert not torch.equal(r0["index"], r1["index"])
        assert not torch.equal(r0["noise_seed"], r1["noise_seed"])
        assert not torch.equal(r0["worker_targets"], r1["worker_targets"])
        for r in run1:
            assert sorted(r["index"].tolist()) == list(range(16))
            assert bool(((r["lam"] >= 0) & (r["lam"] <= 1)).all())
            assert not torch.equal(r["lam"], r["lam2"])  # the stream moves on within a rank
            assert torch.allclose(r["worker_targets"].sum(1), torch.ones(16))
        # Re-running the job gives every rank the same draws again.
        for a, b in zip(run1, run2):
            assert a.keys() == b.keys()
            for key in a:
                assert torch.equal(a[key], b[key]), key

    def test_seed_alone_reproduces_workers_and_epochs_on_every_rank(self, tmp_path: Path) -> None:
        runs = []
        for name, torch_seed in (("a", 1), ("b", 2)):  # torch seeded differently in the two runs
            out = tmp_path / name
            out.mkdir()
            _spawn(_epochs_rank, str(tmp_path / f"{name}.init"), str(out), torch_seed)
            runs.append([load_file(str(out / f"rank{r}.safetensors")) for r in range(WORLD)])
        for key in ("p0_e0", "p0_e1", "p1_e0", "p1_e1"):
            for r in range(WORLD):
                assert torch.equal(runs[0][r][key], runs[1][r][key]), (key, r)  # seed alone reproduces
            assert not torch.equal(runs[0][0][key], runs[0][1][key]), key  # ranks differ
        for r in range(WORLD):
            for p in ("p0", "p1"):
                assert not torch.equal(runs[0][r][f"{p}_e0"], runs[0][r][f"{p}_e1"])  # epochs differ
        for key in ("none_main", "none_workers"):  # seed=None, torch seeded alike: ranks still differ
            assert not torch.equal(runs[0][0][key], runs[0][1][key]), key

    def test_ddp_example_trains_and_saves_loadable_checkpoint(self, tmp_path: Path) -> None:
        out = tmp_path / "run"
        env = dict(os.environ)
        # The child imports the same varmixup_aug as this process (installed or from the source tree).
        package_root = str(Path(varmixup_aug.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        cmd = [sys.executable, str(EXAMPLE), "--spawn", "2", "--synthetic", "--tiny-vae", "--max-steps", "3",
               "--limit", "64", "--batch-size", "8", "--image-size", "16", "--width", "8", "--out", str(out)]
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"

        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["world_size"] == 2 and metrics["backend"] == "gloo" and metrics["steps"] == 3
        losses = metrics["losses"]
        assert sorted(losses) == ["0", "1"]
        for per_rank in losses.values():
            assert len(per_rank) == 3 and all(math.isfinite(v) for v in per_rank)
        assert losses["0"] != losses["1"]  # different shards and different mixup draws
        assert "done: 3 steps on 2 ranks, all losses finite: True" in proc.stderr

        path = out / "classifier.safetensors"
        state = load_file(str(path))
        example = _load_example()
        model = example.build_classifier(channels=3, num_classes=10, width=8)
        model.load_state_dict(state)  # strict: same keys and shapes
        for key, value in model.state_dict().items():
            assert torch.equal(value, state[key])
        reloaded = example.load_classifier(path).eval()
        with torch.no_grad():
            logits = reloaded(torch.rand(2, 3, 16, 16))
        assert logits.shape == (2, 10) and bool(torch.isfinite(logits).all())


class TestDistributedLatentCache:
    def test_rank0_encodes_once_and_ranks_share_the_cache(self, tmp_path: Path) -> None:
        cache, out = tmp_path / "cache", tmp_path / "out"
        out.mkdir()
        _spawn(_cache_rank, str(tmp_path / "pg.init"), str(cache), str(out))
        counts = [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]
        tensors = [load_file(str(out / f"rank{r}.safetensors")) for r in range(WORLD)]

        assert counts[0]["encode_calls"] == 3  # 24 items in batches of 8, on rank 0 only
        assert counts[1]["encode_calls"] == 0
        assert [c["encode_calls_again"] for c in counts] == [0, 0]  # everyone reads the existing file
        assert counts[0]["cache_file"] == counts[1]["cache_file"]
        manifest = Path(counts[0]["cache_file"]).name
        assert sorted(p.name for p in cache.iterdir()) == [manifest, f"{manifest}.shards"]
        assert not [p for p in cache.rglob("*") if ".tmp-" in p.name]  # no stray temp files

        for key in ("mu", "logvar", "labels"):
            assert torch.equal(tensors[0][key], tensors[1][key]), key
        for t in tensors:
            assert torch.equal(t["mu"], t["mu_again"])
        with torch.no_grad():
            mu, _ = tiny_conv_vae().encode(_tiny_images(24).tensors[0])
        assert torch.allclose(tensors[0]["mu"], mu, atol=1e-6)
        assert torch.equal(tensors[0]["labels"], torch.arange(24) % 4)

    def test_dataset_without_cache_path_is_refused_under_ddp(self, tmp_path: Path) -> None:
        out = tmp_path / "out"
        out.mkdir()
        _spawn(_no_cache_rank, str(tmp_path / "pg.init"), str(out))
        for r in range(WORLD):
            assert json.loads((out / f"rank{r}.json").read_text()) == {"raised": True, "world_size": 2}
