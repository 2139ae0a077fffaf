"""docs/api.md's generated parts are what ``python docs/make_api.py`` writes from the public docstrings."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _make_api():
    spec = importlib.util.spec_from_file_location("make_api", REPO / "docs" / "make_api.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_api", module)
    spec.loader.exec_module(module)
    return module


make_api = _make_api()


def test_api_page_is_current() -> None:
    page = (REPO / "docs" / "api.md").read_text()
    assert make_api.render_page(page) == page, "docs/api.md is stale: run python docs/make_api.py"
    assert make_api.main(["--check"]) == 0


def test_every_public_name_has_a_reference_entry() -> None:
    import varmixup_aug

    page = (REPO / "docs" / "api.md").read_text()
    for name in varmixup_aug.__all__:
        if name != "__version__":
            assert f" `{name}`\n" in page, name


def test_an_undocumented_argument_is_an_error() -> None:
    def documented(a: int, *, b: float = 1.0) -> None:
        """Do it.

        Args:
            a: the first.
            c: not a parameter.
        """

    with pytest.raises(make_api.DocError, match=r"documented's docstring: .*missing \['b'\], not parameters \['c'\]"):
        make_api.render_object("documented", documented, {})


def test_a_public_name_outside_the_groups_is_an_error(monkeypatch) -> None:
    monkeypatch.setitem(make_api.GROUPS, "Errors", [])
    with pytest.raises(make_api.DocError, match=r"\['VarMixupError'\]"):
        make_api.public_objects()


def test_stale_markers_are_replaced() -> None:
    page = ("# API\n<!-- api:options -->\nSTALE\n<!-- /api:options -->\ntext\n"
            "<!-- api:reference -->\n<!-- /api:reference -->\n")
    out = make_api.render_page(page)
    assert "STALE" not in out and "| `num_classes` | `int` | (required) |" in out
    assert "#### Function `varmixup`" in out and out.endswith("<!-- /api:reference -->\n")
    with pytest.raises(make_api.DocError, match="one <!-- api:options -->"):
        make_api.render_page("# API\n")
