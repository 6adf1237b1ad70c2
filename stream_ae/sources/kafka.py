"""The only consumer code: a consumer-group source for the service and an assign-mode
reader for replaying a historical topic (backtests).

``KafkaGroupSource`` subscribes with auto-commit off. When partitions are assigned it asks
its ``start_positions`` function (the service's restore step) where to start each one (a
checkpoint's position, so it can replay without publishing); every ownership change comes
back to the service loop as a value (:class:`Assigned`, :class:`Revoked`, :class:`Lost`)
from :meth:`KafkaGroupSource.take_changes`. Offsets are committed through the
:class:`GroupCommitter` it hands out, which the sink holds.
``KafkaTopicReader`` assigns partitions itself from start offsets or a start time and stops
at the end of every partition (``enable.partition.eof``; never the high watermark, which
some brokers report wrongly).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from stream_ae.config import KafkaConfig
from stream_ae.errors import BrokerUnreachable, SourceError
from stream_ae.kafka_conf import ErrorLog, client_config
from stream_ae.records import LazyColumn, RawBlock, RawMessage, SourcePosition
from stream_ae.sources.base import (
    Assigned,
    Assignment,
    Lost,
    OwnershipChange,
    Revoked,
    StartPositions,
)
from stream_ae.types import Headers
from stream_ae.types import TopicPartition as TP

log = structlog.get_logger()


def consumer_config(kafka: KafkaConfig, max_message_bytes: int | None = None
                    ) -> dict[str, Any]:
    """Consumer settings: group, auto-commit off, read_committed, fast prefetch refill, and
    fetch sizes that take a message of the producer limit (``kafka.max_message_bytes``, else
    ``max_message_bytes``) in one fetch (brokers return a larger one alone, so any size is
    consumed; only the memory one fetch takes is bounded).

    >>> c = consumer_config(KafkaConfig(max_message_bytes=5_000_000))
    >>> c["max.partition.fetch.bytes"], c["fetch.max.bytes"], c["receive.message.max.bytes"]
    (5000000, 52428800, 100000000)
    """
    limit = kafka.max_message_bytes or max_message_bytes or 0
    return {
        "max.partition.fetch.bytes": max(1_048_576, limit),
        "fetch.max.bytes": kafka.fetch_max_bytes,
        # librdkafka requires receive.message.max.bytes >= fetch.max.bytes + 512
        "receive.message.max.bytes": max(100_000_000, kafka.fetch_max_bytes + 65_536),
        "group.id": kafka.group_id, "enable.auto.commit": False,
        "enable.auto.offset.store": False, "auto.offset.reset": "earliest",
        "isolation.level": "read_committed", "session.timeout.ms": kafka.session_timeout_ms,
        # the default 1000 ms backoff stalls a consumer that decodes slower than it fetches
        "fetch.queue.backoff.ms": 10, "allow.auto.create.topics": False,
        # the broker may hold a fetch this long when there is little data: bounds alert latency
        # (brokers that do not answer early when data arrives add up to this to every record)
        "fetch.wait.max.ms": 10,
        # small fetch and commit requests must not wait for Nagle's algorithm (TCP_NODELAY)
        "socket.nagle.disable": True,
        **client_config(kafka),
    }


def probe_broker(kafka: KafkaConfig, timeout: float = 10.0) -> None:
    """Ask the cluster for its metadata once: ``BrokerUnreachable`` when no answer comes in
    ``timeout`` seconds. A start-up check for the CLI (a running service rides out outages
    by restarting from its checkpoints; a wrong address at start is an operator's error)."""
    conf = {**client_config(kafka), "group.id": kafka.group_id, "log_level": 0,
            "error_cb": lambda err: None}  # the exception below says it once
    try:
        consumer = Consumer(conf)
    except KafkaException as exc:
        raise SourceError(f"cannot create consumer: {exc}") from exc
    try:
        consumer.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnreachable(f"no answer from {kafka.bootstrap_servers} within "
                                f"{timeout:g} s ({exc.args[0].str() if exc.args else exc})"
                                ) from exc
    finally:
        consumer.close()


class GroupCommitter:
    """The :class:`OffsetCommitter` of a :class:`KafkaGroupSource`'s consumer."""

    def __init__(self, source: KafkaGroupSource) -> None:
        self._source = source

    def group_metadata(self) -> object:
        return self._source.consumer.consumer_group_metadata()

    def commit(self, offsets: Mapping[TP, int], retry_for: float = 120.0) -> None:
        """Commit synchronously; retriable errors (a broker outage, a coordinator moving)
        are retried for ``retry_for`` seconds."""
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        deadline = time.monotonic() + retry_for
        while True:
            try:
                self._source.consumer.commit(offsets=tps, asynchronous=False)
                return
            except KafkaException as exc:
                if not _retriable(exc) or time.monotonic() > deadline:
                    raise SourceError(f"offset commit failed: {exc}") from exc
                log.warning("offset_commit_retry", reason=str(exc))
                time.sleep(0.5)  # error path only: back off before asking the broker again


def _retriable(exc: KafkaException) -> bool:
    err = exc.args[0] if exc.args else None
    return isinstance(err, KafkaError) and (err.retriable() or err.code() in (
        KafkaError._TRANSPORT, KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR, KafkaError._WAIT_COORD))


def blocks_from(msgs: Sequence[Any]) -> list[RawBlock]:
    """Group consumed messages by partition, in order, as columnar blocks."""
    groups: dict[TP, list[Any]] = {}  # confluent Message (its stubs make every field Optional)
    for m in msgs:
        groups.setdefault((m.topic(), m.partition()), []).append(m)
    return [_block(tp, g) for tp, g in groups.items()]


def _msg_key(m: Any) -> bytes | None:
    return m.key()  # type: ignore[no-any-return]


def _msg_timestamp(m: Any) -> int | None:
    kind, ts = m.timestamp()
    return ts if kind else None


def _msg_headers(m: Any) -> Headers:
    return tuple((k, v or b"") for k, v in (m.headers() or ()))


def _block(tp: TP, g: list[Any]) -> RawBlock:
    # keys and timestamps are read only for records without key/timestamp fields: lazily
    return RawBlock(
        tp[0], tp[1], [m.offset() for m in g], [m.value() for m in g],
        LazyColumn(g, _msg_key), LazyColumn(g, _msg_timestamp),
        lambda i: _msg_headers(g[i]),
    )


def _raise_on_error(m: Message) -> bool:
    """True for a data message; False for a partition EOF; raise on a real error."""
    err = m.error()
    if err is None:
        return True
    if err.code() == KafkaError._PARTITION_EOF:
        return False
    if err.fatal():
        raise SourceError(f"fatal consumer error: {err.str()}")
    log.warning("consumer_error", code=err.name(), reason=err.str(),
                topic=m.topic(), partition=m.partition())
    return False


def _unassign(consumer: Consumer, partitions: list[TopicPartition], cooperative: bool) -> None:
    if cooperative:
        consumer.incremental_unassign(partitions)
    else:
        consumer.unassign()


class KafkaGroupSource:
    """Consume ``kafka.input_topics`` in the consumer group ``kafka.group_id``.

    Parameters
    ----------
    kafka
        Connection, topics and group.
    start_positions
        Asked, on each assignment, where to start reading the new partitions (None: at
        their committed offsets, else the beginning).
    max_message_bytes
        The producer-side message limit the fetch sizes are set for (see
        :func:`consumer_config`).

    Examples
    --------
    >>> src = KafkaGroupSource(KafkaConfig())  # connects only in open()
    >>> (src.assigned, src.take_changes())
    (set(), [])
    """

    def __init__(self, kafka: KafkaConfig, start_positions: StartPositions | None = None,
                 max_message_bytes: int | None = None) -> None:
        self.kafka = kafka
        self.start_positions = start_positions
        self.max_message_bytes = max_message_bytes
        self._consumer: Consumer | None = None
        self._cooperative = False
        self._changes: list[OwnershipChange] = []
        self.assigned: set[TP] = set()

    def take_changes(self) -> list[OwnershipChange]:
        """Ownership changes since the last call, in order (they happen inside polls)."""
        out, self._changes = self._changes, []
        return out

    def committer(self) -> GroupCommitter:
        """The offset committer for the sink."""
        return GroupCommitter(self)

    def open(self) -> None:
        """Create the consumer and subscribe (the group join happens in ``poll_blocks``)."""
        conf = {**consumer_config(self.kafka, self.max_message_bytes), "error_cb": ErrorLog()}
        self._cooperative = "cooperative" in str(conf.get("partition.assignment.strategy", ""))
        try:
            self._consumer = Consumer(conf)
            self._consumer.subscribe(list(self.kafka.input_topics), on_assign=self._on_assign,
                                     on_revoke=self._on_revoke, on_lost=self._on_lost)
        except KafkaException as exc:
            raise SourceError(f"cannot create consumer: {exc}") from exc
        log.info("consumer_subscribed", topics=list(self.kafka.input_topics),
                 group_id=self.kafka.group_id)

    @property
    def consumer(self) -> Consumer:
        if self._consumer is None:
            raise SourceError("source is not open")
        return self._consumer

    def poll_blocks(self, max_n: int, timeout: float) -> list[RawBlock]:
        """Up to ``max_n`` messages as per-partition blocks (rebalance callbacks run here)."""
        try:
            msgs = self.consumer.consume(max_n, timeout)
        except KafkaException as exc:
            raise SourceError(f"consume failed: {exc}") from exc
        if any(m.error() is not None for m in msgs):
            msgs = [m for m in msgs if _raise_on_error(m)]
        return blocks_from(msgs) if msgs else []

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [TopicPartition(p.topic, p.partition) for p in partitions]
        committed = consumer.committed(tps, timeout=30) if tps else []
        assignments = [
            Assignment(c.topic, c.partition, c.offset if c.offset >= 0 else None,
                       consumer.get_watermark_offsets(c, timeout=10)[0])
            for c in committed
        ]
        if self.start_positions is not None:
            starts = dict(self.start_positions(assignments))
        else:
            starts = {(a.topic, a.partition): a.committed for a in assignments
                      if a.committed is not None}
        for p in partitions:
            p.offset = starts.get((p.topic, p.partition), OFFSET_BEGINNING)
        if self._cooperative:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        self.assigned |= {(p.topic, p.partition) for p in partitions}
        self._changes.append(Assigned(tuple((p.topic, p.partition) for p in partitions)))
        log.info("partitions_assigned", partitions=[f"{p.topic}/{p.partition}@{p.offset}"
                                                    for p in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        log.info("partitions_revoked", partitions=[f"{t}/{p}" for t, p in tps])
        self._changes.append(Revoked(tuple(tps)))
        self.assigned -= set(tps)
        _unassign(consumer, partitions, self._cooperative)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        log.warning("partitions_lost", partitions=[f"{t}/{p}" for t, p in tps])
        self._changes.append(Lost(tuple(tps)))
        self.assigned -= set(tps)
        _unassign(consumer, partitions, self._cooperative)

    def lag(self, tp: TP, position: int) -> int | None:
        """High watermark (cached from fetches) minus ``position``; None when unknown."""
        try:
            _, high = self.consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
        except KafkaException:
            return None
        return max(high - position, 0) if high >= 0 else None

    def abandon(self) -> None:
        """Drop the consumer without closing it: no revoke, no leave-group, as a killed
        process leaves it (the group notices by its session timeout). For fault tests."""
        self._consumer = None

    def close(self) -> None:
        """Leave the group (revoke callbacks run) and close the consumer."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.close()
            log.info("consumer_closed", group_id=self.kafka.group_id)


class KafkaTopicReader:
    """Read a topic's partitions from given offsets or a start time up to their current end.

    Parameters
    ----------
    kafka
        Connection settings (``group_id`` is used only as a client label; nothing is committed).
    topic
        The topic to replay.
    partitions
        Partitions to read; None: all.
    start_offsets
        ``{partition: offset}``; partitions not listed start at ``default_offset``.
    default_offset
        Start of the partitions ``start_offsets`` does not list (default: the beginning).
    start_timestamp_ms
        Start at the first record at or after this time (overrides ``start_offsets``).

    Examples
    --------
    >>> r = KafkaTopicReader(KafkaConfig(), "sensors", start_timestamp_ms=0)
    >>> r.done
    False
    """

    def __init__(
        self, kafka: KafkaConfig, topic: str, partitions: Sequence[int] | None = None,
        start_offsets: Mapping[int, int] | None = None, start_timestamp_ms: int | None = None,
        default_offset: int = OFFSET_BEGINNING,
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.partitions = partitions
        self.start_offsets = start_offsets
        self.start_timestamp_ms = start_timestamp_ms
        self.default_offset = default_offset
        self._consumer: Consumer | None = None
        self._positions: dict[TP, int] = {}
        self._open: set[int] = set()
        self.done = False

    def open(self) -> None:
        """Create the consumer and assign the partitions at their start positions."""
        conf = {**consumer_config(self.kafka), "enable.partition.eof": True,
                "group.id": f"{self.kafka.group_id}-reader", "error_cb": ErrorLog()}
        try:
            self._consumer = Consumer(conf)
            parts = self._start_positions(self._consumer)
            self._consumer.assign(parts)
        except KafkaException as exc:
            raise SourceError(f"cannot read topic {self.topic}: {exc}") from exc
        self._open = {p.partition for p in parts}
        self.done = not self._open
        log.info("topic_reader_opened", topic=self.topic, partitions=sorted(self._open))

    def _start_positions(self, consumer: Consumer) -> list[TopicPartition]:
        md = consumer.list_topics(self.topic, timeout=10).topics.get(self.topic)
        if md is None or md.error is not None or not md.partitions:
            raise SourceError(f"topic {self.topic} does not exist")
        ids = sorted(md.partitions) if self.partitions is None else list(self.partitions)
        if self.start_timestamp_ms is not None:
            query = [TopicPartition(self.topic, p, self.start_timestamp_ms) for p in ids]
            return list(consumer.offsets_for_times(query, timeout=10))
        starts = self.start_offsets or {}
        return [TopicPartition(self.topic, p, starts.get(p, self.default_offset)) for p in ids]

    def poll(self, max_n: int, timeout: float) -> list[RawMessage]:
        """Up to ``max_n`` messages; sets ``done`` once every partition reached its end."""
        if self._consumer is None:
            raise SourceError("reader is not open")
        try:
            msgs = self._consumer.consume(max_n, timeout)
        except KafkaException as exc:
            raise SourceError(f"consume failed: {exc}") from exc
        out = []
        m: Any
        for m in msgs:
            if m.error() is not None and m.error().code() == KafkaError._PARTITION_EOF:
                self._open.discard(m.partition())
            elif _raise_on_error(m) and self._wanted(m):
                out.append(_raw(m))
                self._positions[(m.topic(), m.partition())] = m.offset() + 1
        self.done = not self._open
        return out

    def _wanted(self, m: Message) -> bool:
        # brokers whose offsets_for_times ignores record timestamps land too early: skip those
        kind, ts = m.timestamp()
        return self.start_timestamp_ms is None or not kind or ts >= self.start_timestamp_ms

    def position(self) -> Mapping[TP, int]:
        return dict(self._positions)

    def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.close()


def _raw(m: Any) -> RawMessage:
    pos = SourcePosition(m.topic(), m.partition(), m.offset())
    return RawMessage(m.value(), m.key(), _msg_headers(m), _msg_timestamp(m), pos)
