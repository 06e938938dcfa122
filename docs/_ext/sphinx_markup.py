"""A griffe extension: the reST idioms of the docstrings, rendered as the site's Markdown.

The docstrings are written for Sphinx-style readers (``:param x:`` fields, which mkdocstrings
parses itself with ``docstring_style: sphinx``). An attribute documented by a ``#:`` comment,
as Sphinx reads them, gets that comment as its docstring. Three reST idioms in the prose would
render literally in Markdown, so each docstring is rewritten once, before it is parsed:

- a role (``:class:`Name```, ``:meth:`~mod.Cls.name```, ``:func:``, ``:mod:``, ...) becomes a
  cross-reference to the object, resolved in the docstring's scope as Python would; it is
  *optional*, so a target that is not in the reference (a private module, the standard
  library) renders as code instead of failing the strict build;
- a doctest (lines from ``>>>`` to the next blank line) becomes a ``pycon`` code block;
- a paragraph ending in ``::`` ends in ``:`` (its indented block is already code).

No names are listed here: whatever the docstrings say is handled the same way.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

_ROLE = re.compile(
    r":(?:py:)?(?P<role>class|exc|func|meth|attr|data|obj|mod|const|type)"
    r":`(?P<body>[^`]+)`"
)
_EXPLICIT_TITLE = re.compile(r"^(?P<title>.+?)\s*<(?P<target>[^<>]+)>$")
_DOCTEST = re.compile(r"^(?P<indent>\s*)>>>(?:\s|$)")
_FENCE = re.compile(r"^\s*(```|~~~)")
_LITERAL_MARKER = re.compile(r"(?P<text>\S)?::$")
_DOC_COMMENT = re.compile(r"^\s*#: ?(?P<text>.*)$")
_TRAILING_DOC_COMMENT = re.compile(r"\S.*\s#: (?P<text>.*)$")


class SphinxMarkup(griffe.Extension):
    """Rewrite roles, doctests and ``::`` in every docstring of the loaded package."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.is_alias:
            return  # an alias shares its target's docstring, rewritten once with the target
        if obj.docstring is None and obj.is_attribute:
            _doc_comment(obj)
        if obj.docstring is None:
            return
        lines: list[str] = []
        fenced = False
        for line in _doctests(obj.docstring.value).split("\n"):
            if _FENCE.match(line):
                fenced = not fenced
            elif not fenced:
                line = _ROLE.sub(lambda match: _reference(obj, match), line)
                line = _LITERAL_MARKER.sub(_end_of_paragraph, line)
            lines.append(line)
        obj.docstring.value = "\n".join(lines)


def _doc_comment(obj: griffe.Object) -> None:
    """An attribute's ``#:`` comment (the lines just above it, or at the end of its line)."""
    if obj.lineno is None or obj.filepath is None or isinstance(obj.filepath, list):
        return
    try:
        source = obj.lines_collection[obj.filepath]
    except KeyError:
        return
    if not 0 < obj.lineno <= len(source):
        return
    found: list[str] = []
    number = obj.lineno - 1
    while number > 0 and (comment := _DOC_COMMENT.match(source[number - 1])):
        found.insert(0, comment["text"])
        number -= 1
    if not found and (trailing := _TRAILING_DOC_COMMENT.search(source[obj.lineno - 1])):
        found = [trailing["text"]]
    if found:
        obj.docstring = griffe.Docstring(
            "\n".join(found), lineno=number + 1, endlineno=obj.lineno, parent=obj
        )


def _end_of_paragraph(match: re.Match[str]) -> str:
    """``text::`` reads ``text:``; a line that is only ``::`` goes."""
    return f"{match['text']}:" if match["text"] else ""


def _reference(obj: griffe.Object, match: re.Match[str]) -> str:
    body = match["body"].strip()
    explicit = _EXPLICIT_TITLE.match(body)
    if explicit:
        title, target = explicit["title"], explicit["target"].strip()
    else:
        target = body
        short = target.startswith("~")
        target = target.lstrip("~.!")
        title = target.rsplit(".", 1)[-1] if short else target
        if match["role"] in {"func", "meth"}:
            title += "()"
    identifier = _resolve(obj, target)
    return (
        f'<autoref identifier="{html.escape(identifier)}" optional>'
        f"<code>{html.escape(title)}</code></autoref>"
    )


def _resolve(obj: griffe.Object, target: str) -> str:
    """The full path of ``target`` as seen from ``obj`` (``target`` itself when unknown)."""
    head, _, rest = target.partition(".")
    try:
        resolved = obj.resolve(head)
    except (griffe.NameResolutionError, griffe.AliasResolutionError, KeyError):
        return target
    return f"{resolved}.{rest}" if rest else resolved


def _doctests(value: str) -> str:
    """Wrap each run of doctest lines (``>>>`` to the next blank line) in a pycon fence."""
    out: list[str] = []
    lines = value.split("\n")
    fenced = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if _FENCE.match(line):
            fenced = not fenced
        start = None if fenced else _DOCTEST.match(line)
        if start is None:
            out.append(line)
            i += 1
            continue
        indent = start["indent"]
        block: list[str] = []
        while i < len(lines) and lines[i].strip():
            block.append(lines[i])
            i += 1
        if out and out[-1].strip():
            out.append("")
        out += [f"{indent}```pycon", *block, f"{indent}```"]
    return "\n".join(out)
