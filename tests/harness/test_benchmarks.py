"""Smoke test: the benchmark script runs end to end in --quick mode (no timing assertions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import varmixup_aug

from _helpers import REPO


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
        for row in result["training_epoch"].values():
            assert row["throughput_ratio_varmixup_cached"] > 0 and row["throughput_ratio_varmixup_cached_main"] > 0


class TestCountMacs:
    def test_counts_the_shared_resnet18_and_the_shipped_vae(self):
        proc = run_script("count_macs.py")  # imports its ResNet-18 from the sibling _common.py
        assert proc.returncode == 0, proc.stderr[-2000:]
        rows = dict(line.split("  ", 1) for line in proc.stdout.splitlines())
        assert float(rows["CIFAR ResNet-18 forward"].split()[0]) == 555.4  # README's figure
        assert float(rows["VAE decode (shipped cifar10)"].split()[0]) > 0


class TestInterleaved:
    def test_rounds_alternate_and_ratios_are_per_round(self):
        import importlib.util

        spec = importlib.util.spec_from_file_location("_common", REPO / "benchmarks" / "_common.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        calls = []
        slow = iter([2.0, 4.0, 6.0])
        fast = iter([1.0, 1.0, 2.0])
        result = module.interleaved({"base": lambda: calls.append("b") or next(fast),
                                     "other": lambda: calls.append("o") or next(slow)}, rounds=3)
        assert calls == ["b", "o"] * 3
        assert result["base_s"] == 1.0 and result["other_s"] == 4.0
        assert result["ratio_other"] == 3.0  # per round 2, 4, 3: median 3


class TestPerfSuite:
    def test_committed_docs_match_the_committed_json(self):
        proc = run_script("summary.py", "--check")
        assert proc.returncode == 0, proc.stderr

    def test_quick_run_feeds_the_summary(self, tmp_path):
        import shutil

        out = tmp_path / "perf.json"
        proc = run_script("perf.py", "--quick", "--out", str(out))
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "Roofline" in proc.stdout and "Training epoch" in proc.stdout
        result = json.loads(out.read_text())
        assert set(result["runs"]) == {"roofline", "cached_generation", "training_step", "training_epoch"}
        assert result["roofline"]["flops_per_batch"]["decode"] > 0
        assert result["cached_generation"]["rows"]["varmixup_fp32"]["max_abs_diff_from_fp32"] == 0
        (tmp_path / "docs").mkdir()
        shutil.copy(REPO / "README.md", tmp_path / "README.md")
        shutil.copy(REPO / "docs" / "benchmarks.md", tmp_path / "docs" / "benchmarks.md")
        args = ("--results", str(out), "--root", str(tmp_path))
        stale = run_script("summary.py", "--check", *args)
        assert stale.returncode == 1 and "stale" in stale.stderr  # other figures than the committed ones
        assert run_script("summary.py", *args).returncode == 0
        assert run_script("summary.py", "--check", *args).returncode == 0
        text = (tmp_path / "docs" / "benchmarks.md").read_text()
        assert f"{result['cached_generation']['rows']['varmixup_bf16']['images_per_s']:,.0f} |" in text
