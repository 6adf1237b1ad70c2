"""The only producer code: alerts, dead letters, drift events and decisions to Kafka.

``exactly_once``: a transactional producer; ``begin()`` opens a transaction, ``commit()``
adds the consumed offsets (``send_offsets_to_transaction``) and commits, so outputs and
input progress become visible atomically to ``read_committed`` readers. The
``transactional.id`` is stable per instance so a restart fences its zombie and closes any
transaction it left open.
``at_least_once``: an idempotent producer; ``commit()`` waits for every delivery report and
then commits the offsets through the consumer.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping
from typing import Any, cast

import structlog
from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from stream_ae import encode
from stream_ae.config import KafkaConfig
from stream_ae.errors import FencedError, SinkError
from stream_ae.kafka_conf import ErrorLog, client_config
from stream_ae.outputs import Outputs
from stream_ae.records import DeadLetter
from stream_ae.sources.base import OffsetCommitter
from stream_ae.types import TopicPartition as TP

log = structlog.get_logger()
# consumer settings in ``kafka.extra`` that a producer would warn about
_CONSUMER_ONLY = ("heartbeat.", "partition.assignment.", "session.timeout.", "group.",
                  "auto.offset.", "fetch.", "max.poll.", "isolation.", "enable.auto.",
                  "queued.", "enable.partition.eof", "allow.auto.create.")


def transactional_id(kafka: KafkaConfig) -> str:
    """``kafka.transactional_id`` or ``<group_id>-<hostname>``: stable across restarts.

    >>> transactional_id(KafkaConfig(transactional_id="svc-1"))
    'svc-1'
    """
    return kafka.transactional_id or f"{kafka.group_id}-{socket.gethostname()}"


def output_limit(kafka: KafkaConfig, derived: int | None = None) -> int:
    """The producer's ``message.max.bytes``: ``message.max.bytes`` in ``kafka.extra``, else
    ``kafka.max_message_bytes``, else ``derived`` (``config.producer_max_bytes`` of the
    settings), else the default.

    >>> output_limit(KafkaConfig()), output_limit(KafkaConfig(max_message_bytes=50_000), 9)
    (1032768, 50000)
    >>> output_limit(KafkaConfig(extra={"message.max.bytes": "2000000"}), 9)
    2000000
    """
    extra = kafka.extra.get("message.max.bytes")
    return int(extra) if extra else (kafka.max_message_bytes or derived
                                     or encode.DEFAULT_OUTPUT_BYTES)


def producer_config(kafka: KafkaConfig, max_message_bytes: int | None = None) -> dict[str, Any]:
    """Producer settings for the configured guarantee; every message is at most
    ``output_limit(kafka, max_message_bytes)`` bytes (``message.max.bytes``)."""
    conf: dict[str, Any] = {
        "acks": "all", "enable.idempotence": True, "linger.ms": 5,
        "compression.type": "lz4", "message.timeout.ms": 300_000,
        "message.max.bytes": output_limit(kafka, max_message_bytes),
        # a transaction is several small request/response exchanges per batch
        # (AddPartitions, TxnOffsetCommit, EndTxn): none may wait for Nagle (TCP_NODELAY)
        "socket.nagle.disable": True,
    }
    if kafka.guarantee == "exactly_once":
        conf["transactional.id"] = transactional_id(kafka)
        conf["transaction.timeout.ms"] = 60_000
        conf["message.timeout.ms"] = 60_000  # librdkafka: must not exceed the transaction's
    shared = {k: v for k, v in client_config(kafka).items() if not k.startswith(_CONSUMER_ONLY)}
    return {**conf, **shared}


class KafkaSink:
    """Publish the service's outputs.

    Parameters
    ----------
    kafka
        Topics, guarantee and connection.
    committer
        Commits the consumed offsets (the consumer's, handed over by the group source);
        None: a sink that publishes without input offsets (a replay's alerts topic).
    decisions_topic
        Optional topic for per-batch decision records (None: not published).
    max_message_bytes
        Producer ``message.max.bytes`` when ``kafka.max_message_bytes`` is not set (the
        service derives it from ``record.max_message_bytes``); dead letters are cut to fit.

    Examples
    --------
    >>> sink = KafkaSink(KafkaConfig(guarantee="at_least_once"))  # connects in open()
    >>> sink.transactional
    False
    """

    def __init__(self, kafka: KafkaConfig, committer: OffsetCommitter | None = None,
                 decisions_topic: str | None = None, max_message_bytes: int | None = None
                 ) -> None:
        self.kafka = kafka
        self.committer = committer
        self.decisions_topic = decisions_topic
        self.max_message_bytes = max_message_bytes
        self._producer: Producer | None = None
        self._failed: list[str] = []
        self._in_txn = False

    @property
    def transactional(self) -> bool:
        return self.kafka.guarantee == "exactly_once"

    def open(self, timeout: float = 60.0) -> None:
        """Create the producer; in exactly-once mode fence older instances (init_transactions)."""
        try:
            self._producer = Producer({**producer_config(self.kafka, self.max_message_bytes),
                                       "error_cb": ErrorLog()})
            if self.transactional:
                self._producer.init_transactions(timeout)
        except KafkaException as exc:
            raise _translate(exc, "cannot start producer") from exc
        log.info("producer_ready", guarantee=self.kafka.guarantee,
                 transactional_id=transactional_id(self.kafka) if self.transactional else None)

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            raise SinkError("sink is not open")
        return self._producer

    def begin(self) -> None:
        """Open a transaction (exactly-once mode only)."""
        if self.transactional and not self._in_txn:
            try:
                self.producer.begin_transaction()
            except KafkaException as exc:
                raise _translate(exc, "begin_transaction failed") from exc
            self._in_txn = True

    def _produce(self, topic: str, value: bytes, key: bytes | None,
                 headers: list[tuple[str, bytes]]) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key, headers=cast(Any, headers),
                                      on_delivery=self._on_dr)
                return
            except BufferError:
                self.producer.poll(0.05)  # queue full: serve delivery reports, then retry
            except KafkaException as exc:
                raise _translate(exc, f"produce to {topic} failed") from exc

    def _produce_dead_letter(self, d: DeadLetter, now: float) -> None:
        limit = output_limit(self.kafka, self.max_message_bytes)
        msg = encode.dead_letter_message(d, now, limit)
        try:
            self._produce(self.kafka.dead_letter_topic, msg.value, msg.key, msg.headers)
        except SinkError as exc:
            # the size estimate is an upper bound, so this is not expected; a dead letter
            # must never block its partition: publish a smaller prefix instead
            if not _too_large(exc.__cause__):
                raise
            log.warning("dead_letter_too_large", size=msg.size, limit=limit,
                        offset=d.original.position.offset)
            msg = encode.dead_letter_message(d, now, max(limit // 4, 16_384))
            self._produce(self.kafka.dead_letter_topic, msg.value, msg.key, msg.headers)

    def _on_dr(self, err: KafkaError | None, msg: Message) -> None:
        # messages purged by an aborted transaction were meant to be dropped: not a failure
        # (else the next batch's commit would report the aborted one's messages)
        if err is not None and err.code() not in _PURGED:
            self._failed.append(f"{msg.topic()}: {err.str()}")

    def write(self, out: Outputs) -> None:
        """Queue alerts (key = sensor key), dead letters (original bytes), events and
        decision records."""
        hdrs = encode.output_headers()
        for a in out.alerts:
            self._produce(self.kafka.alerts_topic, encode.encode_alert(a), a.key.encode(), hdrs)
        now = time.time()
        for d in out.dead_letters:
            self._produce_dead_letter(d, now)
        if self.kafka.incidents_topic:
            for inc in out.incidents:
                self._produce(self.kafka.incidents_topic, encode.encode_incident(inc),
                              inc.change.key.encode(), hdrs)
        if self.kafka.events_topic:
            for e in out.events:
                self._produce(self.kafka.events_topic, encode.encode_event(e, now),
                              e.position.topic.encode(), hdrs)
        if self.decisions_topic:
            for dec in out.decisions:
                key = f"{dec.topic}/{dec.partition}".encode()
                self._produce(self.decisions_topic, encode.encode_decision(dec), key, hdrs)

    def commit(self, offsets: Mapping[TP, int], timeout: float = 20.0) -> None:
        """Make the queued outputs durable together with the input ``offsets``."""
        if offsets and self.committer is None:
            raise SinkError("this sink has no offset committer")
        if self.transactional:
            assert self.committer is not None or not offsets
            self._commit_transaction(offsets, self.committer, timeout)
        else:
            self.flush(timeout)
            if offsets and self.committer is not None:
                self.committer.commit(offsets)

    def _commit_transaction(self, offsets: Mapping[TP, int], source: OffsetCommitter | None,
                            timeout: float) -> None:
        self.begin()
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            if tps and source is not None:
                self.producer.send_offsets_to_transaction(tps, source.group_metadata(), timeout)
            self._commit_retrying(timeout)
        except KafkaException as exc:
            self._abort_quietly()
            raise _translate(exc, "transaction commit failed") from exc
        finally:
            self._in_txn = False
        self._check_deliveries()

    def _commit_retrying(self, timeout: float, attempts: int = 5) -> None:
        for attempt in range(1, attempts + 1):
            try:
                self.producer.commit_transaction(timeout)
                return
            except KafkaException as exc:
                err = exc.args[0]
                if attempt == attempts or not isinstance(err, KafkaError) or not err.retriable():
                    raise
                log.warning("transaction_commit_retry", attempt=attempt, reason=err.str())

    def _abort_quietly(self) -> None:
        try:
            self.producer.abort_transaction(30)
        except KafkaException as exc:
            log.warning("transaction_abort_failed", error=str(exc))

    def _check_deliveries(self) -> None:
        if self._failed:
            failed, self._failed = self._failed, []
            raise SinkError(f"{len(failed)} deliveries failed, first: {failed[0]}")

    def flush(self, timeout: float = 10.0) -> None:
        """Wait for every queued message; ``SinkError`` if any delivery failed."""
        left = self.producer.flush(timeout)
        if left:
            raise SinkError(f"{left} messages still undelivered after {timeout:.0f} s")
        self._check_deliveries()

    def abort(self) -> None:
        """Abort an open transaction (its outputs are discarded)."""
        if self.transactional and self._in_txn:
            self._abort_quietly()
            self._in_txn = False

    def abandon(self) -> None:
        """Drop the producer without aborting or flushing: an open transaction stays open,
        as a killed process leaves it (the next producer with the same transactional id
        aborts it). For fault tests."""
        self._producer = None

    def close(self) -> None:
        """Abort any open transaction, flush and drop the producer."""
        if self._producer is None:
            return
        self.abort()
        self._producer.flush(10)
        self._producer = None
        log.info("producer_closed")


_PURGED = (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT)


def _too_large(exc: BaseException | None) -> bool:
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return isinstance(err, KafkaError) and err.code() == KafkaError.MSG_SIZE_TOO_LARGE


def _translate(exc: KafkaException, what: str) -> SinkError:
    err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
    if err is not None and err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                                          KafkaError.INVALID_PRODUCER_EPOCH):
        return FencedError(f"{what}: fenced by a newer instance ({err.str()})")
    return SinkError(f"{what}: {exc}")
