"""The code snippets of docs/integrations.md, by name, so that the tests run exactly what the page shows."""

from __future__ import annotations

import re
from pathlib import Path

PAGE = Path(__file__).resolve().parents[2] / "docs" / "integrations.md"
_SNIPPET = re.compile(r"<!-- snippet: (?P<name>[\w-]+) -->\n(?:<!--[^\n]*-->\n)*```python\n(?P<code>.*?)```", re.S)


def doc_snippet(name: str) -> str:
    """The ```python block that follows ``<!-- snippet: name -->`` in docs/integrations.md (other marker lines, such
    as ``<!-- typecheck-context: ... -->``, may stand between them)."""
    found = {m["name"]: m["code"] for m in _SNIPPET.finditer(PAGE.read_text())}
    assert name in found, f"docs/integrations.md has no snippet {name!r}; it has {sorted(found)}"
    return found[name]


def run_snippet(name: str, namespace: dict) -> dict:
    """Execute the snippet in ``namespace`` (the test's tiny model, data and VAE) and return the namespace."""
    exec(compile(doc_snippet(name), f"docs/integrations.md:{name}", "exec"), namespace)
    return namespace
