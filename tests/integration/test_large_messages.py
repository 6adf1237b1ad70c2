"""Messages around and far beyond the 1 MB limit on a real broker: every offset is committed,
each big message is dead-lettered with a bounded, truncated copy, the other alerts are those
of the offline engine, and the service never restarts.

The embedded broker (Tansu) accepts messages of any size (20 MB tried) and hands them to
consumers with the default fetch limits; Apache Kafka refuses messages above the topic's
``max.message.bytes`` (default 1048588), so the input topic of this test then needs a
larger limit."""

from __future__ import annotations

import hashlib
import pathlib

import orjson
from confluent_kafka import Producer
from kafka_helpers import offline_alert_offsets, read_all, records, service_config, wait_committed
from structlog.testing import capture_logs
from test_service import service

from stream_ae.config import Settings
from stream_ae.schema import AlertMessage

LIMIT = 1_000_000  # the producer limit of the service: librdkafka's default message.max.bytes


def big_messages() -> dict[int, tuple[bytes, str]]:
    """size -> (message, expected reason)."""
    def padded(size: int) -> bytes:
        head = b'{"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0, "pad": "'
        return head + b"x" * (size - len(head) - 2) + b'"}'

    return {999_900: (b"{" + b"y" * 999_899, "invalid_json"),  # decodable size, still too big
            1_000_001: (padded(1_000_001), "oversized"),
            1_048_000: (padded(1_048_000), "oversized"),
            5_000_000: (b"z" * 5_000_000, "oversized")}


def produce_mixed(bootstrap: str, topic: str, values: list[bytes]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                  "message.max.bytes": 10_000_000})  # the test's own producer may send them
    for i, v in enumerate(values):
        p.produce(topic, v, b"dev-%d" % i, partition=0, headers=[("trace", b"t" * 3000)])
    assert p.flush(30) == 0


def test_big_messages_are_dead_lettered_and_never_block_the_partition(
        bootstrap: str, tag: str, topics: dict[str, str], tmp_path: pathlib.Path) -> None:
    cfg = service_config(bootstrap, tag, tmp_path, kafka={"max_message_bytes": LIMIT})
    settings = Settings.load(None, **cfg)
    values, _ = records(500, seed=11, partition=0)
    big = big_messages()
    at = {}
    for j, (size, (msg, _)) in enumerate(big.items()):
        at[size] = 60 + 110 * j
        values.insert(at[size], msg)
    produce_mixed(bootstrap, topics["in"], values)
    with capture_logs() as logs, service(settings, topics["decisions"]) as (thread, _):
        wait_committed(bootstrap, settings.kafka.group_id, topics["in"], [len(values), 0],
                       timeout=60, alive=thread.is_alive)
    assert "service_restarting" not in [e["event"] for e in logs]
    dead = {int(dict(m.headers())["stream-ae.source-offset"]): m
            for m in read_all(bootstrap, topics["dlq"])}
    assert sorted(dead) == sorted(at.values())
    for size, (msg, reason) in big.items():
        m = dead[at[size]]
        h = dict(m.headers())
        assert h["stream-ae.reason"] == reason.encode()
        assert h["stream-ae.truncated"] == b"true"
        assert h["stream-ae.original-size"] == str(size).encode()
        assert h["stream-ae.original-sha256"] == hashlib.sha256(msg).hexdigest().encode()
        assert msg.startswith(m.value()) and 900_000 < len(m.value()) < LIMIT
        assert h["trace"] == b"t" * 1024 and m.key() == b"dev-%d" % at[size]
    alerts = [AlertMessage.model_validate_json(m.value())
              for m in read_all(bootstrap, topics["alerts"])]
    expected = offline_alert_offsets(settings, topics["in"], 0, values)
    assert len(expected) >= 5 and not set(expected) & set(at.values())
    assert sorted(a.source.offset for a in alerts) == expected
    decided = sorted(o for m in read_all(bootstrap, topics["decisions"])
                     for o in range(orjson.loads(m.value())["start_offset"],
                                    orjson.loads(m.value())["end_offset"]))
    assert decided == list(range(len(values)))
