"""griffe extension: reStructuredText habits of the docstrings, as Markdown for mkdocstrings.

- Sphinx roles (``:class:`~stream_ae.engine.Engine```): a role naming a full ``stream_ae.``
  path becomes a cross-reference (under ``--strict`` a target that does not exist fails the
  build); any other role becomes inline code. A leading ``~`` shows the last component only.
- Bare doctest blocks outside an ``Examples`` section (``>>>`` lines and their output, up to
  a blank line) become ``pycon`` code blocks, so their output is not read as Markdown (a
  ``[1][2]`` in it would be a reference). The ``Examples`` sections are griffe's to parse.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|func|meth|mod|attr|exc|data|obj):`(~?)([\w.]+)(\(\))?`")
UNDERLINE = re.compile(r"\s*-{3,}\s*")


def markdown_roles(text: str) -> str:
    """Replace each Sphinx role in ``text``.

    >>> markdown_roles("see :class:`~stream_ae.engine.Engine` and :meth:`step`")
    'see [`Engine`][stream_ae.engine.Engine] and `step`'
    """

    def one(m: re.Match[str]) -> str:
        tilde, target = m.group(1), m.group(2)
        shown = target.rsplit(".", 1)[-1] if tilde else target
        if target.startswith("stream_ae.") or target == "stream_ae":
            return f"[`{shown}`][{target}]"
        return f"`{shown}`"

    return ROLE.sub(one, text)


def fence_doctests(text: str) -> str:
    r"""Wrap bare doctest blocks (outside ``Examples`` sections) in ``pycon`` fences.

    >>> fence_doctests("Sum.\n>>> [1][0]\n1\n\nAfter.").split("\n")
    ['Sum.', '', '```pycon', '>>> [1][0]', '1', '```', '', 'After.']
    >>> fence_doctests("Examples\n--------\n>>> 2\n2")  # griffe parses these
    'Examples\n--------\n>>> 2\n2'
    """
    lines, out, i, in_examples = text.split("\n"), [], 0, False
    while i < len(lines):
        line = lines[i]
        if line.strip() and i + 1 < len(lines) and UNDERLINE.fullmatch(lines[i + 1]):
            in_examples = line.strip() == "Examples"
            out += [line, lines[i + 1]]
            i += 2
            continue
        if in_examples or not line.lstrip().startswith(">>>"):
            out.append(line)
            i += 1
            continue
        indent = line[: len(line) - len(line.lstrip())]
        if out and out[-1].strip():
            out.append("")
        out.append(f"{indent}```pycon")
        while i < len(lines) and lines[i].strip():
            out.append(lines[i])
            i += 1
        out.append(f"{indent}```")
    return "\n".join(out)


class SphinxRoles(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(markdown_roles(obj.docstring.value))
