"""``examples/lightning_varmixup.py``: VarMixupCollate in a LightningDataModule, MIPredictor in validation.

The DDP test runs this file as a script (``python test_lightning.py OUT_DIR``): Lightning's
``strategy="ddp"`` starts rank 1 by running the same command again, so the ranks must come from a
script, not from inside pytest. Each rank writes the soft targets of every training batch to
``OUT_DIR/rank{r}.json``; the test reads ``lam`` back from them.

Synthetic data with one image per class (32 images, 32 classes) makes ``lam`` readable from the
targets: row ``i`` is ``lam_i * e(y_i) + (1 - lam_i) * e(y_j)`` with ``y_i != y_j``, so its two
non-zero entries are ``lam_i`` and ``1 - lam_i``. The multiset of ``min(lam, 1 - lam)`` in a batch
does not depend on which images a rank holds, only on the random stream it draws from.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from _examples import EXAMPLES, load_example

L = pytest.importorskip("lightning")

HERE = Path(__file__).resolve()
ITEMS = 32  # = classes: one image per class
BATCH = 8
EPOCHS = 2
DDP_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def example() -> ModuleType:
    return load_example("lightning_varmixup")


class TargetRecorder(L.Callback):
    """Keeps the soft targets of every training batch; writes them per rank at the end."""

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.out_dir = Path(out_dir)
        self.batches: list[dict[str, Any]] = []

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        images, targets = batch
        self.batches.append({"epoch": trainer.current_epoch, "batch": batch_idx, "targets": targets.tolist(),
                             "pixel_range": [float(images.min()), float(images.max())]})

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        dist = torch.distributed
        record = {
            "rank": trainer.global_rank, "world_size": trainer.world_size,
            "backend": dist.get_backend() if dist.is_initialized() else None,
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
            "batches": self.batches,
        }
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def lam_profile(targets: list[list[float]]) -> list[float]:
    """Sorted ``min(lam, 1 - lam)`` of a batch (0 for an unmixed row)."""
    out = []
    for row in targets:
        nonzero = sorted(v for v in row if v > 1e-6)
        out.append(nonzero[0] if len(nonzero) == 2 else 0.0)
    return sorted(out)


def row_classes(targets: list[list[float]]) -> set[int]:
    return {c for row in targets for c, v in enumerate(row) if v > 1e-6}


def run_ddp(out_dir: str) -> None:
    """One rank of the DDP run (the script entry point)."""
    load_example("lightning_varmixup").main(
        ["--synthetic", "--num-classes", str(ITEMS), "--limit", str(ITEMS), "--limit-val", str(ITEMS),
         "--pool-size", str(ITEMS), "--batch-size", str(BATCH), "--epochs", str(EPOCHS), "--workers", "1",
         "--mi-samples", "4", "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--seed", "0",
         "--out", str(Path(out_dir) / "run")],
        callbacks=[TargetRecorder(out_dir)],
    )


class TestVarMixupDataModule:
    def test_train_batches_are_soft_targets(self, example):
        dm = example.VarMixupDataModule(None, num_classes=4, batch_size=8, num_workers=0, limit=16, pool_size=8)
        dm.prepare_data()
        dm.setup("fit")
        images, targets = next(iter(dm.train_dataloader()))
        assert images.shape == (8, 3, 32, 32) and images.min() >= 0 and images.max() <= 1
        assert targets.shape == (8, 4)
        torch.testing.assert_close(targets.sum(1), torch.ones(8))
        clean_images, labels = next(iter(dm.val_dataloader()))
        assert clean_images.shape[1:] == (3, 32, 32) and labels.dtype == torch.int64
        assert len(dm.mi_pool()) == 8


class TestVarMixupClassifier:
    def test_trains_and_validates_with_mixup_inference(self, example, tmp_path):
        dm = example.VarMixupDataModule(None, num_classes=4, batch_size=8, num_workers=0, limit=32, limit_val=16,
                                        pool_size=16)
        model = example.VarMixupClassifier(4, width=8, mi_samples=3)
        trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, default_root_dir=tmp_path, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            num_sanity_val_steps=0)
        trainer.fit(model, datamodule=dm)
        metrics = trainer.callback_metrics
        assert {"train_loss", "val_loss", "val_acc", "val_mi_acc"} <= set(metrics)
        assert all(math.isfinite(float(metrics[k])) for k in ("train_loss", "val_loss"))
        assert 0.0 <= float(metrics["val_mi_acc"]) <= 1.0
        assert all(k.startswith("net.") for k in model.state_dict())  # MIPredictor is not a submodule


class TestLightningDDP:
    def test_ranks_and_epochs_draw_differently(self, tmp_path):
        # examples/ on the path, as for a script run from there: the example imports its sibling _synthetic
        path = os.pathsep.join(p for p in (str(EXAMPLES), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PYTHONPATH": path}
        start = time.monotonic()
        proc = subprocess.run([sys.executable, str(HERE), str(tmp_path)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=DDP_TIMEOUT_S)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
        ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
        print(f"DDP run: {time.monotonic() - start:.1f} s")

        for r, record in enumerate(ranks):
            assert (record["rank"], record["world_size"], record["backend"]) == (r, 2, "gloo")
            assert math.isfinite(record["metrics"]["train_loss"]) and "val_mi_acc" in record["metrics"]
            batches_per_epoch = ITEMS // 2 // BATCH
            assert [(b["epoch"], b["batch"]) for b in record["batches"]] == [
                (e, i) for e in range(EPOCHS) for i in range(batches_per_epoch)]
            for b in record["batches"]:
                torch.testing.assert_close(torch.tensor(b["targets"]).sum(1), torch.ones(BATCH))
                assert 0.0 <= b["pixel_range"][0] and b["pixel_range"][1] <= 1.0

        by_key = [{(b["epoch"], b["batch"]): b["targets"] for b in record["batches"]} for record in ranks]
        for key in by_key[0]:
            # Ranks: different lam draws for the same step ...
            assert not torch.allclose(torch.tensor(lam_profile(by_key[0][key])),
                                      torch.tensor(lam_profile(by_key[1][key])))
        for epoch in range(EPOCHS):
            # ... and disjoint shards (Lightning's DistributedSampler under our collate).
            classes = [set().union(*(row_classes(t) for (e, _), t in keys.items() if e == epoch)) for keys in by_key]
            assert classes[0].isdisjoint(classes[1]) and len(classes[0] | classes[1]) == ITEMS
        for keys in by_key:
            # Epochs: different draws at the same position.
            for (epoch, batch), targets in keys.items():
                if epoch == 0:
                    assert not torch.allclose(torch.tensor(lam_profile(targets)),
                                              torch.tensor(lam_profile(keys[(1, batch)])))


if __name__ == "__main__":
    run_ddp(sys.argv[1])
