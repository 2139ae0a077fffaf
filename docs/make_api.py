"""Write the generated parts of ``docs/api.md`` from the public docstrings: ``python docs/make_api.py``.

The page's hand-written sections stay as they are. The text between ``<!-- api:options -->`` and
``<!-- /api:options -->`` becomes the table of VarMixup's options (from :func:`varmixup`'s ``Args:``
and ``MixupOptions``' defaults), the text between ``<!-- api:reference -->`` and ``<!-- /api:reference -->``
the reference of every public name: its signature, its docstring, an argument table and its methods.
A public name whose arguments the docstring's ``Args:`` (or ``Attributes:``) does not all name, or names
wrongly, is an error, so the docstrings stay the one place that documents the arguments.
``--check`` writes nothing and exits 1 when the page is not what this script would write
(``tests/core/test_api_docs.py`` runs the same check).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "api.md"
NO_TYPECHECK = "<!-- no-typecheck -->"  # a fenced block right after this line is not type-checked as a snippet

# The reference, in reading order; together the groups must be exactly the public names.
GROUPS = {
    "Mixing": ["varmixup", "VarMixup", "VarMixupCollate", "VarMixupLoader", "VarMixupDataset", "BatchRandomCropFlip",
               "MixupParams", "draw_mixup_params", "mix_targets", "Posterior"],
    "Mixup Inference": ["MIPredictor"],
    "VAEs": ["VAEProtocol", "ConvVAE", "VAEConfig", "load_pretrained_vae", "list_pretrained", "load_vae", "save_vae",
             "read_vae_metadata", "adapters.AutoencoderKLAdapter"],
    "Errors": ["VarMixupError"],
}
SECTION = re.compile(r"^(Args|Attributes|Returns|Raises|Example|Examples):$")
ROLE = re.compile(r":(?:class|func|meth|attr|exc|mod):`~?([\w.]+)`")
SKIPPED_MEMBERS = {"extra_repr"}
STARS: dict[Any, str] = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}
WIDTH = 100


class DocError(Exception):
    """A docstring that does not document its object's arguments."""


def public_objects() -> dict[str, Any]:
    import varmixup_aug
    import varmixup_aug.adapters

    names = [n for n in varmixup_aug.__all__ if n != "__version__"]
    names += [f"adapters.{n}" for n in varmixup_aug.adapters.__all__]
    listed = [n for group in GROUPS.values() for n in group]
    if sorted(listed) != sorted(names):
        raise DocError(f"GROUPS in docs/make_api.py list {sorted(set(listed) ^ set(names))} wrongly: "
                       "put every public name in one group")
    return {n: getattr(varmixup_aug.adapters if n.startswith("adapters.") else varmixup_aug, n.split(".")[-1])
            for n in listed}


# ---- docstrings ---------------------------------------------------------------------------------------------

def split_sections(doc: str) -> list[tuple[str | None, str]]:
    """A docstring as ``(section name or None for prose, dedented text)`` parts, in order."""
    parts: list[tuple[str | None, list[str]]] = [(None, [])]
    for line in doc.splitlines():
        match = SECTION.match(line)
        if match:
            parts.append((match.group(1), []))
        else:
            if parts[-1][0] is not None and line and not line.startswith(" "):
                parts.append((None, []))
            parts[-1][1].append(line)
    return [(name, textwrap.dedent("\n".join(lines)).strip("\n")) for name, lines in parts
            if "\n".join(lines).strip()]


def split_entries(text: str) -> list[tuple[list[str], str]]:
    """``Args:``-style entries ``name[, name]: text`` (continuation lines indented) as (names, text)."""
    raw: list[str] = []
    for line in text.splitlines():
        if line.startswith(" ") and raw:
            raw[-1] += " " + line.strip()
        elif line.strip():
            raw.append(line.strip())
    entries = []
    for entry in raw:
        head, sep, body = entry.partition(": ")
        if not sep:
            head, body = entry.rstrip(":"), ""
        entries.append(([n.strip().lstrip("*") for n in head.split(",") if n.strip()], body))
    return entries


def anchor_of(name: str, obj: Any) -> str:
    kind = "class" if inspect.isclass(obj) else "function"
    return f"{kind}-{name.split('.')[-1].lower()}"


