"""The documentation's executable parts: the notebook example and the API-reference hook."""

from __future__ import annotations

import importlib.util
import pathlib
import re
import sys
from types import ModuleType

import pytest

DOCS = pathlib.Path(__file__).parents[2] / "docs"


def load(path: pathlib.Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem + "_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_notebook_example_reproduces_its_documented_figures() -> None:
    out = load(DOCS / "examples" / "notebook.py").fit_and_score()
    assert (out["train_rows"], out["test_rows"], out["records_seen"]) == (237, 159, 396)
    page = (DOCS / "notebook.md").read_text()
    for name in ("roc_auc", "streamed_roc_auc", "recall"):
        documented = float(re.search(rf"^\s*{name}: ([0-9.]+)$", page, re.M).group(1))  # type: ignore[union-attr]
        assert out[name] == pytest.approx(documented, abs=0.02), name
    assert out["roc_auc"] > 0.75 and out["streamed_roc_auc"] > 0.75


def test_reference_hook_lists_every_public_module_and_no_private_one() -> None:
    pytest.importorskip("mkdocs")
    mods = load(DOCS / "hooks.py").public_modules()
    assert {"stream_ae", "stream_ae.engine", "stream_ae.river", "stream_ae.sklearn",
            "stream_ae.detect.threshold", "stream_ae.sources.kafka"} <= set(mods)
    assert not [m for m in mods if any(p.startswith("_") for p in m.split("."))]
    assert len(mods) == len(set(mods)) == sum(
        1 for p in (DOCS.parent / "stream_ae").rglob("*.py")
        if not any(part.startswith("_") and part != "__init__.py"
                   for part in p.relative_to(DOCS.parent).parts))


def test_pages_in_the_nav_exist() -> None:
    text = (DOCS.parent / "mkdocs.yml").read_text()
    nav = text[text.index("\nnav:"):]
    pages = re.findall(r":\s+([\w./-]+\.md)\s*$", nav, re.M)
    assert "getting-started.md" in pages and "ecosystem.md" in pages
    missing = [p for p in pages if not (DOCS / p).exists() and not p.startswith("reference/")]
    assert missing == []


def test_docstring_extension_turns_roles_and_bare_doctests_into_markdown() -> None:
    import doctest

    pytest.importorskip("griffe")
    ext = load(DOCS / "griffe_roles.py")
    assert doctest.testmod(ext).failed == 0
    assert ext.markdown_roles(":func:`~stream_ae.river.river_defaults`, :mod:`numpy`") == (
        "[`river_defaults`][stream_ae.river.river_defaults], `numpy`")
    text = "Doc.\n\n    >>> x[1][2:]\n    3\n\nAfter."  # output runs to the blank line
    fenced = "Doc.\n\n    ```pycon\n    >>> x[1][2:]\n    3\n    ```\n\nAfter."
    assert ext.fence_doctests(text) == fenced


def test_links_out_of_docs_become_repository_paths_on_the_site() -> None:
    pytest.importorskip("mkdocs")
    hooks = load(DOCS / "hooks.py")
    md = "See [deploy/k8s/README.md](../deploy/k8s/README.md), [the example](../deploy/x.yaml)."
    assert hooks.on_page_markdown(md, None, None, None) == (
        "See `deploy/k8s/README.md`, the example (`deploy/x.yaml` in the repository).")


def test_make_docs_builds_strict_and_not_quiet() -> None:
    # -q lowers the log level below WARNING: autorefs then skips its unresolved-reference
    # warnings and --strict never sees them
    make = (DOCS.parent / "Makefile").read_text()
    line = next(x for x in make.splitlines() if "mkdocs build" in x)
    assert "--strict" in line and " -q" not in line
    assert "make docs" in (DOCS.parent / ".ci" / "run").read_text()
