"""Smoke test: the benchmark script runs end to end in --quick mode (no timing assertions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import varmixup_aug

from conftest import REPO


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``benchmarks/<name>`` with the installed package importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(os.path.dirname(os.path.dirname(varmixup_aug.__file__))), env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / name), *args], capture_output=True, text=True,
                          env=env, timeout=300)


class TestBenchmarkScript:
    def test_quick_run_writes_table_json_and_plot(self, tmp_path):
        out, plot = tmp_path / "results.json", tmp_path / "scaling.png"
        proc = run_script("run.py", "--quick", "--out", str(out), "--plot", str(plot))
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "VarMixup batch generation" in proc.stdout and "Ratios" in proc.stdout
        result = json.loads(out.read_text())
        assert set(result["mi_peak_rss_growth_mib"]) == {"256", "1024", "all"}
        assert result["batch_generation"]["ratios"] and plot.stat().st_size > 0
        assert (tmp_path / "profile.txt").is_file()


class TestRealUseBenchmark:
    def test_quick_run_writes_step_and_epoch_tables(self, tmp_path):
        out = tmp_path / "real-use.json"
        proc = run_script("real_use.py", "--quick", "--out", str(out))
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "Training step" in proc.stdout and "Training epoch" in proc.stdout
        result = json.loads(out.read_text())
        assert set(result["training_step"]) == {"cifar_resnet18", "fast_cifar_net", "small_cnn (worst case)"}
        assert result["training_step"]["cifar_resnet18"]["parameters"] == 11173962
        assert all(r["ratio_varmixup_to_torchvision"] > 0 for r in result["training_epoch"].values())
