"""The sink contract (``stream_ae.sinks.checks``) against the in-memory sink (with and
without an offset committer) and the backtest's alert file; ``KafkaSink`` runs the same
checks on the real broker (tests/integration/test_sink_contract_kafka.py)."""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from stream_ae.sinks.checks import Published, Subject, yield_checks
from stream_ae.sinks.files import AlertFile
from stream_ae.sinks.memory import MemorySink
from stream_ae.sources.memory import MemoryCommitter


def memory_subject(with_committer: bool) -> Subject:
    offsets: dict[tuple[str, int], int] = {}  # the group coordinator's

    def published(sink: Any) -> Published:
        return Published([a.alert_id for a in sink.alerts],
                         [d.original.value for d in sink.dead_letters])

    def make() -> MemorySink:
        return MemorySink(MemoryCommitter(offsets) if with_committer else None)

    return Subject(make, published, "s", (lambda: dict(offsets)) if with_committer else None)


def file_subject(tmp_path: pathlib.Path) -> Subject:
    path = tmp_path / "out.alerts.jsonl"

    def published(sink: Any) -> Published:
        sink.flush()
        lines = path.read_bytes().splitlines() if path.exists() else []
        return Published([orjson.loads(line)["alert_id"] for line in lines], None)

    return Subject(lambda: AlertFile(path), published, "s", transactional=False)


def subjects(tmp_path: pathlib.Path) -> dict[str, Subject]:
    return {"memory": memory_subject(True), "memory-no-committer": memory_subject(False),
            "alert-file": file_subject(tmp_path)}


CASES = [(kind, check) for kind, subject in subjects(pathlib.Path("/nonexistent")).items()
         for check in yield_checks(subject)]


@pytest.mark.parametrize(("kind", "check"), CASES,
                         ids=[f"{k}-{c.__name__}" for k, c in CASES])
def test_sink_contract(kind: str, check: Callable[[Subject], None],
                       tmp_path: pathlib.Path) -> None:
    check(subjects(tmp_path)[kind])
