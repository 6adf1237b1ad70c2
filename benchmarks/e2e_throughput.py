"""End-to-end service throughput on a real broker, beside a river peer in the same harness.

Produces ``--n`` 8-feature JSON records to a 4-partition topic, then runs the service
(``ServiceLoop`` with the Kafka source and the exactly-once Kafka sink, default engine
config, one torch thread) until the last decision is committed. The peer is the same
runner with river ``HalfSpaceTrees`` (score_one + learn_one per record) as the engine.

Two rates per row: ``total`` = records / (start .. last commit), including process-level
start-up, group join and the first warm-up epochs; ``processing`` = records / (first
assignment .. last commit); ``steady`` = records / time after every partition passed twice
the engine's warm-up (the per-partition warm-up epochs are a one-time cost);
``rec per CPU-s`` = records / CPU seconds of the service process
(all its threads, librdkafka's included) during processing: less sensitive to other load on
a shared machine; ``from start`` = records / (building the service, torch import and engine
warm-up included .. last commit), the closest to a process start in this harness (the
service's own imports before that are excluded: about 0.5 s). Rows: the defaults as shipped
(``max_records`` 4096, adaptive batching) and the benchmark's setting ``max_records`` 16384
(about 4096 rows per partition engine per step).
Uses the embedded Tansu broker unless ``--bootstrap`` is given. Machines are shared and
noisy: compare the ratio measured in one run.

    .venv/bin/python benchmarks/e2e_throughput.py [--n 1000000] [--river-n 100000]
"""

from __future__ import annotations

import argparse
import gc
import os
import pathlib
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import orjson
import structlog
from confluent_kafka import Producer

from stream_ae.apps.broker import EmbeddedBroker, create_topics
from stream_ae.config import Settings
from stream_ae.records import Batch, StepResult
from stream_ae.service.loop import ServiceLoop
from stream_ae.service.main import kafka_loop, prewarm_engine, tune_gc

NAMES = tuple(f"f{i}" for i in range(8))
PARTITIONS = 4
MAX_RECORDS = 16384
DEFAULT_GC = gc.get_threshold()


