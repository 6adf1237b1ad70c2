"""Memory: RSS per distinct key (lag features on), the ``max_keys`` bound, and a soak.

1. **Per key.** One engine (default settings, ``features.lags`` 8, 8 features) is warmed
   up on 20,000 records of 8 keys; then ``--keys`` records of distinct new keys go
   through it (4,096 per step). RSS is read from ``/proc/self/status`` after a
   ``gc.collect()`` before and after; bytes per key = the difference / keys. Then as many
   *more* new keys: with ``max_keys`` = ``--keys`` the least recently seen are evicted,
   so RSS must stay put (the bound).
2. **Soak.** A fresh engine (default settings, lags 8) at ``--rate`` records/s (paced
   steps of ``--rate / 10`` records every 0.1 s) for ``--soak-s`` seconds, keys drawn
   from a fleet of ``--fleet`` (default 50,000, below ``max_keys``: beyond it every batch
   with an unseen key takes the feature stage's record-by-record eviction path, which
   does not sustain 20,000 records/s here). RSS is sampled every ``--every`` seconds;
   growth is measured against the sample at the end of the first fifth of the soak (the
   warm-up of allocator pools and of the engine's windows).
3. **Service soak** (``--service-s``, instead of 1 and 2). The service as deployed
   (``stream-ae run``, its own process, exactly-once, default settings) on a 4-partition
   topic of the embedded broker (or ``--bootstrap``), fed at ``--rate`` records/s of
   ``--fleet`` keys for ``--service-s`` seconds; the service's RSS is read from
   ``/proc/PID/status`` every ``--every`` seconds (60 is sensible here), with the records
   it has processed (``stream_ae_records_in_total`` from its ``/metrics``); at the end it
   is given 120 s to process everything fed (it kept up, or how far it fell behind).
   Growth is measured after the first 5 minutes (or the first sixth, for shorter runs).
   Progress is read from the service, not from the group's committed offsets: the test
   broker (Tansu 0.6, memory engine) drops transactional offset commits under this load.
   ``commit_transaction`` succeeds, yet ``committed()`` (either isolation level) keeps
   returning an older transaction's offsets for tens of seconds, later ones never; e.g.
   transaction 206 of 233 stayed the visible one, 67k records per partition behind the
   service's last commit (so a restart finds its checkpoints ahead of the committed
   offsets, warns ``checkpoint_ahead_of_commit`` and resumes at the checkpoint, as
   designed). The committed sum is printed too; it is exact on Apache Kafka.
   The service's consumer runs with ``fetch.wait.max.ms`` 500 here instead of the
   service's 10: under load (here after ~650k records, ~210k per partition in the log and
   ~400 MiB in the broker, at 5k rec/s) the test broker starts answering the service's
   fetches *empty* at the 10 ms deadline; the consumer asks again at once, which keeps the
   broker busy (100 % of a core, 15 % with the service stopped), and the service sits
   idle in ``consume`` with a lag of 11-47k records per partition from then on. In that
   state a fresh consumer with the service's settings read 0 records in 15 s from the
   service's positions; with ``fetch.wait.max.ms`` 500 it read 565k in 8 s, and a
   service run with 500 processed all of 1.5M records fed (5k rec/s, 300 s). Unloaded,
   a 600k-record partition is read fine with 10 ms. Apache Kafka
   answers a fetch as soon as ``fetch.min.bytes`` are there, whatever the wait.

    .venv/bin/python benchmarks/memory.py [--keys 100000] [--soak-s 1800] [--rate 20000]
    .venv/bin/python benchmarks/memory.py --service-s 1800 --rate 20000 --every 60
"""

from __future__ import annotations

import argparse
import gc
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import structlog

from stream_ae.config import EngineConfig, FeaturesConfig
from stream_ae.records import Batch

D = 8


def rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def settled_rss() -> int:
    gc.collect()
    return rss_bytes()


def batch(rng: np.random.Generator, keys: list[str], t0: float) -> Batch:
    n = len(keys)
    x = rng.normal(size=(n, D)).astype(np.float32)
    return Batch(tuple(keys), t0 + np.arange(n, dtype=np.float64), x, None)


def per_key(keys: int, lags: int) -> None:
    from stream_ae.engine import Engine

    cfg = EngineConfig(features=FeaturesConfig(lags=lags, max_keys=keys))
    eng = Engine(cfg, [f"f{i}" for i in range(D)])
    rng = np.random.default_rng(0)
    for s in range(0, 20_000, 4096):
        eng.step(batch(rng, [f"warm-{i % 8}" for i in range(s, min(20_000, s + 4096))], s))
    base = settled_rss()
    marks = []
    for phase in (0, 1):  # 1: as many more new keys, beyond max_keys
        for s in range(0, keys, 4096):
            ks = [f"key-{phase}-{i:07d}" for i in range(s, min(keys, s + 4096))]
            eng.step(batch(rng, ks, 1e6 + s))
        marks.append(settled_rss())
        if phase == 0:  # the eviction phase below is slow on a loaded machine: print now
            print(f"after {keys:,} new keys: {(marks[0] - base) / keys:,.0f} bytes per key "
                  f"({base / 2**20:.0f} -> {marks[0] / 2**20:.0f} MiB)", flush=True)
    print(f"| lags | keys | RSS before | after {keys:,} keys | bytes per key "
          f"| after {2 * keys:,} keys (max_keys {keys:,}) |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| {lags} | {keys:,} | {base / 2**20:.0f} MiB | {marks[0] / 2**20:.0f} MiB "
          f"| {(marks[0] - base) / keys:,.0f} | {marks[1] / 2**20:.0f} MiB |")


