"""The commented starter config that ``stream-ae config init`` writes, made from the models.

Every setting of :class:`~stream_ae.config.Settings` at its default, under its section, with
its description as a comment: a file to copy and edit that loads back to the defaults.

>>> import yaml
>>> from stream_ae.config import Settings
>>> text = starter_config()
>>> Settings(**yaml.safe_load(text)) == Settings(_env_prefix="\\0")
True
>>> "  # Previous readings of the same key" in text
True
"""

from __future__ import annotations

import textwrap
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from stream_ae.config import Settings

__all__ = ["starter_config"]

HEADER = """\
# stream-ae configuration: every setting at its default (edit what you need, delete the rest).
# Use it with `stream-ae run -c FILE` (or backtest/demo). Environment variables
# STREAM_AE_<SECTION>__<KEY> override the file, and `--set section.key=value` overrides both.
# Reference: docs/configuration.md.
"""


def starter_config(width: int = 92) -> str:
    """The YAML text: a header, then each section of the settings with commented defaults."""
    return HEADER + "".join(_section(model, name, 0, width)
                            for name, model in _submodels(Settings()))


def _submodels(model: BaseModel) -> list[tuple[str, BaseModel]]:
    return [(name, value) for name in type(model).model_fields
            if isinstance(value := getattr(model, name), BaseModel)]


def _section(model: BaseModel, name: str, depth: int, width: int) -> str:
    pad = "  " * depth
    doc = (type(model).__doc__ or "").strip().split("\n\n")[0]
    out = ["", *_comment(doc, pad, width), f"{pad}{name}:"]
    for field, info in type(model).model_fields.items():
        value = getattr(model, field)
        if isinstance(value, BaseModel):
            out.append(_section(value, field, depth + 1, width).rstrip("\n"))
            continue
        out += _comment(info.description or "", pad + "  ", width)
        out.append(f"{pad}  {field}: {_scalar(value)}")
    return "\n".join(out) + "\n"


def _comment(text: str, pad: str, width: int) -> list[str]:
    words = " ".join(text.split())
    return [f"{pad}# {line}" for line in textwrap.wrap(words, width - len(pad) - 2)]


def _scalar(value: Any) -> str:
    plain = to_jsonable_python(value)
    text: str = yaml.safe_dump(plain, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()
