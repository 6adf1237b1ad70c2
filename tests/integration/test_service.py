"""The service on a real broker, in-process: alerts equal the offline engine, poison input,
graceful shutdown checkpoint, corrupt-checkpoint fallback, metrics endpoint."""

from __future__ import annotations

import contextlib
import pathlib
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import orjson
import structlog
from kafka_helpers import (
    offline_alert_offsets,
    produce,
    read_all,
    records,
    service_config,
    wait_committed,
)
from prometheus_client import CollectorRegistry
from structlog.testing import LogCapture, capture_logs

from stream_ae.checkpoint import CheckpointStore
from stream_ae.config import Settings
from stream_ae.metrics import Health, MetricsServer, ServiceMetrics
from stream_ae.schema import AlertMessage, DecisionMessage
from stream_ae.service.main import engine_factory, kafka_loop


def captured() -> list[dict[str, Any]]:
    """The entries of the innermost ``capture_logs()`` around the caller (none outside one)."""
    for proc in structlog.get_config()["processors"]:
        if isinstance(proc, LogCapture):
            return list(proc.entries)
    return []


@contextlib.contextmanager
def service(settings: Settings, decisions: str | None) -> Iterator[tuple[threading.Thread, int]]:
    """Run the service in a thread; stop it gracefully (as SIGTERM does) on exit."""
    registry, health, stop = CollectorRegistry(), Health(), threading.Event()
    runner = kafka_loop(settings, ServiceMetrics(registry), health, engine_factory(settings),
                        decisions)
    server = MetricsServer(registry, health, "127.0.0.1", 0)
    port = server.start()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            runner.run(stop)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield thread, port
    except BaseException as exc:
        # a wait that timed out says why: did the service fail, or did it process past
        # what the broker shows committed (the test broker can drop a transaction's offsets)?
        warned = [e for e in captured() if e.get("log_level") in ("warning", "error")]
        exc.add_note(f"service thread alive: {thread.is_alive()}; errors: {errors!r}; "
                     f"positions: {runner.positions()}; warnings and errors logged: "
                     f"{warned[-10:]}")
        raise
    finally:
        stop.set()
        thread.join(30)
        server.stop()
    assert not thread.is_alive(), "service did not stop within 30 s"
    assert not errors, errors


def decisions_cover(msgs: list[Any], partition: int) -> list[int]:
    out = []
    for m in msgs:
        d = DecisionMessage.model_validate_json(m.value())
        if d.partition == partition:
            out += range(d.start_offset, d.end_offset)
    return sorted(out)


def test_alerts_equal_offline_engine_and_metrics_are_served(
        bootstrap: str, tag: str, topics: dict[str, str], tmp_path: pathlib.Path) -> None:
    settings = Settings.load(None, **service_config(bootstrap, tag, tmp_path))
    data = {p: records(1200, seed=p, partition=p)[0] for p in (0, 1)}
    for p, values in data.items():
        produce(bootstrap, topics["in"], p, values, [f"dev-{p}".encode()] * len(values))
    with capture_logs(), service(settings, topics["decisions"]) as (thread, port):
        wait_committed(bootstrap, settings.kafka.group_id, topics["in"], [1200, 1200],
                       alive=thread.is_alive)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        ready = urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz").status
    alerts = [AlertMessage.model_validate_json(m.value()) for m in read_all(bootstrap,
                                                                             topics["alerts"])]
    for p, values in data.items():
        got = sorted(a.source.offset for a in alerts if a.source.partition == p)
        expected = offline_alert_offsets(settings, topics["in"], p, values)
        assert len(expected) >= 10
        assert got == expected
    decisions = read_all(bootstrap, topics["decisions"])
    assert decisions_cover(decisions, 0) == list(range(1200))
    a = alerts[0]
    assert a.alert_id == f"{topics['in']}/{a.source.partition}/{a.source.offset}"
    assert 0 < a.grade <= 1 and a.incident_id.startswith(f"{topics['in']}/")
    assert a.key.startswith(f"dev-{a.source.partition}-")
    raw = next(m for m in read_all(bootstrap, topics["alerts"]))
    headers = dict(raw.headers())
    assert headers["stream-ae.schema-version"] == b"2" and raw.key() == a.key.encode()
    assert ready == 200
    assert f'stream_ae_records_in_total{{partition="0",topic="{topics["in"]}"}} 1200.0' in metrics
    assert "stream_ae_batch_seconds_bucket" in metrics and "stream_ae_threshold{" in metrics


