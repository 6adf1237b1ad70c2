"""Alert latency at a steady input rate: produce -> alert readable (read_committed).

Runs the service as a subprocess (``stream-ae run``, exactly-once, default engine config
and batching: ``max_wait_ms`` 200) on a 4-partition topic of the embedded broker (or
``--bootstrap``).
After a warm-up burst that takes every partition's engine through its warm-up, records
are produced at ``--rate`` per second for ``--seconds``, each carrying its produce time as
event time and 1 % of them anomalous; a ``read_committed`` subscriber timestamps each alert
on arrival. Latency = arrival - produce time (same clock, same machine).

    .venv/bin/python benchmarks/alert_latency.py [--rate 5000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import orjson
import structlog
import yaml
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from stream_ae.apps.broker import EmbeddedBroker, create_topics
from stream_ae.config import Settings

NAMES = tuple(f"f{i}" for i in range(8))
PARTITIONS = 4
WARMUP = 4000  # records per partition produced before timing starts


def config_for(bootstrap: str, tag: str, tmp: pathlib.Path) -> dict[str, Any]:
    return {
        "engine": {"features": {"names": list(NAMES)}},
        "kafka": {"bootstrap_servers": bootstrap, "input_topics": [f"lat-in-{tag}"],
                  "group_id": f"lat-{tag}", "transactional_id": f"lat-{tag}",
                  "alerts_topic": f"lat-alerts-{tag}", "dead_letter_topic": f"lat-dlq-{tag}",
                  "events_topic": f"lat-events-{tag}", "session_timeout_ms": 6000,
                  "extra": {"heartbeat.interval.ms": "500",
                            "partition.assignment.strategy": "range"}},
        "checkpoint": {"directory": str(tmp / tag)},
        "metrics": {"enabled": False},
        "log": {"format": "json", "level": "warning"},
    }


class Feed:
    """Produce readings; ``rate`` None means as fast as possible."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2})
        self.rng = np.random.default_rng(0)
        self.mix = self.rng.normal(size=(8, 8)) / 3
        self.i = 0

    def send(self, n: int, anomaly_rate: float) -> None:
        x = self.rng.normal(size=(n, 8)) @ self.mix
        x[self.rng.random(n) < anomaly_rate] += 8.0
        now = time.time()
        for row in x.tolist():
            doc = orjson.dumps(
                {"key": f"dev-{self.i % 64}", "ts": now, **dict(zip(NAMES, row, strict=True))})
            while True:
                try:
                    self.producer.produce(self.topic, doc, partition=self.i % PARTITIONS)
                    break
                except BufferError:  # the broker is slower than the feed: wait for it
                    self.producer.poll(0.1)
            self.i += 1
        self.producer.poll(0)

    def steady(self, rate: int, seconds: float) -> float:
        start = time.time()
        tick = 0.01
        sent = 0
        while time.time() - start < seconds:
            due = int((time.time() - start) * rate) - sent
            if due > 0:
                self.send(due, 0.01)
                sent += due
            time.sleep(tick)
        self.producer.flush(10)
        return start


def collect(bootstrap: str, topic: str, stop: threading.Event,
            out: list[tuple[float, float, float]]) -> None:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"lat-reader-{uuid.uuid4().hex}",
                  "isolation.level": "read_committed", "fetch.wait.max.ms": 10,
                  "fetch.queue.backoff.ms": 10, "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    while not stop.is_set():
        # one message per call: consume(n, timeout) would hold the first alert until n
        # arrived or the timeout passed, and stamp them all on return
        m = c.poll(0.05)
        if m is not None and m.error() is None:
            arrived = time.time()
            doc = orjson.loads(m.value())
            out.append((arrived, doc["event_time"], doc["detected_at"]))
    c.close()


def wait_committed(bootstrap: str, group: str, topic: str, per_partition: int) -> None:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    while min(tp.offset for tp in c.committed(tps, timeout=10)) < per_partition:
        time.sleep(0.2)
    c.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=5000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--bootstrap", default=None)
    args = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    broker = None if args.bootstrap else EmbeddedBroker().__enter__()
    bootstrap = args.bootstrap or broker.bootstrap  # type: ignore[union-attr]
    tag = uuid.uuid4().hex[:8]
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="stream-ae-latency-"))
    cfg = config_for(bootstrap, tag, tmp)
    (tmp / "service.yaml").write_text(yaml.safe_dump(cfg))
    settings = Settings.load(tmp / "service.yaml")
    topic = settings.kafka.input_topics[0]
    create_topics(bootstrap, {topic: PARTITIONS, settings.kafka.alerts_topic: 1})
    feed = Feed(bootstrap, topic)
    feed.send(WARMUP * PARTITIONS, 0.0)  # every engine through its warm-up before timing
    feed.producer.flush(30)
    # the service in its own process, as deployed (no GIL shared with the feed and reader)
    with open(tmp / "service.log", "wb") as log:
        service = subprocess.Popen([sys.executable, "-m", "stream_ae.cli", "run", "-c",
                                    str(tmp / "service.yaml")], stderr=log)
    reader_stop = threading.Event()
    arrivals: list[tuple[float, float, float]] = []
    reader = threading.Thread(target=collect, args=(bootstrap, settings.kafka.alerts_topic,
                                                    reader_stop, arrivals), daemon=True)
    reader.start()
    wait_committed(bootstrap, settings.kafka.group_id, topic, WARMUP)
    start = feed.steady(args.rate, args.seconds)
    time.sleep(2.0)
    service.send_signal(signal.SIGTERM)
    service.wait(60)
    reader_stop.set()
    reader.join(10)
    timed = [(arr - ev, det - ev) for arr, ev, det in arrivals if ev is not None and ev >= start]
    lat = np.array([t[0] for t in timed]) * 1000
    dec = np.array([t[1] for t in timed]) * 1000
    print("| input rate | alerts timed | p50 ms | p90 ms | p99 ms | max ms "
          "| decided p50 ms | decided p99 ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    if lat.size:
        p50, p90, p99 = np.percentile(lat, [50, 90, 99])
        d50, d99 = np.percentile(dec, [50, 99])
        print(f"| {args.rate:,}/s | {lat.size} | {p50:.0f} | {p90:.0f} | {p99:.0f} | "
              f"{lat.max():.0f} | {d50:.0f} | {d99:.0f} |")
    if broker is not None:
        broker.stop()


if __name__ == "__main__":
    main()