def markdown(text: str, anchors: dict[str, str]) -> str:
    """reST inline markup as markdown: double backticks to code, roles to code linked into the reference."""
    def role(match: re.Match[str]) -> str:
        target = match.group(1).removeprefix("varmixup_aug.")
        base = target.split(".")[0]
        return f"[`{target}`](#{anchors[base]})" if base in anchors else f"`{target}`"

    return ROLE.sub(role, re.sub(r"``(.+?)``", r"`\1`", text, flags=re.DOTALL))


def cell(text: str) -> str:
    return text.replace("|", "\\|")


# ---- signatures ---------------------------------------------------------------------------------------------

def annotation(value: Any) -> str:
    if isinstance(value, str):
        return value
    if hasattr(value, "__forward_arg__"):
        return value.__forward_arg__
    return inspect.formatannotation(value)


def parameters(obj: Any) -> list[inspect.Parameter]:
    if inspect.isclass(obj) and (issubclass(obj, BaseException) or getattr(obj, "_is_protocol", False)):
        return []
    return [p for p in inspect.signature(obj).parameters.values() if p.name != "self"]


def format_signature(name: str, obj: Any, params: list[inspect.Parameter]) -> str:
    pieces, star_done = [], False
    for p in params:
        if p.kind is inspect.Parameter.KEYWORD_ONLY and not star_done:
            pieces.append("*")
        star_done = star_done or p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.VAR_POSITIONAL)
        text = STARS.get(p.kind, "") + p.name
        if p.annotation is not inspect.Parameter.empty:
            text += f": {annotation(p.annotation)}"
        if p.default is not inspect.Parameter.empty:
            text += f" = {p.default!r}"
        pieces.append(text)
    returns = "" if inspect.isclass(obj) else inspect.signature(obj).return_annotation
    tail = "" if returns in ("", inspect.Signature.empty) else f" -> {annotation(returns)}"
    short = name.split(".")[-1]
    one_line = f"{short}({', '.join(pieces)}){tail}"
    if len(one_line) <= WIDTH:
        return one_line
    return f"{short}(\n" + "".join(f"    {p},\n" for p in pieces) + f"){tail}"


def default_text(param: inspect.Parameter | None) -> str:
    if param is None or param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
        return ""
    return "(required)" if param.default is inspect.Parameter.empty else f"`{param.default!r}`"


# ---- rendering ----------------------------------------------------------------------------------------------

def check_documented(name: str, params: list[inspect.Parameter], sections: list[tuple[str | None, str]]) -> None:
    args = [n for kind, text in sections if kind == "Args" for names, _ in split_entries(text) for n in names]
    attributes = [n for kind, text in sections if kind == "Attributes" for names, _ in split_entries(text)
                  for n in names]
    wanted = [p.name for p in params]
    documented = args or attributes
    missing = [n for n in wanted if n not in documented]
    unknown = [n for n in args if n not in wanted]
    if missing or unknown:
        raise DocError(f"{name}'s docstring: Args: must name every parameter once; missing {missing}, "
                       f"not parameters {unknown}")


def render_entries(kind: str, text: str, params: dict[str, inspect.Parameter], anchors: dict[str, str]) -> str:
    entries = split_entries(text)
    if kind == "Raises":
        return "**Raises:**\n\n" + "".join(f"- `{', '.join(n)}`: {markdown(body, anchors)}\n" for n, body in entries)
    with_defaults = kind == "Args"
    header = ("| argument | default | meaning |\n|---|---|---|\n" if with_defaults
              else "| attribute | meaning |\n|---|---|\n")
    rows = []
    for names, body in entries:
        label = ", ".join(f"`{n}`" for n in names)
        meaning = cell(markdown(body, anchors))
        if with_defaults:
            defaults = {default_text(params.get(n)) for n in names}
            default = defaults.pop() if len(defaults) == 1 else ""
            rows.append(f"| {label} | {cell(default)} | {meaning} |\n")
        else:
            rows.append(f"| {label} | {meaning} |\n")
    title = "" if with_defaults else "**Attributes:**\n\n"
    return title + header + "".join(rows)


