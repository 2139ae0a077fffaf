"""ruff and mypy pass over the package, the examples and docs/make_api.py, as ``.ci/run`` checks them.

Here too, so that a change that breaks either fails the suite it is tested with, not only CI. Both read their
configuration from pyproject.toml (``[tool.ruff]``, ``[tool.mypy]``); mypy shares ``.mypy_cache/`` with
``.ci/run`` and ``test_snippets.py``, so only a fresh clone's first run is slow (about a minute of CPU).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINTED = ["varmixup_aug", "examples", "docs/make_api.py"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=900)


def test_ruff_passes() -> None:
    result = _run("ruff", "check", "--no-cache", *LINTED)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_passes() -> None:
    result = _run("mypy", "--config-file", str(REPO / "pyproject.toml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_reports_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n")
    result = _run("ruff", "check", "--no-cache", "--config", str(REPO / "pyproject.toml"), str(bad))
    assert result.returncode == 1 and "F401" in result.stdout, result.stdout + result.stderr
