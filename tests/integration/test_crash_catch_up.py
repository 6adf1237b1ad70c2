"""SIGKILL ``stream-ae run`` (a real process, exactly-once) while it works through a long
backlog, and while its transactions are open; restart it after each kill.

* **Catch-up**: 160,000 records are produced before the service first starts; it is killed
  at committed-offset progress marks (each kill must find a backlog left, and progress since
  the previous kill), and once the moment a restart's partitions are ready, while it
  replays ~24k records from its checkpoints up to the committed offsets (no commit may have
  happened since the previous kill).
* **Open transactions**: the stream arrives in bursts, each with 40 invalid messages of
  400 kB early on (their batch's transaction writes 16 MB of dead letters after its
  alerts), and the service is killed the moment a ``read_uncommitted`` reader sees alerts
  of a batch whose offsets are not committed yet.
  After each kill, outputs of input offsets at or above the committed offset that a
  ``read_uncommitted`` reader sees and a ``read_committed`` reader does not prove that the
  kill landed inside an open transaction; the restart (same ``transactional.id``) aborts it.

At the end of each: no alert lost or extra against an uninterrupted offline engine, every
offset has exactly one outcome in the decision trail, every duplicate is identical to its
first copy but for ``detected_at`` (the test broker hands aborted transactions to
read_committed readers; zero duplicates against Apache Kafka), every restart restored its
partitions' state instead of re-warming, and each partition's final checkpoint has seen
the whole partition. Figures are printed as ``crash_figures {json}``.
"""

from __future__ import annotations

import json
import pathlib
import threading
import time
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from kafka_helpers import (
    offline_alert_offsets,
    produce,
    read_all,
    records,
    service_config,
    wait_committed,
    write_config,
)
from service_proc import (
    ServiceProcess,
    account,
    committed_now,
    ready_events,
    restored_after_first,
    total_committed,
    wait_for,
)
from structlog.testing import capture_logs

from stream_ae.apps.broker import create_topics
from stream_ae.checkpoint.base import build_store
from stream_ae.config import Settings
from stream_ae.testing import external_bootstrap

pytestmark = [pytest.mark.slow, pytest.mark.fault, pytest.mark.timeout(900)]
BAD = b"{oops"
#: invalid JSON of 400 kB: a burst holding some makes its batch's transaction write
#: megabytes of dead letters after its alerts, so the transaction stays open for a while
BIG_BAD_HEAD = b'{"big": "'
BIG_BAD = BIG_BAD_HEAD + b"x" * 400_000


