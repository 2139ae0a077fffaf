"""Smoke test: the benchmark script runs end to end in --quick mode (no timing assertions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import pytest

import varmixup_aug

from _helpers import REPO


# A hang guard, not a speed limit: a child is stopped when it (with its children) has used no CPU time for
# _STALL_S seconds, or at the far cap _CAP_S. A loaded machine slows a child down but its CPU time still grows.
_STALL_S = float(os.environ.get("VARMIXUP_TEST_STALL_S", 300))
_CAP_S = float(os.environ.get("VARMIXUP_TEST_CAP_S", 3600))


def _cpu_seconds(pid: int) -> float | None:
    """CPU seconds used by ``pid`` and its live descendants (Linux ``/proc``); None where ``/proc`` is missing."""
    if not os.path.isdir("/proc"):
        return None
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
        stats[int(entry)] = (int(fields[1]), ticks / os.sysconf("SC_CLK_TCK"))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += stats.get(current, (0, 0.0))[1]
        todo += [p for p, (parent, _) in stats.items() if parent == current]
    return total


def run_guarded(cmd: list[str], *, env: dict[str, str] | None = None, stall_s: float = _STALL_S,
                cap_s: float = _CAP_S) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd)`` that fails only when the child hangs (no CPU progress for ``stall_s``) or passes
    ``cap_s``; without ``/proc`` only the cap applies."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env)
        start = last_progress = time.monotonic()
        last_cpu = -1.0
        while proc.poll() is None:
            time.sleep(0.25)
            now, cpu = time.monotonic(), _cpu_seconds(proc.pid)
            if cpu is None or cpu > last_cpu:
                last_cpu, last_progress = (cpu if cpu is not None else last_cpu), now
            reason = (f"used no CPU time for {stall_s:g} s (hung)" if now - last_progress > stall_s
                      else f"ran past the {cap_s:g} s cap" if now - start > cap_s else "")
            if reason:
                proc.kill()
                proc.wait()
                out.seek(0), err.seek(0)
                raise AssertionError(f"{cmd[1:3]} {reason}; stderr tail: {err.read()[-2000:]}")
        out.seek(0), err.seek(0)
        return subprocess.CompletedProcess(cmd, proc.returncode, out.read(), err.read())


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``benchmarks/<name>`` with the installed package importable, under the hang guard."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(os.path.dirname(os.path.dirname(varmixup_aug.__file__))), env.get("PYTHONPATH")) if p)
    return run_guarded([sys.executable, str(REPO / "benchmarks" / name), *args], env=env)


class TestHangGuard:
    def test_stops_a_child_that_uses_no_cpu(self):
        t0 = time.monotonic()
        with pytest.raises(AssertionError, match="used no CPU time for 1 s"):
            run_guarded([sys.executable, "-c", "import time; time.sleep(60)"], stall_s=1)
        assert time.monotonic() - t0 < 30

    def test_lets_a_slow_busy_child_finish(self):
        busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 2.5: pass\nprint('done')"
        proc = run_guarded([sys.executable, "-c", busy], stall_s=2)
        assert proc.returncode == 0 and proc.stdout.strip() == "done"


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
