"""Smoke test: the benchmark script runs end to end in --quick mode (no timing assertions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import varmixup_aug

from conftest import REPO


class TestBenchmarkScript:
    def test_quick_run_writes_table_json_and_plot(self, tmp_path):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(os.path.dirname(os.path.dirname(varmixup_aug.__file__))), env.get("PYTHONPATH")) if p)
        out, plot = tmp_path / "results.json", tmp_path / "scaling.png"
        proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick", "--out", str(out),
                               "--plot", str(plot)], capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "VarMixup batch generation" in proc.stdout and "Ratios" in proc.stdout
        result = json.loads(out.read_text())
        assert set(result["mi_peak_rss_growth_mib"]) == {"256", "1024", "all"}
        assert result["batch_generation"]["ratios"] and plot.stat().st_size > 0
        assert (tmp_path / "profile.txt").is_file()