def stream(p: int, n: int, seed: int, bad_every: int) -> list[bytes]:
    values, _ = records(n, seed=seed + p, partition=p)
    for o in range(bad_every // 2, n, bad_every):
        values[o] = BAD
    return values


def crash_config(bootstrap: str, tag: str, tmp: pathlib.Path, **over: Any) -> dict[str, Any]:
    """Exactly-once (the default), large batches, checkpoints far apart (long replays)."""
    cfg = service_config(bootstrap, tag, tmp, **over)
    cfg["kafka"]["session_timeout_ms"] = 3000  # a killed member leaves the group sooner
    cfg["engine"]["features"]["lags"] = 2
    cfg["engine"]["training"].update(window=1024, stride=512)
    cfg["engine"]["decision"]["false_alarm_rate"] = 1e-3
    return cfg


def make_topics(bootstrap: str, tag: str, parts: int) -> dict[str, str]:
    names = {k: f"{k}-{tag}" for k in ("in", "alerts", "dlq", "events", "decisions")}
    create_topics(bootstrap, {names["in"]: parts,
                              **{v: 1 for k, v in names.items() if k != "in"}})
    return names


def is_bad(value: bytes) -> bool:
    return value == BAD or value.startswith(BIG_BAD_HEAD)


def finish_and_check(svc: ServiceProcess, bootstrap: str, topics: dict[str, str],
                     settings: Settings, data: dict[int, list[bytes]]) -> dict[str, Any]:
    """Restart, run to the end, stop cleanly; account every output against the oracle."""
    group, parts = settings.kafka.group_id, len(data)
    svc.start()
    wait_committed(bootstrap, group, topics["in"], [len(v) for v in data.values()],
                   timeout=240, alive=svc.alive)
    assert svc.stop() == 0, svc.tail()
    expected = {p: offline_alert_offsets(settings, topics["in"], p, v, chunk=4096)
                for p, v in data.items()}
    acc, _ = account(read_all(bootstrap, topics["alerts"], timeout=60),
                     read_all(bootstrap, topics["decisions"], timeout=60),
                     {p: len(v) for p, v in data.items()}, expected)
    assert sum(len(e) for e in expected.values()) >= 100 * parts  # not a vacuous comparison
    assert acc.ok, acc
    dead = {(int(dict(m.headers())["stream-ae.source-partition"]),
             int(dict(m.headers())["stream-ae.source-offset"]))
            for m in read_all(bootstrap, topics["dlq"])}
    assert dead == {(p, o) for p, v in data.items() for o, x in enumerate(v) if is_bad(x)}
    handovers, rewarmed = restored_after_first(ready_events(svc))
    assert rewarmed == 0 and handovers >= parts * (svc.starts - 1)
    store = build_store(settings)
    store.open()
    try:
        with capture_logs():
            final = {p: store.load(topics["in"], p) for p in data}
    finally:
        store.close()
    for p, values in data.items():  # state continued across every kill
        ck = final[p]
        assert ck is not None and ck.position == len(values)
        assert ck.meta["records_seen"] == sum(not is_bad(v) for v in values)
    if external_bootstrap():
        assert acc.duplicate_alerts == 0
    return {"messages": sum(len(v) for v in data.values()), "alerts": acc.alerts,
            "lost": acc.lost_alerts, "extra": acc.extra_alerts,
            "undecided": acc.undecided_offsets,
            "duplicates_identical": acc.duplicate_alerts - acc.non_identical_alerts,
            "duplicates_non_identical": acc.non_identical_alerts,
            "duplicate_decisions": acc.duplicate_decisions,
            "restores": handovers, "rewarmed": rewarmed,
            "dead_letters": len(dead), "peak_rss_mib": round(svc.peak_rss_mib(), 1)}


def test_sigkill_during_a_long_catch_up(bootstrap: str, tag: str,
                                        tmp_path: pathlib.Path) -> None:
    parts, n = 4, 40_000
    topics = make_topics(bootstrap, tag, parts)
    cfg = crash_config(bootstrap, tag, tmp_path,
                       batching={"max_records": 2048, "max_wait_ms": 100},
                       checkpoint={"interval_records": 30_000, "interval_s": 60.0})
    settings = Settings.load(None, **cfg)
    group, total = settings.kafka.group_id, parts * n
    data = {p: stream(p, n, 500, 10_000) for p in range(parts)}
    for p, values in data.items():
        produce(bootstrap, topics["in"], p, values)
    svc = ServiceProcess(write_config(cfg, tmp_path / "service.yaml"), tmp_path / "service.log",
                         topics["decisions"], sample_every=0.5)
    t0 = time.monotonic()
    kills: list[dict[str, Any]] = []
    last = 0
    try:
        # marks of committed progress, and one kill while a restart replays its backlog.
        # The first mark stays below the first record-count checkpoint of any partition
        # (30,720: 15 batches), so the restart after it replays every committed record from
        # the origin checkpoints (~24k records; the consumer may take the partitions one
        # after another, so the mark counts the total); the kill comes the moment the
        # partitions are ready. (A 0.3 s pause on an 8k replay was a race: a fast machine
        # finished it and committed a new batch first.)
        for mark in (0.15, "replay", 0.3, 0.5, 0.7):
            svc.start()
            if mark == "replay":
                ready = len(ready_events(svc))
                wait_for(lambda r=ready: len(ready_events(svc)) >= r + parts,  # type: ignore[misc]
                         "the restarted service's partitions", alive=svc.alive, every=0.01)
                replay = sum(e["catch_up"] for e in ready_events(svc)[-parts:])
            else:
                goal = int(float(mark) * total)
                wait_for(lambda g=goal: total_committed(  # type: ignore[misc]
                    bootstrap, group, topics["in"], parts) >= g,
                    f"{goal} committed records", timeout=240, alive=svc.alive, every=0.05)
            svc.kill()
            at = total_committed(bootstrap, group, topics["in"], parts)
            kills.append({"mark": mark, "committed": at, "backlog": total - at})
            if mark == "replay":
                # killed while replaying (catch_up records) without publishing
                assert replay >= 20_000 and at == last, (replay, at, last)
                kills[-1]["replaying"] = replay
            else:
                assert last < at < total, kills  # progress since the last kill, backlog left
            last = at
        figures = finish_and_check(svc, bootstrap, topics, settings, data)
    finally:
        svc.close()
    catch_ups = [e["catch_up"] for e in ready_events(svc)[parts:]]
    assert sum(catch_ups) > 0  # restarts replayed from checkpoints behind the commits
    figures |= {"kills": svc.kills, "at_kill": kills, "replayed_on_restart": sum(catch_ups),
                "wall_s": round(time.monotonic() - t0, 1)}
    print("crash_figures", json.dumps({"test": "catch_up", **figures}))


class UncommittedWatch(threading.Thread):
    """A ``read_uncommitted`` reader of the alerts topic that calls ``trigger`` on the
    first alert of input partition 0 (the one with the big dead letters) whose source
    offset is at or above the committed offset ``floor`` (set by the test before each run)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"w-{topic}",
                                  "isolation.level": "read_uncommitted",
                                  "enable.auto.commit": False, "fetch.wait.max.ms": 5,
                                  "fetch.queue.backoff.ms": 1})
        self.consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        self.floor: dict[int, int] = {}
        self.armed = threading.Event()
        self.fired = threading.Event()
        self.stop = threading.Event()
        self.trigger: Any = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                for m in self.consumer.consume(500, 0.01):
                    if m.error() is not None:
                        continue
                    src = json.loads(m.value())["source"]
                    if (self.armed.is_set() and src["partition"] == 0
                            and src["offset"] >= self.floor.get(0, 0)):
                        self.armed.clear()
                        self.trigger()
                        self.fired.set()
        finally:
            self.consumer.close()


def outputs_above(bootstrap: str, topic: str, floor: list[int], isolation: str) -> int:
    """Alerts on ``topic`` for input offsets at or above ``floor[partition]``."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"r-{time.time_ns()}",
                  "isolation.level": isolation, "enable.partition.eof": True,
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    found, deadline = 0, time.monotonic() + 10
    try:
        while time.monotonic() < deadline:
            msgs = c.consume(1000, 0.5)
            for m in msgs:
                err = m.error()
                if err is not None and err.code() == KafkaError._PARTITION_EOF:
                    return found
                if err is None:
                    src = json.loads(m.value())["source"]
                    found += src["offset"] >= floor[src["partition"]]
        return found  # read_committed: may stop at the open transaction (no EOF event)
    finally:
        c.close()


def test_sigkill_inside_open_transactions(bootstrap: str, tag: str,
                                          tmp_path: pathlib.Path) -> None:
    parts, n, bursts = 2, 24_000, 6
    topics = make_topics(bootstrap, tag, parts)
    cfg = crash_config(bootstrap, tag, tmp_path,
                       batching={"max_records": 4096, "max_wait_ms": 200},
                       checkpoint={"interval_records": 4000, "interval_s": 3.0})
    settings = Settings.load(None, **cfg)
    group = settings.kafka.group_id
    data = {p: stream(p, n, 700, 8000) for p in range(parts)}
    step = n // bursts
    for b in range(bursts):  # in the first batch of every burst
        for o in range(b * step + 300, b * step + 340):
            data[0][o] = BIG_BAD
    svc = ServiceProcess(write_config(cfg, tmp_path / "service.yaml"), tmp_path / "service.log",
                         topics["decisions"], sample_every=0.5)
    watch = UncommittedWatch(bootstrap, topics["alerts"])
    watch.trigger = svc.kill
    watch.start()
    t0 = time.monotonic()
    kills: list[dict[str, Any]] = []
    try:
        for b in range(bursts - 1):
            svc.start()
            floor = committed_now(bootstrap, group, topics["in"], parts)
            watch.floor = dict(enumerate(floor))
            watch.armed.set()
            for p, values in data.items():  # a burst: one large batch per poll
                produce(bootstrap, topics["in"], p, values[b * step:(b + 1) * step])
            assert watch.fired.wait(120), svc.tail()
            watch.fired.clear()
            time.sleep(1.0)  # anything the dead process left in flight has landed
            at = committed_now(bootstrap, group, topics["in"], parts)
            seen = outputs_above(bootstrap, topics["alerts"], at, "read_uncommitted")
            visible = outputs_above(bootstrap, topics["alerts"], at, "read_committed")
            kills.append({"burst": b, "committed": at, "uncommitted_outputs": seen,
                          "visible_to_read_committed": visible})
        for p, values in data.items():
            produce(bootstrap, topics["in"], p, values[(bursts - 1) * step:])
        figures = finish_and_check(svc, bootstrap, topics, settings, data)
    finally:
        watch.stop.set()
        svc.close()
    # outputs above the committed offsets that read_committed readers cannot see: the kill
    # left their transaction open (those they do see are leaked aborted records of an
    # earlier kill's transaction, aborted by the restart)
    inside = [k for k in kills if k["uncommitted_outputs"] > k["visible_to_read_committed"]]
    assert inside, kills  # at least one kill left a transaction open with outputs in it
    figures |= {"kills": svc.kills, "kills_inside_open_transaction": len(inside),
                "at_kill": kills, "wall_s": round(time.monotonic() - t0, 1)}
    print("crash_figures", json.dumps({"test": "open_transactions", **figures}))