def render_members(obj: Any, anchors: dict[str, str]) -> str:
    lines = []
    for member, value in vars(obj).items():
        if member.startswith("_") or member in SKIPPED_MEMBERS:
            continue
        func = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
        doc = inspect.getdoc(func)
        if not doc or not (inspect.isfunction(func) or isinstance(func, property)):
            continue
        first = markdown(" ".join(doc.split("\n\n")[0].split()), anchors)
        if isinstance(func, property):
            lines.append(f"- `{member}` (property): {first}\n")
        else:
            params = [p for p in inspect.signature(func).parameters.values() if p.name not in ("self", "cls")]
            lines.append(f"- `{format_signature(member, func, params).replace(chr(10), ' ')}`: {first}\n")
    return ("**Methods and properties:**\n\n" + "".join(lines)) if lines else ""


def render_object(name: str, obj: Any, anchors: dict[str, str]) -> str:
    doc = inspect.getdoc(obj) or ""
    sections = split_sections(doc)
    params = parameters(obj)
    check_documented(name, params, sections)
    kind = "Class" if inspect.isclass(obj) else "Function"
    out = [f"#### {kind} `{name.split('.')[-1]}`\n"]
    if name.startswith("adapters."):
        out.append(f"`from varmixup_aug.adapters import {name.split('.')[-1]}`\n")
    if params or not inspect.isclass(obj) or dataclasses.is_dataclass(obj):
        out.append(f"{NO_TYPECHECK}\n```python\n{format_signature(name, obj, params)}\n```\n")
    by_name = {p.name: p for p in params}
    for section, text in sections:
        if section is None:
            out.append(markdown(text, anchors) + "\n")
        elif section in ("Args", "Attributes", "Raises"):
            out.append(render_entries(section, text, by_name, anchors))
        elif section == "Returns":
            out.append("**Returns:** " + markdown(" ".join(text.split()), anchors) + "\n")
        else:
            out.append(f"```pycon\n{text}\n```\n")
    members = render_members(obj, anchors) if inspect.isclass(obj) else ""
    if members:
        out.append(members)
    return "\n".join(out)


def render_reference(objects: dict[str, Any]) -> str:
    anchors = {n.split(".")[-1]: anchor_of(n, o) for n, o in objects.items()}
    parts, errors = [], []
    for group, names in GROUPS.items():
        parts.append(f"### {group}\n\n" + " · ".join(f"[`{n.split('.')[-1]}`](#{anchors[n.split('.')[-1]]})"
                                                  for n in names) + "\n")
        for n in names:
            try:
                parts.append(render_object(n, objects[n], anchors))
            except DocError as exc:
                errors.append(str(exc))
    if errors:
        raise DocError("\n".join(errors))
    return "\n".join(parts)


def render_options(objects: dict[str, Any]) -> str:
    from varmixup_aug._options import MixupOptions

    anchors = {n.split(".")[-1]: anchor_of(n, o) for n, o in objects.items()}
    args = {names[0]: body for kind, text in split_sections(inspect.getdoc(objects["varmixup"]) or "")
            if kind == "Args" for names, body in split_entries(text)}
    rows = []
    for f in dataclasses.fields(MixupOptions):
        default = "(required)" if f.default is dataclasses.MISSING else f"`{f.default!r}`"
        meaning = cell(markdown(args[f.name], anchors))
        rows.append(f"| `{f.name}` | `{cell(str(f.type))}` | {cell(default)} | {meaning} |\n")
    return "| option | type | default | meaning |\n|---|---|---|---|\n" + "".join(rows)


def replace_between(page: str, marker: str, body: str) -> str:
    start, end = f"<!-- api:{marker} -->", f"<!-- /api:{marker} -->"
    if page.count(start) != 1 or page.count(end) != 1:
        raise DocError(f"docs/api.md needs one {start} ... {end} pair")
    head, rest = page.split(start)
    _, tail = rest.split(end)
    return f"{head}{start}\n\n{body.strip()}\n\n{end}{tail}"


def render_page(page: str) -> str:
    objects = public_objects()
    page = replace_between(page, "options", render_options(objects))
    return replace_between(page, "reference", render_reference(objects))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/api.md is not current; write nothing")
    args = parser.parse_args(argv)
    current = PAGE.read_text()
    wanted = render_page(current)
    if args.check:
        if wanted != current:
            print("docs/api.md is not current: run python docs/make_api.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
