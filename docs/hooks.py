"""mkdocs hook: one API reference page per public module of stream_ae, made at build time.

Walking the package (instead of a hand-kept list) keeps the reference complete when modules
move; mkdocstrings renders each page from the docstrings and, under ``--strict``, a module
or cross-reference that cannot be resolved fails the build.
"""

from __future__ import annotations

import pathlib
import re
from typing import Any

from mkdocs.structure.files import File, Files

PACKAGE = pathlib.Path(__file__).parents[1] / "stream_ae"


def public_modules(package: pathlib.Path = PACKAGE) -> list[str]:
    """Dotted names of the package's modules, read from the files (nothing is imported, so
    the checkout beside this file is documented, whatever ``stream_ae`` sys.path finds)."""
    names = []
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not any(p.startswith("_") for p in parts):
            names.append(".".join(parts))
    return sorted(names)


def on_files(files: Files, config: Any) -> Files:
    mods = public_modules()
    rows = "\n".join(f"- [`{m}`]({m}.md)" for m in mods)
    files.append(File.generated(config, "reference/index.md", content=(
        "# API reference\n\nGenerated from the docstrings (many of their examples run as "
        "doctests in `make test`).\n\n" + rows + "\n")))
    for m in mods:
        files.append(File.generated(config, f"reference/{m}.md", content=f"# `{m}`\n\n::: {m}\n"))
    return files


OUTSIDE = re.compile(r"\[([^\]]+)\]\((\.\./[^)\s]+)\)")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Links from a page to repository files outside ``docs/`` (``../deploy/...``) work
    when the Markdown is read in the repository; on the site they become the path."""

    def plain(m: re.Match[str]) -> str:
        path = m.group(2).removeprefix("../")
        return f"{m.group(1)} (`{path}` in the repository)" if m.group(1) != path else f"`{path}`"

    return OUTSIDE.sub(plain, markdown)
