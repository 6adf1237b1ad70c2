"""The sink contract (``stream_ae.sinks.checks``) against ``KafkaSink`` on the real broker,
exactly-once (one transaction per batch, offsets inside it) and at-least-once (flush, then
commit the offsets); the same checks as the in-memory sink and the alert file in
tests/unit/test_sink_contract.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from kafka_helpers import committed, read_all

from stream_ae.apps.broker import create_topics
from stream_ae.config import KafkaConfig
from stream_ae.sinks.checks import Published, Subject, batch_outputs, yield_checks
from stream_ae.sinks.kafka import KafkaSink
from stream_ae.sources.base import Assigned
from stream_ae.sources.kafka import KafkaGroupSource
from stream_ae.testing import external_bootstrap

GUARANTEES = ["exactly_once", "at_least_once"]
CASES = [(g, check) for g in GUARANTEES
         for check in yield_checks(Subject(lambda: None, lambda s: Published([], None),  # type: ignore[arg-type, return-value]
                                           "t", (lambda: {}),
                                           transactional=g == "exactly_once"))]
# Found by this suite: on the embedded broker (Tansu) a transaction that carries offsets
# but no messages leaves the group's committed offset where it was; a batch with outputs
# moves it. The client side is right: librdkafka's debug log ("eos,protocol") shows
# AddOffsetsToTxn, TxnOffsetCommit and EndTxn sent and answered without error for the
# offsets-only transaction, as for the others; Apache Kafka commits such offsets (Kafka
# Streams relies on it). The service loses nothing by it (the next batch with outputs
# commits past it; the records in between had nothing to publish), but it is not the
# contract: kept visible.
EMPTY_TXN = pytest.mark.xfail(condition=not external_bootstrap(), strict=True,
                              reason="embedded broker: an offsets-only transaction does not "
                                     "move the committed offset")


@pytest.fixture
def members() -> Iterator[list[KafkaGroupSource]]:
    """Group members opened by a test (their committers are the sinks'), closed after it."""
    opened: list[KafkaGroupSource] = []
    yield opened
    for src in opened:
        src.close()


def joined(kafka: KafkaConfig, members: list[KafkaGroupSource]) -> KafkaGroupSource:
    """A member of ``kafka.group_id`` that owns the input partition (so it can commit)."""
    src = KafkaGroupSource(kafka)
    src.open()
    members.append(src)
    for _ in range(120):
        src.poll_blocks(10, 0.5)
        if any(isinstance(c, Assigned) for c in src.take_changes()):
            return src
    raise AssertionError("the source was never assigned its partition")


def sink_topics(bootstrap: str, tag: str, guarantee: str) -> tuple[dict[str, str], KafkaConfig]:
    """This test's input, alerts and dead-letter topics (created), and the sink's settings."""
    names = {k: f"{k}-{tag}" for k in ("in", "alerts", "dlq")}
    create_topics(bootstrap, dict.fromkeys(names.values(), 1))
    kafka = KafkaConfig(bootstrap_servers=bootstrap, group_id=f"g-{tag}",
                        input_topics=(names["in"],), alerts_topic=names["alerts"],
                        dead_letter_topic=names["dlq"], events_topic=None,
                        incidents_topic=None, guarantee=guarantee,  # type: ignore[arg-type]
                        transactional_id=f"tx-{tag}")
    return names, kafka


@pytest.mark.parametrize(("guarantee", "check"), [
    pytest.param(g, c, marks=EMPTY_TXN) if (g, c.__name__) == (
        "exactly_once", "check_offsets_are_committed_with_the_outputs") else (g, c)
    for g, c in CASES], ids=[f"{g}-{c.__name__}" for g, c in CASES])
def test_kafka_sink(guarantee: str, check: Callable[[Subject], None], bootstrap: str,
                    tag: str, members: list[KafkaGroupSource]) -> None:
    names, kafka = sink_topics(bootstrap, tag, guarantee)

    def make() -> KafkaSink:
        return KafkaSink(kafka, joined(kafka, members).committer())

    def published(sink: Any) -> Published:
        alerts = [orjson.loads(m.value())["alert_id"] for m in read_all(bootstrap,
                                                                        names["alerts"])]
        return Published(alerts, [m.value() for m in read_all(bootstrap, names["dlq"])])

    def offsets() -> dict[tuple[str, int], int]:
        (off,) = committed(bootstrap, kafka.group_id, names["in"], 1)
        return {(names["in"], 0): off} if off >= 0 else {}

    check(Subject(make, published, names["in"], offsets,
                  transactional=guarantee == "exactly_once"))


# Found by the rebalance test (``GroupWatch`` in test_rebalance.py): Tansu's EndTxn applies a
# transaction's offsets only when every other transaction that wrote to the same partitions
# is prepared, and answers success either way; the offsets wait for a later commit (here
# the other instance's), and the unresolved transaction pins the last stable offset. Apache
# Kafka commits them with the transaction.
OVERLAPPING_TXN = pytest.mark.xfail(
    condition=not external_bootstrap(), strict=True,
    reason="embedded broker: a transaction's offsets wait while another transaction that "
           "wrote to the same output partition is open")


@OVERLAPPING_TXN
def test_offsets_commit_while_another_instance_has_an_open_transaction(
        bootstrap: str, tag: str, members: list[KafkaGroupSource]) -> None:
    """Two instances share the alerts topic; one commits a batch with its offsets while the
    other's transaction, which wrote to that topic, is still open."""
    names, kafka = sink_topics(bootstrap, tag, "exactly_once")
    other = KafkaSink(kafka.model_copy(update={"transactional_id": f"tx-{tag}-other"}))
    sink = KafkaSink(kafka, joined(kafka, members).committer())
    other.open()
    sink.open()
    try:
        other.begin()
        other.write(batch_outputs(names["in"], 100))
        other.producer.flush(10)  # its records are on the broker, its transaction open
        sink.begin()
        sink.write(batch_outputs(names["in"], 0))
        sink.commit({(names["in"], 0): 6})
        assert committed(bootstrap, kafka.group_id, names["in"], 1) == [6]
    finally:
        other.close()  # aborts its transaction
        sink.close()
