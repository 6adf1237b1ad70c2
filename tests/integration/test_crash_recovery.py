"""SIGKILL the service (a subprocess) at random points of a live stream, restart it each time.

At the end: every input offset has a decision, no alert is missing against an uninterrupted
(offline) run, every duplicate is identical to its first copy (the test broker leaks aborted
transactions), and zero duplicates when running against Apache Kafka
(``STREAM_AE_TEST_BOOTSTRAP``).
"""

from __future__ import annotations

import os
import pathlib
import random
import signal
import subprocess
import sys
import threading
import time

import pytest
from kafka_helpers import (
    committed,
    offline_alert_offsets,
    produce,
    read_all,
    records,
    service_config,
    wait_committed,
    write_config,
)
from service_proc import account

from stream_ae.config import Settings
from stream_ae.testing import external_bootstrap

N = 4000
BAD = [b"{oops", b'{"a": 1}', b'{"a": 1, "b": 2, "c": 3, "d": "x"}']


def stream(p: int) -> list[bytes]:
    values, _ = records(N, seed=100 + p, partition=p)
    for i, b in enumerate(BAD):
        values[700 + 1000 * i] = b
    return values


def feed(bootstrap: str, topic: str, data: dict[int, list[bytes]], chunks: int = 100) -> None:
    """Produce the stream progressively, so kills land while records keep arriving."""
    step = N // chunks
    for c in range(chunks):
        for p, values in data.items():
            produce(bootstrap, topic, p, values[c * step:(c + 1) * step])
        time.sleep(0.4)


def start(cfg: pathlib.Path, decisions: str, log: pathlib.Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "stream_ae.cli", "run", "-c", str(cfg),
             "--decisions-topic", decisions], stdout=out, stderr=subprocess.STDOUT, env=env)


def wait_progress(bootstrap: str, group: str, topic: str, beyond: int) -> None:
    """Wait until the group committed more than ``beyond`` records in total."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if sum(max(o, 0) for o in committed(bootstrap, group, topic, 2)) > beyond:
            return
        time.sleep(0.2)
    raise AssertionError(f"no progress beyond {beyond} within 60 s")


@pytest.mark.slow
def test_sigkill_at_random_points_loses_nothing(
        bootstrap: str, tag: str, topics: dict[str, str], tmp_path: pathlib.Path) -> None:
    cfg = service_config(bootstrap, tag, tmp_path,
                         batching={"max_records": 128, "max_wait_ms": 100},
                         checkpoint={"interval_records": 400, "interval_s": 1.0})
    settings = Settings.load(None, **cfg)
    path = write_config(cfg, tmp_path / "service.yaml")
    data = {p: stream(p) for p in (0, 1)}
    feeder = threading.Thread(target=feed, args=(bootstrap, topics["in"], data), daemon=True)
    feeder.start()
    rng = random.Random(7)
    log = tmp_path / "service.log"
    progress = [0]
    for _kill in range(3):
        proc = start(path, topics["decisions"], log)
        wait_progress(bootstrap, settings.kafka.group_id, topics["in"], sum(progress[-1:]))
        time.sleep(rng.uniform(0.0, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        progress.append(sum(max(o, 0) for o in committed(bootstrap, settings.kafka.group_id,
                                                          topics["in"], 2)))
    assert progress[-1] < 2 * N, f"kills did not land mid-stream: {progress}"
    feeder.join(90)
    proc = start(path, topics["decisions"], log)
    try:
        wait_committed(bootstrap, settings.kafka.group_id, topics["in"], [N, N], timeout=120,
                       alive=lambda: proc.poll() is None)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-3000:]
    check_outputs(bootstrap, topics, settings, data)


def check_outputs(bootstrap: str, topics: dict[str, str], settings: Settings,
                  data: dict[int, list[bytes]]) -> None:
    expected = {p: offline_alert_offsets(settings, topics["in"], p, values)
                for p, values in data.items()}
    acc, _ = account(read_all(bootstrap, topics["alerts"]),
                     read_all(bootstrap, topics["decisions"]),
                     {p: len(values) for p, values in data.items()}, expected)
    assert acc.ok, acc
    dead = {(int(dict(m.headers())["stream-ae.source-partition"]),
             int(dict(m.headers())["stream-ae.source-offset"]))
            for m in read_all(bootstrap, topics["dlq"])}
    assert dead == {(p, 700 + 1000 * i) for p in data for i in range(len(BAD))}
    if external_bootstrap():
        assert acc.duplicate_alerts == 0
