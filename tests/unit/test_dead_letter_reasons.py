"""One set of dead-letter reasons: every reason the decoder and the file reader give is in
``decode.REASONS``, and every listed reason is given somewhere (none is stale)."""

from __future__ import annotations

import ast
import pathlib

from stream_ae import decode

PACKAGE = pathlib.Path(decode.__file__).parent
# where a reason is named: DecodeError(reason, ...), dead_letter(block, i, reason, ...),
# Unreadable(reason, ...)
CALLS = {"DecodeError": 0, "dead_letter": 2, "Unreadable": 0}


def reasons_given(path: pathlib.Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in CALLS and len(node.args) > CALLS[node.func.id]:
            arg = node.args[CALLS[node.func.id]]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                out.add(arg.value)
    return out


def test_every_reason_given_is_listed_and_every_listed_one_is_given() -> None:
    given = reasons_given(PACKAGE / "decode.py") | reasons_given(PACKAGE / "sources" /
                                                                 "files.py")
    assert given == set(decode.REASONS)
    assert len(decode.REASONS) == len(set(decode.REASONS))
