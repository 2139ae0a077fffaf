"""The ```python snippets of README.md and docs/*.md type-check with mypy, as a user's IDE would see them.

Each snippet becomes one module: a shared preamble (the names a snippet may take as given: ``torch``,
``model``, ``vae``, ``train_set``, ...), then the imports of the page's earlier snippets (a reader has run
them), then an optional hidden context, then the snippet. Markers, on the line right before a fence:

- ``<!-- no-typecheck -->``: the block is not checked (signatures in docs/api.md; context that cannot be
  had). README.md has none: every snippet there is checked.
- ``<!-- typecheck-context: CODE -->``: CODE (Python, ``;`` between statements) is prepended to that
  snippet only, for names the surrounding text provides (``args``, a helper function, ...).
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
NO_TYPECHECK = "<!-- no-typecheck -->"
CONTEXT = re.compile(r"^<!-- typecheck-context: (.*) -->$")
BLOCK = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
IMPORT = re.compile(r"^(?:import|from) \S+.*$", re.MULTILINE)

PREAMBLE = '''\
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

import varmixup_aug

model: nn.Module
vae: varmixup_aug.VAEProtocol
train_set: Dataset[tuple[Tensor, int]]
images: Tensor
labels: Tensor
x: Tensor
pool_images: Tensor
pool_labels: Tensor
'''


@dataclass
class Snippet:
    page: Path
    line: int
    code: str
    context: str
    checked: bool

    @property
    def name(self) -> str:
        page = re.sub(r"\W", "_", str(self.page.relative_to(REPO)).lower())
        return f"{page}_line{self.line}"

    def module(self, earlier_imports: list[str]) -> str:
        context = self.context.replace("; ", "\n")
        return f"{PREAMBLE}\n" + "\n".join(earlier_imports) + f"\n\n{context}\n\n{self.code}"


def snippets(page: Path, text: str | None = None) -> list[Snippet]:
    """The ```python blocks of ``page`` (or of ``text`` as that page), with their markers."""
    text = page.read_text() if text is None else text
    found = []
    for match in BLOCK.finditer(text):
        if match.group(1) != "python":
            continue
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        context = CONTEXT.match(before)
        found.append(Snippet(page, text[:match.start()].count("\n") + 1, match.group(2),
                             context.group(1) if context else "", before != NO_TYPECHECK))
    return found


def modules(page: Path) -> dict[str, str]:
    """The checked snippets of ``page`` as ``{module name: source}``."""
    out, imports = {}, []
    for snippet in snippets(page):
        if snippet.checked:
            out[snippet.name] = snippet.module(imports)
        imports += IMPORT.findall(snippet.code)
    return out


def mypy(sources: dict[str, str], folder: Path) -> subprocess.CompletedProcess[str]:
    for name, source in sources.items():
        (folder / f"{name}.py").write_text(source)
    # Run from the repository with its [tool.mypy] configuration and cache (shared with .ci/run's mypy run).
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"),
                           "--no-error-summary", *sorted(str(folder / f"{n}.py") for n in sources)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)


def test_the_markers_and_the_context() -> None:
    page = REPO / "docs" / "api.md"
    text = ("```python\nimport os\nfrom pathlib import Path\n```\n\n<!-- no-typecheck -->\n```python\nf(x: int)\n```\n"
            "<!-- typecheck-context: n: int; m = 2 -->\n```python\nprint(os.sep, n + m)\n```\n```bash\nls\n```\n")
    found = snippets(page, text)
    assert [(s.line, s.checked, s.context) for s in found] == [(1, True, ""), (7, False, ""),
                                                                (11, True, "n: int; m = 2")]
    source = found[2].module(["import os", "from pathlib import Path"])
    assert source.startswith(PREAMBLE) and source.endswith("import os\nfrom pathlib import Path\n\nn: int\nm = 2\n\n"
                                                           "print(os.sep, n + m)\n")


def test_readme_snippets_are_all_checked() -> None:
    found = snippets(REPO / "README.md")
    assert found, "README.md has no python snippets"
    assert [s.line for s in found if not s.checked] == []


def test_snippets_type_check(tmp_path: Path) -> None:
    sources = {name: source for page in PAGES for name, source in modules(page).items()}
    # One wrong module in the same run shows that mypy reads the package's signatures.
    sources["wrong_snippet"] = (PREAMBLE + "\nfrom varmixup_aug import VarMixup\n"
                                "VarMixup(vae, num_classes='10', alhpa=1.0)\n")
    result = mypy(sources, tmp_path)
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert [e for e in errors if "wrong_snippet.py" not in e] == [], f"mypy on the snippets:\n{result.stdout}"
    assert any('Argument "num_classes" to "VarMixup" has incompatible type "str"' in e for e in errors), result.stdout
    assert any('Unexpected keyword argument "alhpa" for "VarMixup"' in e for e in errors), result.stdout
