"""The contract every source keeps, written once (as river's ``river/checks``).

Two protocols, two sets of checks (:mod:`stream_ae.sources.base`):

* :func:`yield_group_checks` for a :class:`~stream_ae.sources.base.GroupSource`
  (``MemoryGroupSource``; ``KafkaGroupSource`` on the real broker), given a
  :class:`GroupSubject`: how to make a member of a named consumer group over partitions
  that hold known messages;
* :func:`yield_reader_checks` for a :class:`~stream_ae.sources.base.BlockReader`
  (``FileSource`` in every format; ``TopicReplaySource`` on the real broker), given a
  :class:`ReaderSubject`: how to make the reader, the records it must deliver and how to
  decode its blocks.

``tests/unit/test_source_contract.py`` and ``tests/integration/test_source_contract_kafka.py``
run every check against every implementation.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream_ae.decode import FeatureSchema
from stream_ae.records import RawBlock
from stream_ae.sources.base import (
    Assigned,
    Assignment,
    BlockReader,
    GroupSource,
    StartPositions,
)
from stream_ae.types import TopicPartition as TP


@dataclass(frozen=True)
class GroupSubject:
    """A group source under test.

    ``make(group, start_positions)`` builds an unopened member of consumer group ``group``
    (offsets committed by one member are seen by the next, as a group coordinator keeps
    them); ``data`` is what each partition holds, ``timeout`` the poll timeout to use and
    ``max_polls`` how many polls may pass before every record must have arrived.
    """

    make: Callable[[str, StartPositions | None], GroupSource]
    data: Mapping[TP, Sequence[bytes | None]]
    timeout: float = 0.0
    max_polls: int = 100


@contextlib.contextmanager
def member(subject: GroupSubject, group: str, start_positions: StartPositions | None = None
           ) -> Iterator[GroupSource]:
    src = subject.make(group, start_positions)
    src.open()
    try:
        yield src
    finally:
        src.close()


def check_block(block: RawBlock) -> None:
    """One partition, offsets increasing, one key, timestamp and value per offset."""
    assert isinstance(block, RawBlock)
    assert len(block) > 0
    assert len(block.values) == len(block.keys) == len(block.timestamps_ms) == len(block)
    assert all(b > a for a, b in itertools.pairwise(block.offsets))


def drain(subject: GroupSubject, src: GroupSource, want: Mapping[TP, int], max_n: int = 1000
          ) -> dict[TP, list[tuple[int, bytes | None]]]:
    """Poll until each partition delivered ``want[tp]`` records; check every block and that
    no poll returns more than ``max_n`` records."""
    got: dict[TP, list[tuple[int, bytes | None]]] = {tp: [] for tp in want}
    for _ in range(subject.max_polls):
        blocks = src.poll_blocks(max_n, subject.timeout)
        assert sum(len(b) for b in blocks) <= max_n
        for b in blocks:
            check_block(b)
            rows = got.setdefault((b.topic, b.partition), [])
            assert not rows or b.offsets[0] > rows[-1][0]
            rows += [(o, v if v is None else bytes(v))  # type: ignore[arg-type]
                     for o, v in zip(b.offsets, b.values, strict=True)]
        if all(len(got[tp]) >= n for tp, n in want.items()):
            break
    return got


def _all(subject: GroupSubject, start: int = 0) -> dict[TP, list[tuple[int, bytes | None]]]:
    return {tp: [(o, v) for o, v in enumerate(values)][start:]
            for tp, values in subject.data.items()}


def _counts(subject: GroupSubject, start: int = 0) -> dict[TP, int]:
    return {tp: len(values) - start for tp, values in subject.data.items()}


def check_implements_the_protocol(subject: GroupSubject) -> None:
    assert isinstance(subject.make("protocol", None), GroupSource)


def check_delivers_every_record_in_partition_order(subject: GroupSubject) -> None:
    """A new group reads every partition from its beginning, each record once, in order,
    in polls of at most ``max_n`` records."""
    with member(subject, "all") as src:
        assert drain(subject, src, _counts(subject), max_n=7) == _all(subject)


def check_reports_ownership_changes_as_values(subject: GroupSubject) -> None:
    """The assignment comes back from ``take_changes`` once, as an ``Assigned`` value."""
    with member(subject, "changes") as src:
        drain(subject, src, _counts(subject))
        changes = src.take_changes()
        assigned = {tp for c in changes if isinstance(c, Assigned) for tp in c.partitions}
        assert assigned == set(subject.data)
        assert src.take_changes() == []


def check_start_positions_decide_where_reading_starts(subject: GroupSubject) -> None:
    """``start_positions`` is asked once per assigned partition, with no committed offset
    in a new group, and reading starts where it answers."""
    asked: list[Assignment] = []

    def start_at_3(assignments: Sequence[Assignment]) -> Mapping[TP, int]:
        asked.extend(assignments)
        return {(a.topic, a.partition): 3 for a in assignments}

    with member(subject, "start", start_at_3) as src:
        assert drain(subject, src, _counts(subject, 3)) == _all(subject, 3)
    assert sorted((a.topic, a.partition) for a in asked) == sorted(subject.data)
    assert {(a.committed, a.low) for a in asked} == {(None, 0)}


def check_committed_offsets_carry_over_to_the_next_member(subject: GroupSubject) -> None:
    """Offsets committed through ``committer()`` are where the next member of the group
    starts, and what its ``start_positions`` is told."""
    with member(subject, "handover") as first:
        drain(subject, first, _counts(subject))
        first.committer().commit(dict.fromkeys(subject.data, 5))
    with member(subject, "handover") as second:
        assert drain(subject, second, _counts(subject, 5)) == _all(subject, 5)
    asked: list[Assignment] = []

    def record(assignments: Sequence[Assignment]) -> Mapping[TP, int]:
        asked.extend(assignments)
        return {(a.topic, a.partition): a.committed or 0 for a in assignments}

    with member(subject, "handover", record) as third:
        drain(subject, third, _counts(subject, 5))
    assert {a.committed for a in asked} == {5}


def check_lag_counts_the_records_left(subject: GroupSubject) -> None:
    """``lag(tp, position)`` is the number of records at and past ``position`` (None only
    where the end of the partition is not known yet)."""
    with member(subject, "lag") as src:
        drain(subject, src, _counts(subject))
        for tp, values in subject.data.items():
            assert src.lag(tp, len(values)) == 0
            assert src.lag(tp, 2) == len(values) - 2


def yield_group_checks() -> Iterator[Callable[[GroupSubject], None]]:
    """Every group-source check, in a stable order."""
    yield check_implements_the_protocol
    yield check_delivers_every_record_in_partition_order
    yield check_reports_ownership_changes_as_values
    yield check_start_positions_decide_where_reading_starts
    yield check_committed_offsets_carry_over_to_the_next_member
    yield check_lag_counts_the_records_left


@dataclass(frozen=True)
class ReaderSubject:
    """A block reader under test.

    ``make()`` builds it unopened; ``expected`` maps each partition to the feature rows
    (one tuple per record, in order) it must deliver; ``schema(reader)`` gives the decoder
    for its blocks (after the first one: a file's column roles are known then).
    """

    make: Callable[[], BlockReader]
    expected: Mapping[int, Sequence[tuple[float, ...]]]
    schema: Callable[[Any], FeatureSchema]
    timeout: float = 0.0
    max_polls: int = 200


def read(subject: ReaderSubject, reader: BlockReader) -> list[RawBlock]:
    """Every block until ``done``; fails if that takes more than ``max_polls`` polls."""
    blocks: list[RawBlock] = []
    for _ in range(subject.max_polls):
        if reader.done:
            return blocks
        blocks += reader.poll_blocks(500, subject.timeout)
    raise AssertionError(f"not done after {subject.max_polls} polls")


def check_reader_implements_the_protocol(subject: ReaderSubject) -> None:
    assert isinstance(subject.make(), BlockReader)


def check_reads_to_the_end_then_stays_done(subject: ReaderSubject) -> None:
    """Blocks of one partition each, offsets increasing within a partition; once ``done``,
    a poll returns nothing and ``done`` stays True."""
    reader = subject.make()
    reader.open()
    try:
        blocks = read(subject, reader)
        assert reader.poll_blocks(500, 0.0) == [] and reader.done
    finally:
        reader.close()
    last: dict[int, int] = {}
    for b in blocks:
        check_block(b)
        assert b.offsets[0] > last.get(b.partition, -1)
        last[b.partition] = b.offsets[-1]
    assert set(last) == set(subject.expected)


def check_blocks_decode_to_the_written_records(subject: ReaderSubject) -> None:
    """Through the one decoder, the blocks give exactly the written records, in order, and
    no dead letters."""
    reader = subject.make()
    reader.open()
    try:
        blocks = read(subject, reader)
    finally:
        reader.close()
    schema = subject.schema(reader)
    rows: dict[int, list[tuple[float, ...]]] = {}
    for b in blocks:
        decoded = schema.decode(b)
        assert decoded.dead_letters == ()
        rows.setdefault(b.partition, []).extend(
            tuple(r) for r in np.asarray(decoded.batch.values, np.float64).tolist())
    assert rows == {p: [tuple(r) for r in want] for p, want in subject.expected.items()}


def yield_reader_checks() -> Iterator[Callable[[ReaderSubject], None]]:
    """Every block-reader check, in a stable order."""
    yield check_reader_implements_the_protocol
    yield check_reads_to_the_end_then_stays_done
    yield check_blocks_decode_to_the_written_records
