"""examples/reproduce_evidence.sh: every command it would run parses with the real ``varmixup-aug`` parser."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from _helpers import REPO

SCRIPT = REPO / "examples" / "reproduce_evidence.sh"

# Stands in for varmixup-aug: parses the arguments with the real parser, records them, runs nothing.
STUB = """
import shlex, sys
from varmixup_aug.harness.cli import build_parser
build_parser().parse_args(sys.argv[1:])
with open(sys.argv[0] + ".log", "a") as log:
    log.write(shlex.join(sys.argv[1:]) + "\\n")
"""


def run_script(tmp_path: Path, **env: str) -> list[list[str]]:
    stub = tmp_path / "cli.py"
    stub.write_text(STUB)
    cli = f"{shlex.quote(sys.executable)} {shlex.quote(str(stub))}"
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CLI": cli, "SUMMARY": "0", **env})
    assert proc.returncode == 0, proc.stderr
    log = tmp_path / "cli.py.log"
    return [shlex.split(line) for line in log.read_text().splitlines()] if log.is_file() else []


@pytest.mark.skipif(sys.platform == "win32", reason="a bash script")
class TestReproduceScript:
    def test_every_stage_of_the_papers_regime_parses(self, tmp_path: Path) -> None:
        out = tmp_path / "seed0"
        stages = "train,evidence,transfer,reference,published,adaptive,autoattack"
        calls = run_script(tmp_path, OUT=str(out), SEED="0", LABEL_SMOOTHING="0", PRECISION="bf16",
                           METHODS="erm mixup", STAGES=stages, SWEEP_N="20", BINARIZATION_DECOYS="100")
        commands = [c[0] for c in calls]
        assert commands.count("train-fast") == 2 and commands.count("evidence") == 9
        sweep = next(c for c in calls if "eot_sweep,apgd,binarization" in c)
        assert sweep[sweep.index("--eot-sweep-n") + 1] == "20" and sweep[sweep.index("--attack-precision") + 1] == "auto"
        assert sweep[sweep.index("--binarization-decoys") + 1] == "100"
        reference = [c for c in calls if str(out / "erm" / "evidence-reference-pool.json") in c]
        assert len(reference) == 1 and reference[0][reference[0].index("--pool-source") + 1] == "test-augmented"
        train = next(c for c in calls if c[0] == "train-fast")
        assert train[train.index("--label-smoothing") + 1] == "0" and "--resume" not in train
        assert train[train.index("--adv-attack") + 1] == "n-fgsm"

    def test_a_finished_run_is_not_trained_again(self, tmp_path: Path) -> None:
        out = tmp_path / "seed0"
        (out / "erm").mkdir(parents=True)
        (out / "erm" / "train_report.json").write_text("{}")
        (out / "mixup").mkdir()
        (out / "mixup" / "train_state.safetensors").write_bytes(b"")
        calls = run_script(tmp_path, OUT=str(out), LABEL_SMOOTHING="0", METHODS="erm mixup", STAGES="train")
        assert len(calls) == 1 and calls[0][calls[0].index("--method") + 1] == "mixup" and "--resume" in calls[0]