BAD = {
    b"{broken": "invalid_json", b"": "empty", b'"text"': "not_object",
    b'{"a": 1, "b": 2, "c": 3}': "missing_feature",
    b'{"a": 1, "b": 2, "c": 3, "d": "x"}': "non_numeric",
    b'{"a": 1, "b": 2, "c": 3, "d": NaN}': "non_finite",
    b'{"a": 1, "b": 2, "c": 3, "d": 4, "ts": "never"}': "bad_timestamp",
}


def test_poison_input_goes_to_dead_letters_and_good_records_are_scored(
        bootstrap: str, tag: str, topics: dict[str, str], tmp_path: pathlib.Path) -> None:
    cfg = service_config(bootstrap, tag, tmp_path, record={"max_message_bytes": 2000})
    settings = Settings.load(None, **cfg)
    good, _ = records(600, seed=5, partition=0)
    oversized = orjson.dumps({"a": 1, "b": 2, "c": 3, "d": 4, "pad": "x" * 3000})
    bad = [*BAD, oversized]
    values = list(good)
    for i, b in enumerate(bad):
        values.insert(50 + 60 * i, b)
    produce(bootstrap, topics["in"], 0, values, [b"k%d" % i for i in range(len(values))])
    with capture_logs(), service(settings, topics["decisions"]) as (thread, _):
        wait_committed(bootstrap, settings.kafka.group_id, topics["in"], [len(values), 0],
                       alive=thread.is_alive)
        assert thread.is_alive()
    dead = read_all(bootstrap, topics["dlq"])
    got = {m.value(): dict(m.headers()) for m in dead}
    assert len(dead) == len(bad)
    for b in bad:
        h = got[b]
        assert h["stream-ae.reason"].decode() == BAD.get(b, "oversized")
        off = int(h["stream-ae.source-offset"])
        assert values[off] == b and h["stream-ae.source-topic"] == topics["in"].encode()
    assert {m.key() for m in dead} == {b"k%d" % values.index(b) for b in bad}
    decisions = read_all(bootstrap, topics["decisions"])
    assert decisions_cover(decisions, 0) == list(range(len(values)))
    alerts = [AlertMessage.model_validate_json(m.value())
              for m in read_all(bootstrap, topics["alerts"])]
    expected = offline_alert_offsets(settings, topics["in"], 0, values)
    assert sorted(a.source.offset for a in alerts) == expected


def test_graceful_stop_checkpoints_and_corrupt_newest_falls_back(
        bootstrap: str, tag: str, topics: dict[str, str], tmp_path: pathlib.Path) -> None:
    cfg = service_config(bootstrap, tag, tmp_path,
                         checkpoint={"interval_records": 300, "interval_s": 600})
    settings = Settings.load(None, **cfg)
    values, _ = records(2000, seed=9, partition=0)
    produce(bootstrap, topics["in"], 0, values[:1000])
    with capture_logs(), service(settings, None):
        wait_committed(bootstrap, settings.kafka.group_id, topics["in"], [1000, 0])
    store = CheckpointStore(settings.checkpoint.directory)
    with capture_logs():
        final = store.load(topics["in"], 0)
    assert final is not None and final.position == 1000 and final.engine is not None
    newest = store.paths(topics["in"], 0)[-1]
    newest.write_bytes(newest.read_bytes()[:-100])  # a torn write
    produce(bootstrap, topics["in"], 0, values[1000:])
    with capture_logs() as logs, service(settings, None):
        wait_committed(bootstrap, settings.kafka.group_id, topics["in"], [2000, 0])
    events = [e for e in logs if e["event"] in ("checkpoint_corrupt", "partition_ready")]
    ready = next(e for e in events if e["event"] == "partition_ready" and e["partition"] == 0)
    assert events[0]["event"] == "checkpoint_corrupt"
    assert ready["start"] < 1000 and ready["publish_from"] == 1000 and ready["restored"]
    alerts = [AlertMessage.model_validate_json(m.value())
              for m in read_all(bootstrap, topics["alerts"])]
    got = [a.source.offset for a in alerts]
    assert sorted(set(got)) == offline_alert_offsets(settings, topics["in"], 0, values)
