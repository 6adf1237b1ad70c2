"""Topic replay against the real test broker: ranges, isolation, alerts, checkpoints, reports."""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from confluent_kafka import Producer
from kafka_helpers import committed, read_all, service_config, write_config
from typer.testing import CliRunner

from stream_ae.apps.simulate import SensorSimulator, SimulationConfig
from stream_ae.backtest import TopicInput, run_topic_backtest
from stream_ae.checkpoint import Checkpoint, CheckpointStore
from stream_ae.cli import app
from stream_ae.config import Settings
from stream_ae.decode import Decoder
from stream_ae.engine import Engine
from stream_ae.errors import ConfigError
from stream_ae.records import RawBlock
from stream_ae.schema import AlertMessage
from stream_ae.sources.base import BlockReader
from stream_ae.sources.replay import ReplayStart, TopicReplaySource, parse_start
from tests import oracle

N_STEPS = 400  # per device; 2 devices per partition -> 800 records per partition
T0_MS = 1_700_000_000_000
SENSORS = ["temperature", "pressure", "vibration", "current", "flow", "humidity"]


def _config(bootstrap: str, tag: str, tmp: pathlib.Path) -> dict[str, Any]:
    cfg = service_config(bootstrap, tag, tmp, record={"label_field": "label"})
    cfg["engine"]["features"]["names"] = SENSORS
    cfg["engine"]["training"]["warmup"] = 300
    return cfg


def _produce(bootstrap: str, topic: str) -> dict[int, list[bytes]]:
    """Two devices per partition; record timestamps 1 s apart from T0 (also the event time)."""
    sim = SensorSimulator(SimulationConfig(devices=4, anomalies_after=200.0, point_rate=0.01,
                                           collective_rate=0.004, day_s=300.0, seed=11,
                                           start=T0_MS / 1000))
    block = sim.step(N_STEPS)
    sent: dict[int, list[bytes]] = {0: [], 1: []}
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i, (key, value) in enumerate(block.to_json()):
        partition = int(key.decode()[-1]) % 2
        step = i // 4
        p.produce(topic, value, key, partition=partition, timestamp=T0_MS + step * 1000)
        sent[partition].append(value)
    assert p.flush(30) == 0
    return sent


@pytest.fixture
def replay_setup(bootstrap: str, tag: str, topics: dict[str, str], tmp_path: pathlib.Path
                 ) -> tuple[Settings, dict[int, list[bytes]], str]:
    sent = _produce(bootstrap, topics["in"])
    return Settings.load(None, **_config(bootstrap, tag, tmp_path)), sent, topics["in"]


def _offline_scores(settings: Settings, topic: str, partition: int, values: list[bytes]
                    ) -> np.ndarray:
    return oracle.scores(settings, values, SENSORS, topic, partition)


def test_full_replay_matches_offline_engines_and_stays_isolated(
        replay_setup: tuple[Settings, dict[int, list[bytes]], str], bootstrap: str,
        topics: dict[str, str], tmp_path: pathlib.Path) -> None:
    settings, sent, topic = replay_setup
    out = tmp_path / "pred.csv"
    s = run_topic_backtest(settings, TopicInput(topic), out, progress=False)
    pred = pd.read_csv(out)
    assert s.records == 1600 and len(pred) == 1600 and s.bad_rows == 0
    for p in (0, 1):
        rows = pred[pred["partition"] == p]
        assert rows["offset"].tolist() == list(range(800))
        np.testing.assert_allclose(rows["score"], _offline_scores(settings, topic, p, sent[p]),
                                   rtol=1e-6)
    assert {"key", "timestamp", "threshold", "is_anomaly", "warmup", "label"} <= set(pred)
    assert s.metrics is not None and s.metrics.positives > 0 and s.delay["episodes"] > 0
    alerts = [AlertMessage.model_validate_json(line) for line in
              out.with_suffix(".alerts.jsonl").read_text().splitlines()]
    assert len(alerts) == s.alerts == int(pred["is_anomaly"].sum()) > 0
    assert {(a.source.partition, a.source.offset) for a in alerts} == {
        (int(r.partition), int(r.offset)) for r in pred[pred["is_anomaly"] == 1].itertuples()}
    html = out.with_suffix(".html").read_text()
    for section in ("Alert timeline", "Drift and regime-change events", "Score histogram",
                    "Top alerts", "Detection delay per labelled episode"):
        assert section in html
    # isolation: the live alerts topic is untouched and nothing was committed for any group
    assert read_all(bootstrap, topics["alerts"]) == []
    for group in (settings.kafka.group_id, f"{settings.kafka.group_id}-reader"):
        assert all(o < 0 for o in committed(bootstrap, group, topic, 2))