def soak(seconds: float, rate: int, every: float, fleet: int, lags: int) -> None:
    from stream_ae.engine import Engine

    eng = Engine(EngineConfig(features=FeaturesConfig(lags=lags)), [f"f{i}" for i in range(D)])
    rng = np.random.default_rng(1)
    step_n = max(1, rate // 10)
    start = time.monotonic()
    next_sample, samples = start, []
    sent = 0
    while (now := time.monotonic()) - start < seconds:
        ks = [f"soak-{k}" for k in rng.integers(0, fleet, step_n)]
        eng.step(batch(rng, ks, 2e6 + sent))
        sent += step_n
        if now >= next_sample:
            samples.append((now - start, sent, rss_bytes()))
            next_sample += every
        time.sleep(max(0.0, start + sent / rate - time.monotonic()))
    ref_i = next(i for i, (t, _, _) in enumerate(samples) if t >= seconds / 5)
    ref = samples[ref_i][2]
    print(f"\nsoak: {sent:,} records in {seconds:.0f} s ({sent / seconds:,.0f} rec/s), "
          f"{fleet:,} keys, lags {lags}")
    print(f"| soak at {rate:,} rec/s: elapsed s | records | RSS MiB | vs RSS at "
          f"{samples[ref_i][0]:.0f} s |")
    print("|---:|---:|---:|---:|")
    shown = [*samples[:: max(1, len(samples) // 12)], samples[-1]]
    for t, n, r in shown:
        print(f"| {t:.0f} | {n:,} | {r / 2**20:.1f} | {100 * (r - ref) / ref:+.1f} % |")
    peak = max(r for _, _, r in samples[ref_i:])
    print(f"growth after the first fifth: end {100 * (samples[-1][2] - ref) / ref:+.1f} %, "
          f"peak {100 * (peak - ref) / ref:+.1f} %")


def _rss_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))


def _retained_topic(bootstrap: str, topic: str, partitions: int, retention_ms: int) -> None:
    """The input topic with a short retention: a 30-minute feed at 20k records/s is 36M
    records, more than the memory engine of the test broker should hold."""
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": bootstrap})
    fut = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1,
                                        config={"retention.ms": str(retention_ms)})])
    fut[topic].result(15)


