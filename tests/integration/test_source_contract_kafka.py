"""The source contracts (``stream_ae.sources.checks``) against the Kafka implementations on
the real broker: the consumer-group source and the topic replay (the same checks as the
in-memory and file sources in tests/unit/test_source_contract.py)."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest
from kafka_helpers import produce

from stream_ae.apps.broker import create_topics
from stream_ae.config import KafkaConfig, RecordFormat
from stream_ae.decode import FeatureSchema
from stream_ae.sources.base import StartPositions
from stream_ae.sources.checks import (
    GroupSubject,
    ReaderSubject,
    yield_group_checks,
    yield_reader_checks,
)
from stream_ae.sources.kafka import KafkaGroupSource
from stream_ae.sources.replay import TopicReplaySource

GROUP_CHECKS = list(yield_group_checks())
READER_CHECKS = list(yield_reader_checks())


def messages(topic: str, p: int) -> list[bytes | None]:
    return [orjson.dumps({"key": f"k{i % 3}", "ts": 10.0 + i, "a": i * 0.25 + p,
                          "b": -0.5 * p})
            for i in range(40 + 7 * p)]


def fill(bootstrap: str, tag: str) -> tuple[str, dict[tuple[str, int], list[bytes | None]]]:
    topic = f"contract-{tag}"
    create_topics(bootstrap, {topic: 2})
    data = {(topic, p): messages(topic, p) for p in (0, 1)}
    for (_, p), values in data.items():
        produce(bootstrap, topic, p, values)
    return topic, data


@pytest.mark.parametrize("check", GROUP_CHECKS, ids=[c.__name__ for c in GROUP_CHECKS])
def test_kafka_group_source(check: Callable[[GroupSubject], None], bootstrap: str,
                            tag: str) -> None:
    topic, data = fill(bootstrap, tag)

    def make(group: str, start_positions: StartPositions | None) -> KafkaGroupSource:
        kafka = KafkaConfig(bootstrap_servers=bootstrap, group_id=f"{tag}-{group}",
                            input_topics=(topic,))
        return KafkaGroupSource(kafka, start_positions)

    check(GroupSubject(make, data, timeout=0.5, max_polls=120))


@pytest.mark.parametrize("check", READER_CHECKS, ids=[c.__name__ for c in READER_CHECKS])
def test_topic_replay_source(check: Callable[[ReaderSubject], None], bootstrap: str,
                             tag: str) -> None:
    topic, data = fill(bootstrap, tag)
    expected = {p: [(i * 0.25 + p, -0.5 * p) for i in range(len(values))]
                for (_, p), values in data.items()}

    def schema(reader: object) -> FeatureSchema:
        return FeatureSchema(RecordFormat(), ("a", "b"))

    check(ReaderSubject(lambda: TopicReplaySource(KafkaConfig(bootstrap_servers=bootstrap),
                                                  topic), expected, schema, timeout=0.5))
