"""The layout: the core never loads or imports the harness; the CLI, examples and benchmarks use public names only."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import varmixup_aug
import varmixup_aug.harness as harness

from _helpers import REPO

PACKAGE = Path(varmixup_aug.__file__).resolve().parent
CORE_MODULES = sorted(p for p in PACKAGE.glob("*.py") if p.name != "__main__.py")  # __main__ runs the CLI
HEAVY = ("matplotlib", "torchattacks", "albumentations")


def test_importing_the_core_loads_no_harness_module() -> None:
    code = ("import json, sys, varmixup_aug; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            f"{('varmixup_aug',) + HEAVY!r})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=PACKAGE.parent)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout)
    assert "varmixup_aug" in loaded
    assert not [m for m in loaded if m.startswith("varmixup_aug.harness")], loaded
    assert not [m for m in loaded if m.split(".")[0] in HEAVY], loaded


def _imported_modules(path: Path) -> list[tuple[int, str | None]]:
    tree = ast.parse(path.read_text())
    out: list[tuple[int, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            out.append((node.level, node.module))
        elif isinstance(node, ast.Import):
            out += [(0, a.name) for a in node.names]
    return out


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: p.name)
def test_no_core_module_imports_the_harness(path: Path) -> None:
    for level, module in _imported_modules(path):
        target = module or ""
        assert not (level == 1 and target.startswith("harness")), f"{path.name} imports .{target}"
        assert not (level == 0 and target.startswith("varmixup_aug.harness")), f"{path.name} imports {target}"


def _public_imports(path: Path, package_of_level: dict[int, str]) -> list[str]:
    """The names a file imports from the package, as 'module:name'; private modules show up as such."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level not in package_of_level:
                    continue  # a sibling module of the CLI
                module = package_of_level[node.level] + (f".{node.module}" if node.module else "")
            else:
                module = node.module or ""
            if module.split(".")[0] == "varmixup_aug":
                found += [f"{module}:{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            found += [f"{a.name}:" for a in node.names if a.name.startswith("varmixup_aug.")]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "varmixup_aug":
            found.append(f"varmixup_aug:{node.attr}")
    return found


CALLERS = (sorted((PACKAGE / "harness" / "cli").glob("*.py")) + sorted((REPO / "examples").glob("*.py"))
           + sorted((REPO / "benchmarks").glob("*.py")))


@pytest.mark.parametrize("path", CALLERS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_cli_examples_and_benchmarks_use_public_names(path: Path) -> None:
    levels = {2: "varmixup_aug.harness", 3: "varmixup_aug"} if path.parent.name == "cli" else {}
    for entry in _public_imports(path, levels):
        module, name = entry.split(":")
        assert name in _public_names(module), f"{path.name} uses {entry}"


def _public_names(module: str) -> set[str]:
    """``__all__`` of the core, of the harness, or of a public (not underscored) core module beside them."""
    parts = module.split(".")
    if module != "varmixup_aug.harness" and (len(parts) > 2 or any(p.startswith("_") for p in parts)):
        return set()
    return set(getattr(importlib.import_module(module), "__all__", ()))


def test_harness_all_is_sorted_and_importable() -> None:
    assert harness.__all__ == sorted(harness.__all__)
    assert all(hasattr(harness, name) for name in harness.__all__)


def test_tests_import_shared_builders_from_helpers_not_conftest() -> None:
    """Builders live in ``tests/_helpers.py``; ``conftest.py`` (fixtures only) and test modules are never imported."""
    tests = sorted(p for p in (REPO / "tests").rglob("*.py") if p.name != "conftest.py")
    assert (REPO / "tests" / "_helpers.py") in tests
    bad = [str(p.relative_to(REPO)) for p in tests
           if any(m == "conftest" or (m or "").startswith("test_") for _, m in _imported_modules(p))]
    assert not bad, f"import builders from _helpers, not from conftest or another test module: {bad}"


@pytest.mark.parametrize("path", sorted((REPO / "examples").glob("*.py")) + sorted((REPO / "benchmarks").glob("*.py")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_examples_and_benchmarks_leave_the_import_path_alone(path: Path) -> None:
    """They run as ``python examples/x.py``: siblings (``_synthetic``, ``_common``) import as plain modules."""
    tree = ast.parse(path.read_text())
    edits = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr == "path"
             and isinstance(node.value, ast.Name) and node.value.id == "sys"]
    assert not edits, f"{path.name} touches sys.path on lines {edits}"


HARNESS_MODULES = sorted((PACKAGE / "harness").rglob("*.py"))


@pytest.mark.parametrize("path", HARNESS_MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_harness_imports_the_core_by_its_absolute_path(path: Path) -> None:
    """Core names come from ``varmixup_aug`` when public, else from ``varmixup_aug._module``; never relatively."""
    core_level = 3 if path.parent.name == "cli" else 2
    public = set(varmixup_aug.__all__)
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        assert node.level < core_level, f"{path.name}:{node.lineno} imports the core relatively; use varmixup_aug"
        module = node.module or ""
        if node.level == 0 and module.startswith("varmixup_aug._"):
            leaked = [a.name for a in node.names if a.name in public]
            assert not leaked, f"{path.name}:{node.lineno} imports public {leaked} from {module}; use varmixup_aug"
