"""README is the user's page: short, and every relative link in it and in docs/ points at something real."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
README_LIMIT = 12 * 1024  # bytes

FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *#*$", re.MULTILINE)


def links(text: str) -> list[str]:
    """The link targets of a markdown text, outside fenced code blocks."""
    return LINK.findall(FENCE.sub("", text))


def anchors(text: str) -> set[str]:
    """GitHub's anchors of a markdown text's headings: lower case, punctuation dropped, spaces to hyphens."""
    seen: dict[str, int] = {}
    out = set()
    for title in HEADING.findall(FENCE.sub("", text)):
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in links(page.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text()):
            broken.append(f"{target} (no heading #{anchor} in {file.name})")
    return broken


def test_the_helpers_find_links_and_anchors() -> None:
    text = "# A `b_c`: d\n## Usage\n## Usage\n[x](y.md#a-b_c-d) ![i](img.png)\n```\n[not](a link)\n```\n"
    assert links(text) == ["y.md#a-b_c-d", "img.png"]
    assert anchors(text) == {"a-b_c-d", "usage", "usage-1"}


def test_a_broken_link_is_reported(tmp_path: Path) -> None:
    (tmp_path / "there.md").write_text("# Here\n")
    page = tmp_path / "page.md"
    page.write_text("[a](there.md#here) [b](missing.md) [c](there.md#gone) [d](https://example.org/x)\n")
    assert broken_links(page) == ["missing.md (no such file)", "there.md#gone (no heading #gone in there.md)"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path) -> None:
    assert broken_links(page) == []


def test_readme_is_a_short_page() -> None:
    size = len((REPO / "README.md").read_bytes())
    assert size <= README_LIMIT, f"README.md is {size} bytes; move details to a page under docs/"


def test_readme_starts_with_the_two_commands() -> None:
    first_block = FENCE.search((REPO / "README.md").read_text())
    assert first_block is not None
    commands = [line for line in first_block.group(0).splitlines() if line.startswith("python3 -m venv")]
    assert commands == [
        ('python3 -m venv .venv && .venv/bin/pip install ".[test]" && .venv/bin/varmixup-aug demo '
         "--data-dir ../shared/data/cifar10-jpg.tar.gz"),
        'python3 -m venv .venv && .venv/bin/pip install ".[test]" && .venv/bin/python -m pytest',
    ]
