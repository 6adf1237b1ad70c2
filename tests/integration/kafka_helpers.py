"""Helpers for the integration tests: produce records, read topics to their end, offline oracle."""

from __future__ import annotations

import pathlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import yaml
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from stream_ae.config import Settings
from tests import oracle
from tests.streams import gaussian, messages

NAMES = ("a", "b", "c", "d")


def service_config(bootstrap: str, tag: str, tmp: pathlib.Path, **over: Any) -> dict[str, Any]:
    """A small, fast service configuration (plain data, for Settings or a YAML file)."""
    cfg: dict[str, Any] = {
        "engine": {"features": {"names": list(NAMES)},
                   "model": {"hidden": [8], "bottleneck": 2},
                   "training": {"warmup": 150, "window": 256, "batch_size": 64, "stride": 64,
                                "warmup_epochs": 3},
                   "threshold": {"window": 200, "q": 0.98},
                   # short test streams: a budget that flags their injected anomalies
                   "decision": {"false_alarm_rate": 1e-2, "min_scores": 30,
                                "key_min_records": 10}},
        "kafka": {"bootstrap_servers": bootstrap, "group_id": f"g-{tag}",
                  "input_topics": [f"in-{tag}"], "alerts_topic": f"alerts-{tag}",
                  "dead_letter_topic": f"dlq-{tag}", "events_topic": f"events-{tag}",
                  "transactional_id": f"tx-{tag}", "session_timeout_ms": 6000,
                  "extra": {"heartbeat.interval.ms": "500",
                            "partition.assignment.strategy": "range"}},
        "batching": {"max_records": 256, "max_wait_ms": 100},
        "checkpoint": {"directory": str(tmp / "ckpt"), "interval_records": 1000,
                       "interval_s": 3.0, "keep": 3},
        "metrics": {"enabled": True, "port": 0},
        "log": {"format": "json", "level": "info"},
    }
    for key, value in over.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    return cfg


def write_config(cfg: dict[str, Any], path: pathlib.Path) -> pathlib.Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def records(n: int, seed: int, partition: int) -> tuple[list[bytes], np.ndarray]:
    """``n`` JSON sensor readings with a few injected anomalies."""
    x, _ = gaussian(n, len(NAMES), seed, anomalies=max(1, n // 60), after=200, signed=True,
                    couple=0.8)
    return messages(x, NAMES, key=lambda i: f"dev-{partition}-{i % 4}",
                    t0=1_700_000_000.0), x


def produce(bootstrap: str, topic: str, partition: int, values: Sequence[bytes | None],
            keys: Sequence[bytes | None] | None = None) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i, v in enumerate(values):
        p.produce(topic, v, keys[i] if keys else None, partition=partition)
        if i % 5000 == 0:
            p.poll(0)
    assert p.flush(30) == 0


def read_all(bootstrap: str, topic: str, partitions: int = 1, timeout: float = 30.0,
             isolation: str = "read_committed") -> list[Any]:
    """Every message of ``topic`` a reader with ``isolation`` sees (read_committed: the
    committed ones), read until each partition's end."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{time.time_ns()}",
                  "enable.partition.eof": True, "isolation.level": isolation,
                  "enable.auto.commit": False, "fetch.queue.backoff.ms": 10})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    out: list[Any] = []
    open_parts = set(range(partitions))
    deadline = time.monotonic() + timeout
    try:
        while open_parts and time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                err = m.error()
                if err is not None and err.code() == KafkaError._PARTITION_EOF:
                    open_parts.discard(m.partition())
                elif err is None:
                    out.append(m)
    finally:
        c.close()
    assert not open_parts, f"{topic}: partitions {open_parts} did not reach their end"
    return out


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> list[int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return [tp.offset for tp in tps]
    finally:
        c.close()


def wait_committed(bootstrap: str, group: str, topic: str, ends: Sequence[int],
                   timeout: float = 90.0, alive: Callable[[], bool] = lambda: True) -> None:
    """Wait until the group committed ``ends`` (a partition with nothing to read: 0 or none)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        if [max(o, 0) for o in committed(bootstrap, group, topic, len(ends))] == list(ends):
            return
        time.sleep(0.3)
    why = "" if alive() else " (the service stopped)"
    raise AssertionError(f"offsets {committed(bootstrap, group, topic, len(ends))} != {ends}{why}")


def offline_alert_offsets(settings: Settings, topic: str, partition: int,
                          values: Sequence[bytes | None], chunk: int | None = None) -> list[int]:
    """What an uninterrupted offline engine flags on the same partition's records."""
    return oracle.alert_offsets(settings, values, NAMES, topic, partition, chunk)
