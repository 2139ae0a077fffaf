"""The public surface: __all__, the error type, py.typed, and the installed wheel's contents."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import varmixup_aug
from varmixup_aug import VarMixupError

from _helpers import REPO


class TestPublicSurface:
    def test_all_is_importable_and_sorted(self):
        assert varmixup_aug.__all__ == sorted(varmixup_aug.__all__)
        for name in varmixup_aug.__all__:
            assert hasattr(varmixup_aug, name), name

    def test_one_error_type(self):
        assert issubclass(VarMixupError, ValueError)

    def test_version_and_typed(self):
        assert isinstance(varmixup_aug.__version__, str) and varmixup_aug.__version__.count(".") == 2
        assert (Path(varmixup_aug.__file__).parent / "py.typed").is_file()


class TestInstalledWheel:
    def test_installed_package_ships_pretrained_vae(self, tmp_path):
        """Run from outside the source tree, so the installed (non-editable) package is imported."""
        code = (
            "import varmixup_aug, pathlib; p = pathlib.Path(varmixup_aug.__file__).parent; "
            "print(p); print((p / 'pretrained_vae').is_dir()); print(sorted(varmixup_aug.list_pretrained()))"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
        if proc.returncode != 0 and "No module named 'varmixup_aug'" in proc.stderr:
            pytest.skip("varmixup-aug is not installed in this environment (running from the source tree)")
        assert proc.returncode == 0, proc.stderr
        location, has_dir, names = proc.stdout.split("\n")[:3]
        if Path(location).resolve() == (REPO / "varmixup_aug").resolve():
            pytest.skip("an editable install points at the source tree")
        assert has_dir == "True", f"pretrained_vae/ missing from the installed package at {location}"
        assert "cifar10" in names
