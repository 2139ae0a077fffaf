"""Every file the package and the harness write goes through the atomic writer of ``varmixup_aug/_io.py``; on a full
disk the previous file stays whole (a small tmpfs; skipped where it cannot be mounted)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from _helpers import REPO

# Calls that write a file in place; only _io.py (the atomic writer itself) may use them.
_PLAIN_WRITES = re.compile(r"\.write_text\(|\.write_bytes\(|open\([^)]*[\"'][wa]b?\+?[\"']|json\.dump\(|torch\.save\("
                           r"|\bsave_file\((?!cpu, str\(tmp\))|\.savefig\((?!str\(tmp\))|\.save\((?!tmp\b)[^)]")


def test_no_plain_file_writes_in_the_package():
    found = []
    for path in sorted((REPO / "varmixup_aug").rglob("*.py")):
        if path.name == "_io.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if _PLAIN_WRITES.search(code) and not code.lstrip().startswith(("import ", "from ")):
                found.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert found == [], "write these through varmixup_aug._io (atomic_write_json/text/bytes, atomic_path):\n" + \
        "\n".join(found)


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MiB tmpfs at ``tmp_path/disk`` and a function that fills what is left of it."""
    disk = tmp_path / "disk"
    disk.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the full-disk test (needs root): {proc.stderr.strip()}")

    def fill() -> None:
        with open(disk / "filler", "ab", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass

    yield disk, fill
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _strays(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


def test_full_disk_keeps_the_results_rows(full_disk):
    from varmixup_aug.harness.cli.evaluate import _merge_row

    disk, fill = full_disk
    path = disk / "robustness.json"
    rows = {f"run{i:02d}": {"clean": {"accuracy": i / 100}} for i in range(12)}
    _merge_row(path, "run00", rows["run00"], None)
    for name, row in rows.items():
        _merge_row(path, name, row, None)
    fill()
    with pytest.raises(OSError, match=f"cannot write {re.escape(str(path))} .*No space left"):
        _merge_row(path, "new", {"clean": {"accuracy": 0.5}, "pad": "x" * 20000}, None)
    assert json.loads(path.read_text()) == rows and _strays(disk) == []


def test_full_disk_keeps_the_report(full_disk):
    from varmixup_aug._io import atomic_write_json

    disk, fill = full_disk
    report = disk / "train_report.json"
    atomic_write_json(report, {"steps": 1})
    fill()
    with pytest.raises(OSError, match="No space left"):
        atomic_write_json(report, {"steps": 2, "history": ["x" * 100] * 200})
    assert json.loads(report.read_text()) == {"steps": 1} and _strays(disk) == []


def test_cli_prints_a_full_disk_in_one_line(full_disk, image_folder, capsys):
    from varmixup_aug.harness.cli import main

    disk, fill = full_disk
    fill()
    args = ["train-vae", "--data-dir", str(image_folder), "--out", str(disk / "vae.safetensors"), "--latent-dim", "4",
            "--widths", "4,8", "--batch-size", "16", "--limit-eval", "8", "--max-steps", "1", "--epochs", "1",
            "--no-progress", "--num-workers", "0"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No space left" in err and "train-vae" in err
    assert _strays(disk) == []
