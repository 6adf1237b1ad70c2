"""The public API is exactly ``stream_ae.__all__``: explicit, sorted, importable."""

from __future__ import annotations

import importlib
import types

import pytest

import stream_ae

PUBLIC = sorted(stream_ae.__all__)


def _exported_names(module: types.ModuleType) -> set[str]:
    """Public names bound in the package namespace, minus submodules and __future__ flags."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and not (name == "annotations" and type(value).__name__ == "_Feature")
    }


def test_all_matches_what_the_package_exports() -> None:
    listed = set(stream_ae.__all__) - {"__version__"}
    lazy = set(stream_ae._LAZY)
    assert listed == _exported_names(stream_ae) | lazy


def test_lazy_names_resolve_to_their_modules() -> None:
    for name, module in stream_ae._LAZY.items():
        assert getattr(stream_ae, name) is getattr(importlib.import_module(module), name)


def test_all_has_no_duplicates() -> None:
    assert len(stream_ae.__all__) == len(set(stream_ae.__all__))
    assert all(isinstance(name, str) for name in stream_ae.__all__)


@pytest.mark.parametrize("name", PUBLIC)
def test_each_name_is_importable(name: str) -> None:
    module = importlib.import_module("stream_ae")
    namespace: dict[str, object] = {}
    exec(f"from stream_ae import {name}", namespace)
    assert namespace[name] is getattr(module, name)


@pytest.mark.parametrize("name", [n for n in PUBLIC if n != "__version__"])
def test_each_name_is_defined_inside_the_package(name: str) -> None:
    value = getattr(stream_ae, name)
    assert getattr(value, "__module__", "").startswith("stream_ae.")


def test_version_matches_distribution_metadata() -> None:
    from importlib.metadata import version

    assert stream_ae.__version__ == version("stream-ae")


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from stream_ae import *", namespace)
    assert {k for k in namespace if k != "__builtins__"} == set(stream_ae.__all__)


def test_errors_share_one_root() -> None:
    errors = [getattr(stream_ae, n) for n in PUBLIC if n.endswith("Error")]
    assert errors, "the package exports its exception tree"
    assert all(issubclass(e, stream_ae.StreamAEError) for e in errors)