def service_soak(seconds: float, rate: int, every: float, fleet: int,
                 bootstrap: str | None, retention_ms: int) -> None:
    import pathlib
    import signal
    import subprocess
    import sys
    import tempfile
    import threading
    import uuid

    import orjson
    import yaml
    from confluent_kafka import Consumer, TopicPartition

    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    import alert_latency as lat  # the same service config and feed as the latency benchmark

    from stream_ae.apps.broker import EmbeddedBroker, create_topics, free_port

    broker = None if bootstrap else EmbeddedBroker().__enter__()
    boot = bootstrap or broker.bootstrap  # type: ignore[union-attr]
    tag = uuid.uuid4().hex[:8]
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="stream-ae-soak-"))
    cfg = lat.config_for(boot, tag, tmp)
    port = free_port()
    cfg["metrics"] = {"enabled": True, "host": "127.0.0.1", "port": port}
    if broker is not None:  # the test broker answers slow fetches empty (see the docstring)
        cfg["kafka"]["extra"]["fetch.wait.max.ms"] = "500"
    (tmp / "service.yaml").write_text(yaml.safe_dump(cfg))
    topic = cfg["kafka"]["input_topics"][0]
    create_topics(boot, {cfg["kafka"]["alerts_topic"]: 1})
    _retained_topic(boot, topic, lat.PARTITIONS, retention_ms)
    feed = lat.Feed(boot, topic)
    feed.send(lat.WARMUP * lat.PARTITIONS, 0.0)
    feed.producer.flush(30)
    log_file = open(tmp / "service.log", "wb")  # noqa: SIM115 (lives as long as the service)
    service = subprocess.Popen([sys.executable, "-m", "stream_ae.cli", "run", "-c",
                                str(tmp / "service.yaml")], stderr=log_file)
    lat.wait_committed(boot, cfg["kafka"]["group_id"], topic, lat.WARMUP)
    def send(n: int, anomaly_rate: float) -> None:  # as lat.Feed.send, keys from the fleet
        x = feed.rng.normal(size=(n, 8)) @ feed.mix
        x[feed.rng.random(n) < anomaly_rate] += 8.0
        now = time.time()
        for row, k in zip(x.tolist(), feed.rng.integers(0, fleet, n).tolist(), strict=True):
            doc = orjson.dumps(
                {"key": f"dev-{k}", "ts": now, **dict(zip(lat.NAMES, row, strict=True))})
            while True:
                try:
                    feed.producer.produce(topic, doc, partition=feed.i % lat.PARTITIONS)
                    break
                except BufferError:  # the broker is slower than the feed: wait for it
                    feed.producer.poll(0.1)
            feed.i += 1
        feed.producer.poll(0)

    feed.send = send  # type: ignore[method-assign]
    runner = threading.Thread(target=feed.steady, args=(rate, seconds), daemon=True)
    start = time.monotonic()
    runner.start()
    samples: list[tuple[float, int, int]] = []
    processed: list[int] = []
    broker_rss: list[int] = []
    while runner.is_alive():
        samples.append((time.monotonic() - start, feed.i, _rss_of(service.pid)))
        processed.append(_processed(port))
        if broker is not None and broker._proc is not None:
            broker_rss.append(_rss_of(broker._proc.pid))
        runner.join(every)
    sent = feed.i
    deadline = time.monotonic() + 120
    while True:  # how far behind the service is at the end (0: it kept up)
        done = _processed(port)
        if done >= sent or time.monotonic() > deadline:
            break
        time.sleep(1)
    lag_s = time.monotonic() - start - seconds
    c = Consumer({"bootstrap.servers": boot, "group.id": cfg["kafka"]["group_id"]})
    committed = sum(tp.offset for tp in c.committed(
        [TopicPartition(topic, p) for p in range(lat.PARTITIONS)], timeout=10))
    c.close()
    service.send_signal(signal.SIGTERM)
    service.wait(60)
    log_file.close()
    if broker is not None:
        broker.stop()
    _print_soak(samples, seconds, rate, f"service (stream-ae run), {fleet:,} keys; "
                f"processed {done:,} of {sent:,} records {lag_s:.0f} s after the feed ended "
                f"(the broker reports {committed:,} committed)", processed)
    if broker_rss:
        print(f"test broker RSS: {broker_rss[0] / 2**20:.0f} MiB at the start, "
              f"{max(broker_rss) / 2**20:.0f} MiB at most (input retention {retention_ms} ms)")


def _processed(port: int) -> int:
    """Records the service has consumed (``stream_ae_records_in_total``; -1: no answer)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
    except OSError:
        return -1
    return int(sum(s.value for family in text_string_to_metric_families(text)
                   for s in family.samples if s.name == "stream_ae_records_in_total"))


def _print_soak(samples: list[tuple[float, int, int]], seconds: float, rate: int,
                what: str, processed: list[int] | None = None) -> None:
    ref_t = min(300.0, seconds / 6)
    ref_i = next(i for i, (t, _, _) in enumerate(samples) if t >= ref_t - 1)
    ref = samples[ref_i][2]
    print(f"\nsoak: {what}, {seconds:.0f} s at {rate:,} rec/s")
    done = processed or [-1] * len(samples)
    print(f"| elapsed s | records fed | processed | RSS MiB "
          f"| vs RSS at {samples[ref_i][0]:.0f} s |")
    print("|---:|---:|---:|---:|---:|")
    rows = sorted({*range(0, len(samples), max(1, len(samples) // 16)), len(samples) - 1})
    for i in rows:
        t, n, r = samples[i]
        p = f"{done[i]:,}" if done[i] >= 0 else "-"
        print(f"| {t:.0f} | {n:,} | {p} | {r / 2**20:.1f} | {100 * (r - ref) / ref:+.1f} % |")
    peak = max(r for _, _, r in samples[ref_i:])
    end = samples[-1][2]
    print(f"growth after {samples[ref_i][0]:.0f} s: end {100 * (end - ref) / ref:+.1f} %, "
          f"peak {100 * (peak - ref) / ref:+.1f} %")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--lags", type=int, default=8)
    ap.add_argument("--soak-s", type=float, default=1800.0)
    ap.add_argument("--rate", type=int, default=20_000)
    ap.add_argument("--every", type=float, default=10.0)
    ap.add_argument("--fleet", type=int, default=50_000)
    ap.add_argument("--service-s", type=float, default=0.0,
                    help="soak the service (stream-ae run) this long instead")
    ap.add_argument("--bootstrap", default=None)
    ap.add_argument("--retention-ms", type=int, default=120_000,
                    help="input topic retention of the service soak")
    args = ap.parse_args()
    if args.service_s > 0:
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
        print(f"load average before: {os.getloadavg()[0]:.2f}")
        service_soak(args.service_s, args.rate, args.every, args.fleet, args.bootstrap,
                     args.retention_ms)
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        return
    import torch

    torch.set_num_threads(1)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    per_key(args.keys, args.lags)
    if args.soak_s > 0:
        soak(args.soak_s, args.rate, args.every, args.fleet, args.lags)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
