"""The file lock shared by the latent cache and the CLI: one holder at a time, named in the refusal."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from varmixup_aug._errors import VarMixupError
from varmixup_aug._lock import file_lock, lock_holder

HOLD = ("import sys, time; from varmixup_aug._lock import file_lock\n"
        "with file_lock(sys.argv[1], timeout=0, what='holder test'):\n"
        "    print('held', flush=True); time.sleep(float(sys.argv[2]))\n")


def _start_holder(path: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE,
                            text=True, cwd=Path(__file__).resolve().parents[2])
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


class TestFileLock:
    def test_a_second_holder_is_refused_naming_the_first(self, tmp_path: Path) -> None:
        lock = tmp_path / "run.lock"
        proc = _start_holder(lock, 30)
        try:
            assert lock_holder(lock)["pid"] == proc.pid  # type: ignore[index]
            with pytest.raises(VarMixupError, match=rf"locked by process {proc.pid} .*holder test"):
                with file_lock(lock, timeout=0):
                    pass
        finally:
            proc.kill()
            proc.wait()

    def test_waits_for_the_holder_then_takes_the_lock(self, tmp_path: Path) -> None:
        lock = tmp_path / "run.lock"
        proc = _start_holder(lock, 0.5)
        start = time.monotonic()
        with file_lock(lock, timeout=30, what="waiter"):
            assert lock_holder(lock)["pid"] == os.getpid()  # type: ignore[index]
        assert time.monotonic() - start < 25
        proc.wait()

    def test_a_killed_holder_leaves_no_stale_lock(self, tmp_path: Path) -> None:
        lock = tmp_path / "run.lock"
        proc = _start_holder(lock, 60)
        proc.kill()
        proc.wait()
        with file_lock(lock, timeout=0):
            pass

    def test_timeout_message_says_how_long_it_waited(self, tmp_path: Path) -> None:
        lock = tmp_path / "run.lock"
        proc = _start_holder(lock, 30)
        try:
            with pytest.raises(VarMixupError, match=r"after waiting 0.2 s; wait for it"):
                with file_lock(lock, timeout=0.2):
                    pass
        finally:
            proc.kill()
            proc.wait()
