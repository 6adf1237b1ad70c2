"""The contract every batch sink keeps, written once (as river's ``river/checks``).

:func:`yield_checks` gives the checks of :class:`~stream_ae.sinks.base.BatchSink`; each
takes a :class:`Subject`: how to make the sink (with its offset committer wired in), what a
reader of its output sees, and which guarantees it gives (transactions, offsets).
``tests/unit/test_sink_contract.py`` runs them against ``MemorySink`` and ``AlertFile``,
``tests/integration/test_sink_contract_kafka.py`` against ``KafkaSink`` in both guarantees
on the real broker.

The outputs written are real ones: raw blocks through a
:class:`~stream_ae.processor.PartitionProcessor` (with the rule-based
:class:`~stream_ae.testing.ThresholdEngine`), so alerts and dead letters are what the
service publishes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from stream_ae.config import RecordFormat
from stream_ae.decode import FeatureSchema
from stream_ae.outputs import Outputs
from stream_ae.processor import PartitionProcessor
from stream_ae.records import RawBlock
from stream_ae.sinks.base import BatchSink
from stream_ae.testing import ThresholdEngine
from stream_ae.types import TopicPartition as TP


@dataclass(frozen=True)
class Published:
    """What a reader sees of a sink's committed output: alert ids in order, and the original
    bytes of the dead letters (None where the sink does not publish dead letters)."""

    alerts: list[str]
    dead_letters: list[bytes] | None


@dataclass(frozen=True)
class Subject:
    """A sink under test.

    ``make()`` builds it unopened, its committer wired to ``topic``'s consumer group;
    ``published(sink)`` reads what it made durable; ``committed()`` the group's committed
    offsets (None: the sink commits no input offsets); ``transactional``: outputs are
    invisible before ``commit`` and ``abort`` drops them (a file keeps what was written).
    """

    make: Callable[[], BatchSink]
    published: Callable[[BatchSink], Published]
    topic: str
    committed: Callable[[], Mapping[TP, int]] | None = None
    transactional: bool = True


def batch_outputs(topic: str, start: int, n: int = 6) -> Outputs:
    """The outputs of offsets ``[start, start + n)`` of partition 0: every third record an
    alert (value 9 over the limit 5), the record after it undecodable."""
    values = [b'{"key": "k", "x": 9}' if i % 3 == 0 else
              b"not json %d" % (start + i) if i % 3 == 1 else b'{"key": "k", "x": 1}'
              for i in range(n)]
    block = RawBlock(topic, 0, list(range(start, start + n)), values, [None] * n, [None] * n)
    proc = PartitionProcessor(topic, 0, FeatureSchema(RecordFormat()),
                              lambda names: ThresholdEngine(names, limit=5.0), position=start)
    done = proc.process(block, publish_from=start, now=0.0)
    assert done is not None
    return done.outputs


def expected(topic: str, *starts: int, n: int = 6) -> tuple[list[str], list[bytes]]:
    """Alert ids and dead-letter bytes of :func:`batch_outputs` for each start, in order."""
    alerts = [f"{topic}/0/{s + i}" for s in starts for i in range(0, n, 3)]
    dead = [b"not json %d" % (s + i) for s in starts for i in range(1, n, 3)]
    return alerts, dead


@contextlib.contextmanager
def opened(subject: Subject) -> Iterator[BatchSink]:
    sink = subject.make()
    sink.open()
    try:
        yield sink
    finally:
        sink.close()


def publish(sink: BatchSink, out: Outputs, offsets: Mapping[TP, int]) -> None:
    sink.begin()
    sink.write(out)
    sink.commit(offsets)


def _assert_published(subject: Subject, sink: BatchSink, *starts: int) -> None:
    alerts, dead = expected(subject.topic, *starts)
    got = subject.published(sink)
    assert got.alerts == alerts
    if got.dead_letters is not None:
        assert got.dead_letters == dead


def check_implements_the_protocol(subject: Subject) -> None:
    assert isinstance(subject.make(), BatchSink)


def check_commit_publishes_each_batch_once_in_order(subject: Subject) -> None:
    out = batch_outputs(subject.topic, 0)
    assert len(out.alerts) == 2 and len(out.dead_letters) == 2
    with opened(subject) as sink:
        publish(sink, out, {(subject.topic, 0): 6})
        publish(sink, batch_outputs(subject.topic, 6), {(subject.topic, 0): 12})
        sink.flush()
        _assert_published(subject, sink, 0, 6)


def check_nothing_is_visible_before_commit(subject: Subject) -> None:
    """Transactional sinks: a written batch is invisible until ``commit``."""
    with opened(subject) as sink:
        publish(sink, batch_outputs(subject.topic, 0), {(subject.topic, 0): 6})
        sink.begin()
        sink.write(batch_outputs(subject.topic, 6))
        _assert_published(subject, sink, 0)
        sink.commit({(subject.topic, 0): 12})
        _assert_published(subject, sink, 0, 6)


def check_abort_drops_the_batch(subject: Subject) -> None:
    """Transactional sinks: an aborted batch is never published; the next batch is."""
    with opened(subject) as sink:
        sink.begin()
        sink.write(batch_outputs(subject.topic, 0))
        sink.abort()
        publish(sink, batch_outputs(subject.topic, 6), {(subject.topic, 0): 12})
        _assert_published(subject, sink, 6)


def check_offsets_are_committed_with_the_outputs(subject: Subject) -> None:
    """The input offsets given to ``commit`` reach the consumer group, also for a batch
    with nothing to publish."""
    assert subject.committed is not None
    with opened(subject) as sink:
        publish(sink, batch_outputs(subject.topic, 0), {(subject.topic, 0): 6})
        assert subject.committed() == {(subject.topic, 0): 6}
        publish(sink, Outputs(), {(subject.topic, 0): 9})
        assert subject.committed() == {(subject.topic, 0): 9}
        _assert_published(subject, sink, 0)


def check_close_without_writing(subject: Subject) -> None:
    """Open then close publishes nothing."""
    with opened(subject) as sink:
        sink.flush()
        assert subject.published(sink).alerts == []


def yield_checks(subject: Subject) -> Iterator[Callable[[Subject], None]]:
    """The checks that apply to ``subject``, in a stable order (the transaction checks only
    for transactional sinks, the offset check only for sinks that commit offsets)."""
    yield check_implements_the_protocol
    yield check_commit_publishes_each_batch_once_in_order
    if subject.transactional:
        yield check_nothing_is_visible_before_commit
        yield check_abort_drops_the_batch
    if subject.committed is not None:
        yield check_offsets_are_committed_with_the_outputs
    yield check_close_without_writing
