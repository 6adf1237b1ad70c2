"""The source contracts (``stream_ae.sources.checks``) against the in-memory group source
and the file reader in every format; the Kafka implementations run the same checks on the
real broker (tests/integration/test_source_contract_kafka.py)."""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from typing import Any

import orjson
import pandas as pd
import pytest

from stream_ae.decode import FeatureSchema
from stream_ae.sources.base import StartPositions
from stream_ae.sources.checks import (
    GroupSubject,
    ReaderSubject,
    yield_group_checks,
    yield_reader_checks,
)
from stream_ae.sources.files import FileSource
from stream_ae.sources.memory import MemoryGroupSource

GROUP_CHECKS = list(yield_group_checks())
READER_CHECKS = list(yield_reader_checks())
DATA = {("s", p): [orjson.dumps({"key": f"k{i % 3}", "ts": 10.0 + i, "a": i * 0.25 + p})
                   for i in range(40 + 7 * p)] for p in (0, 1, 2)}


def memory_subject() -> GroupSubject:
    groups: dict[str, dict[tuple[str, int], int]] = {}  # the group coordinator's offsets

    def make(group: str, start_positions: StartPositions | None) -> MemoryGroupSource:
        return MemoryGroupSource(DATA, committed=groups.setdefault(group, {}),
                                 max_per_poll=11, start_positions=start_positions)

    return GroupSubject(make, DATA)


@pytest.mark.parametrize("check", GROUP_CHECKS, ids=[c.__name__ for c in GROUP_CHECKS])
def test_memory_group_source(check: Callable[[GroupSubject], None]) -> None:
    check(memory_subject())


FRAME = pd.DataFrame({"ts": 1.7e9 + pd.RangeIndex(300).to_numpy(float),
                      "key": [f"dev-{i % 4}" for i in range(300)],
                      "a": [(i % 17) * 0.5 for i in range(300)],
                      "b": [(i % 5) * 0.25 - 1.0 for i in range(300)]})


def file_subject(tmp_path: pathlib.Path, suffix: str) -> ReaderSubject:
    path = tmp_path / f"rows{suffix}"
    if suffix == ".csv":
        FRAME.to_csv(path, index=False)
    elif suffix == ".jsonl":
        FRAME.to_json(path, orient="records", lines=True)
    else:
        FRAME.to_parquet(path, index=False)

    def schema(reader: Any) -> FeatureSchema:
        return FeatureSchema(reader.record_format(), reader.roles.features)

    rows = list(FRAME[["a", "b"]].itertuples(index=False, name=None))
    return ReaderSubject(lambda: FileSource(path, chunk_rows=64), {0: rows}, schema)


@pytest.mark.parametrize("check", READER_CHECKS, ids=[c.__name__ for c in READER_CHECKS])
@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_file_source(suffix: str, check: Callable[[ReaderSubject], None],
                     tmp_path: pathlib.Path) -> None:
    check(file_subject(tmp_path, suffix))
