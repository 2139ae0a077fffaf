"""Loading ``examples/<name>.py`` as a module, for the integration tests (and the DDP rank script)."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from types import ModuleType

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@functools.cache
def load_example(name: str) -> ModuleType:
    """``examples/{name}.py``, executed once per process under the module name ``{name}_example``."""
    spec = importlib.util.spec_from_file_location(f"{name}_example", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