def produce(bootstrap: str, topic: str, n: int, seed: int = 0) -> None:
    """Correlated Gaussian readings with 0.5 % spikes, round-robin over the partitions."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(8, 8)) / 3
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000,
                  "compression.type": "lz4", "queue.buffering.max.messages": 1_000_000})
    for start in range(0, n, 50_000):
        x = rng.normal(size=(min(50_000, n - start), 8)) @ mix
        x[rng.random(len(x)) < 0.005] += 6.0
        for i, row in enumerate(x.tolist()):
            j = start + i
            value = orjson.dumps({"key": f"dev-{j % 64}", "ts": 1.7e9 + j * 1e-3,
                                  **dict(zip(NAMES, row, strict=True))})
            while True:
                try:
                    p.produce(topic, value, partition=j % PARTITIONS)
                    break
                except BufferError:
                    p.poll(0.01)
        p.poll(0)
    assert p.flush(60) == 0


class RiverHST:
    """river HalfSpaceTrees as an engine: score_one then learn_one per record."""

    def __init__(self, names: Sequence[str], limit: float = 0.9) -> None:
        from river import anomaly, preprocessing

        self.names = tuple(names)
        self.limit = limit
        self.model = preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(seed=0)
        self.records_seen = 0
        self.model_version = 0

    def step(self, batch: Batch) -> StepResult:
        scores = np.empty(len(batch))
        for i, row in enumerate(batch.values.tolist()):
            x = dict(zip(self.names, row, strict=True))
            scores[i] = self.model.score_one(x)
            self.model.learn_one(x)
        self.records_seen += len(batch)
        n = len(batch)
        return StepResult(scores, np.full(n, self.limit), scores > self.limit,
                          np.zeros(n, dtype=bool), np.zeros((n, len(self.names)), np.float32),
                          self.names)

    def snapshot(self) -> bytes:
        return b""  # checkpoints are not part of this measurement


def settings_for(bootstrap: str, topic: str, tmp: pathlib.Path,
                 max_records: int | None = MAX_RECORDS) -> Settings:
    tag = uuid.uuid4().hex[:8]
    batching = {} if max_records is None else {"max_records": max_records}
    return Settings.load(None, **{
        "engine": {"features": {"names": list(NAMES)}},
        "kafka": {"bootstrap_servers": bootstrap, "input_topics": [topic],
                  "group_id": f"bench-{tag}", "transactional_id": f"bench-{tag}",
                  "alerts_topic": f"alerts-{tag}", "dead_letter_topic": f"dlq-{tag}",
                  "events_topic": f"events-{tag}", "session_timeout_ms": 6000,
                  "extra": {"heartbeat.interval.ms": "500",
                            "partition.assignment.strategy": "range"}},
        "batching": batching,
        "checkpoint": {"directory": str(tmp / tag), "interval_s": 30.0,
                       "interval_records": 1_000_000},
        "metrics": {"enabled": False},
    })


def timed_run(runner: ServiceLoop, n_per_part: int, warm: int, built: float
              ) -> dict[str, float]:
    """Run until every partition reached ``n_per_part``; rates as in the module docstring."""
    stop = threading.Event()
    t0 = time.perf_counter()
    marks: dict[str, tuple[float, float, int]] = {}

    def mark(name: str, done: int) -> None:
        marks.setdefault(name, (time.perf_counter(), time.process_time(), done))

    def watch() -> None:
        while not stop.is_set():
            pos = runner.positions()
            done = sum(pos.values())
            if pos:
                mark("first", done)
            if len(pos) == PARTITIONS and min(pos.values()) >= warm:
                mark("warm", done)
            if len(pos) == PARTITIONS and min(pos.values()) >= n_per_part:
                mark("end", done)
                stop.set()
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    runner.run(stop)
    watcher.join()
    (t1, c1, _), (tw, _, nw), (te, ce, ne) = marks["first"], marks["warm"], marks["end"]
    n = n_per_part * PARTITIONS
    return {"total": n / (te - t0), "processing": n / (te - t1), "cpu": n / (ce - c1),
            "start": n / (te - built),
            "steady": (ne - nw) / (te - tw)}


def measure(name: str, bootstrap: str, n: int, tmp: pathlib.Path, river: bool,
            max_records: int | None = MAX_RECORDS) -> None:
    topic = f"bench-in-{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, {topic: PARTITIONS})
    produce(bootstrap, topic, n)
    settings = settings_for(bootstrap, topic, tmp, max_records)
    built = time.perf_counter()
    if river:  # river's imports (it pulls in scikit-learn) count from start, as torch's do,
        RiverHST(NAMES)  # not in the first partition's processing
    engines = ((RiverHST, lambda blob: RiverHST(NAMES)) if river
               else prewarm_engine(settings))
    runner = kafka_loop(settings, None, None, engines)  # type: ignore[arg-type]
    tune_gc()  # as run_service does
    warm = 2 * settings.engine.training.warmup
    r = timed_run(runner, n // PARTITIONS, warm, built)
    gc.unfreeze()
    gc.set_threshold(*DEFAULT_GC)
    print(f"| {name:<34} | {n:>9,} | {r['start']:>9,.0f} | {r['total']:>9,.0f} "
          f"| {r['processing']:>9,.0f} | {r['steady']:>9,.0f} | {r['cpu']:>9,.0f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--river-n", type=int, default=100_000)
    ap.add_argument("--bootstrap", default=None)
    args = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="stream-ae-bench-"))
    broker = None if args.bootstrap else EmbeddedBroker().__enter__()
    bootstrap = args.bootstrap or broker.bootstrap  # type: ignore[union-attr]
    print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores are shared: compare ratios)")
    print("| pipeline (exactly-once, 4 partitions) | records | from start rec/s | total rec/s "
          "| processing rec/s | steady rec/s | rec per CPU-s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    try:
        measure("stream-ae, settings as shipped", bootstrap, args.n, tmp, river=False,
                max_records=None)
        measure("stream-ae, max_records 16384", bootstrap, args.n, tmp, river=False)
        measure("river HalfSpaceTrees (same harness)", bootstrap, args.river_n, tmp, river=True)
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