def test_replay_source_reads_to_the_end_and_follows_the_protocol(
        replay_setup: tuple[Settings, dict[int, list[bytes]], str]) -> None:
    settings, _, topic = replay_setup
    src = TopicReplaySource(settings.kafka, topic, parse_start("790"))
    assert isinstance(src, BlockReader)
    src.open()
    got: list[tuple[int, int]] = []
    try:
        while not src.done:
            got += [(m.position.partition, m.position.offset) for m in src.poll(100, 0.5)]
        assert src.position() == {(topic, 0): 800, (topic, 1): 800}
    finally:
        src.close()
    assert sorted(got) == [(p, o) for p in (0, 1) for o in range(790, 800)]


def test_time_range_keeps_only_records_inside_it(
        replay_setup: tuple[Settings, dict[int, list[bytes]], str], tmp_path: pathlib.Path
        ) -> None:
    settings, _, topic = replay_setup
    start, end = (T0_MS + 100_000) / 1000, (T0_MS + 250_000) / 1000
    out = tmp_path / "pred.csv"
    s = run_topic_backtest(settings, TopicInput(topic, ReplayStart("time", start), end), out,
                           progress=False)
    pred = pd.read_csv(out)
    # 150 steps x 2 devices per partition; steps 100..249 are offsets 200..499
    assert s.records == 600
    for p in (0, 1):
        assert pred[pred["partition"] == p]["offset"].tolist() == list(range(200, 500))
    assert pred["timestamp"].min() >= start and pred["timestamp"].max() < end


def test_offset_start_and_alerts_topic(
        replay_setup: tuple[Settings, dict[int, list[bytes]], str], bootstrap: str,
        topics: dict[str, str], tmp_path: pathlib.Path) -> None:
    settings, _, topic = replay_setup
    out = tmp_path / "pred.csv"
    side = topics["decisions"]  # any empty topic of this test that is not the live alerts one
    s = run_topic_backtest(settings, TopicInput(topic, parse_start("200"), alerts_topic=side),
                           out, progress=False)
    pred = pd.read_csv(out)
    assert s.records == 1200 and pred["offset"].min() == 200
    published = read_all(bootstrap, side)
    assert len(published) == s.alerts > 0
    assert not out.with_suffix(".alerts.jsonl").exists()
    with pytest.raises(ConfigError, match="live alerts topic"):
        run_topic_backtest(settings, TopicInput(topic, alerts_topic=topics["alerts"]),
                           tmp_path / "x.csv", progress=False)


def test_from_checkpoint_continues_like_an_uninterrupted_replay(
        replay_setup: tuple[Settings, dict[int, list[bytes]], str], tmp_path: pathlib.Path
        ) -> None:
    settings, sent, topic = replay_setup
    store = CheckpointStore(tmp_path / "ckpt")
    for p in (0, 1):
        values = sent[p][:500]
        block = RawBlock(topic, p, list(range(500)), values, [None] * 500, [None] * 500)
        engine = Engine(settings.engine, SENSORS)
        engine.step(Decoder(tuple(SENSORS), settings.record).decode(block).batch)
        store.save(Checkpoint(topic, p, 500, engine.snapshot(), tuple(SENSORS)))
    full = tmp_path / "full.csv"
    run_topic_backtest(settings, TopicInput(topic), full, progress=False)
    resumed = tmp_path / "resumed.csv"
    s = run_topic_backtest(settings, TopicInput(topic, from_checkpoint=tmp_path / "ckpt"),
                           resumed, progress=False)
    a, b = pd.read_csv(full), pd.read_csv(resumed)
    assert s.records == 600 and b["offset"].min() == 500
    tail = a[a["offset"] >= 500].sort_values(["partition", "offset"]).reset_index(drop=True)
    b = b.sort_values(["partition", "offset"]).reset_index(drop=True)
    np.testing.assert_allclose(b["score"], tail["score"], rtol=1e-6)
    assert b["warmup"].sum() == 0


def test_cli_topic_replay(replay_setup: tuple[Settings, dict[int, list[bytes]], str],
                          bootstrap: str, tag: str, tmp_path: pathlib.Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    # structlog caches loggers bound to the stream CliRunner closes afterwards: keep the
    # test process's logging as it is
    monkeypatch.setattr("stream_ae.cli.configure_logging", lambda *a, **k: None)
    _, _, topic = replay_setup
    cfg = write_config(_config(bootstrap, tag, tmp_path), tmp_path / "c.yaml")
    out = tmp_path / "cli.csv"
    result = CliRunner().invoke(app, ["backtest", "--topic", topic, "--config", str(cfg),
                                      "--output", str(out), "--to", "end", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "ROC-AUC" in result.output and "precision" in result.output
    assert len(pd.read_csv(out)) == 1600
    first = orjson.loads(out.with_suffix(".alerts.jsonl").read_text().splitlines()[0])
    assert first["source"]["topic"] == topic
