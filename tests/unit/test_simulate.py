"""The simulator: determinism, labels where anomalies were injected, the drift, correlation."""

from __future__ import annotations

import pathlib

import numpy as np
import orjson
import pandas as pd
import pytest

from stream_ae.apps.simulate import (
    SensorSimulator,
    SimulationConfig,
    produce,
    simulate_frame,
    write_file,
)


def test_same_seed_same_stream_whatever_the_block_sizes() -> None:
    cfg = SimulationConfig(devices=3, anomalies_after=0.0, point_rate=0.05,
                           collective_rate=0.01, drift_at=50.0, seed=5)
    whole = SensorSimulator(cfg).step(120)
    sim = SensorSimulator(cfg)
    parts = [sim.step(n) for n in (1, 37, 50, 32)]
    np.testing.assert_array_equal(whole.values, np.concatenate([p.values for p in parts]))
    np.testing.assert_array_equal(whole.labels, np.concatenate([p.labels for p in parts]))
    assert sim.steps_done == 120
    other = SensorSimulator(SimulationConfig(devices=3, seed=6)).step(120)
    assert not np.array_equal(whole.values, other.values)


def test_layout_keys_and_time() -> None:
    cfg = SimulationConfig(devices=2, sensors=8, interval_s=0.5, start=100.0)
    b = SensorSimulator(cfg).step(3)
    assert b.keys == ("dev-00", "dev-01") * 3
    assert b.timestamps.tolist() == [100.0, 100.0, 100.5, 100.5, 101.0, 101.0]
    assert b.sensor_names[-2:] == ("sensor_6", "sensor_7") and b.values.shape == (6, 8)


def test_no_anomalies_before_anomalies_after() -> None:
    cfg = SimulationConfig(devices=4, anomalies_after=300.0, point_rate=0.2,
                           collective_rate=0.05, seed=1)
    b = SensorSimulator(cfg).step(600)
    early = b.timestamps < cfg.start + 300.0
    assert b.labels[early].sum() == 0
    assert b.labels[~early].sum() > 0
    assert {k for k, lab in zip(b.kinds, b.labels, strict=True) if lab} == {"point", "collective"}
    assert all((k == "") == (lab == 0) for k, lab in zip(b.kinds, b.labels, strict=True))


def test_collective_runs_last_within_bounds() -> None:
    cfg = SimulationConfig(devices=1, anomalies_after=0.0, point_rate=0.0,
                           collective_rate=0.01, collective_len=(20, 30), seed=2)
    b = SensorSimulator(cfg).step(5000)
    runs = np.diff(np.flatnonzero(np.diff(np.concatenate(([0], b.labels, [0])))))[::2]
    assert len(runs) > 5 and runs.min() >= 20 and runs.max() <= 60  # back-to-back runs merge


def test_points_are_far_from_normal() -> None:
    cfg = SimulationConfig(devices=2, anomalies_after=0.0, point_rate=0.02, collective_rate=0.0)
    f = simulate_frame(cfg, 3000)
    sensors = list(cfg.sensor_names)
    normal = f[f["label"] == 0][sensors]
    z = ((f[f["label"] == 1][sensors] - normal.mean()) / normal.std()).abs().max(axis=1)
    assert (z > 3).mean() > 0.9


def test_sensors_are_correlated_and_the_drift_moves_them() -> None:
    cfg = SimulationConfig(devices=1, anomalies_after=1e9, drift_at=2000.0, seed=4, day_s=500.0)
    f = simulate_frame(cfg, 4000)
    sensors = list(cfg.sensor_names)
    before, after = f.iloc[:2000][sensors], f.iloc[2000:][sensors]
    # two latent factors drive six sensors: two components explain nearly everything
    eig = np.sort(np.linalg.eigvalsh(np.corrcoef(before.to_numpy().T)))[::-1]
    assert eig[:2].sum() / eig.sum() > 0.9 and eig[0] / eig.sum() < 0.9
    assert (after.mean() - before.mean()).abs().max() > 1.0
    assert f["label"].sum() == 0  # the drift is a new normal, not an anomaly


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_write_file_round_trips(tmp_path: pathlib.Path, suffix: str) -> None:
    cfg = SimulationConfig(devices=2, anomalies_after=0.0, point_rate=0.1)
    path = tmp_path / f"s{suffix}"
    assert write_file(cfg, 50, path) == 100
    back = {".csv": pd.read_csv, ".parquet": pd.read_parquet,
            ".jsonl": lambda p: pd.read_json(p, lines=True)}[suffix](path)
    expected = simulate_frame(cfg, 50)
    assert back["key"].tolist() == expected["key"].tolist()
    np.testing.assert_allclose(back["ts"], expected["ts"])
    np.testing.assert_allclose(back["temperature"], expected["temperature"], atol=1e-4)
    assert back["label"].tolist() == expected["label"].tolist()


class FakeProducer:
    """Records what would be produced; ``poll`` advances a fake clock instead of waiting."""

    def __init__(self, clock: list[float]) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.clock = clock

    def produce(self, topic: str, value: bytes, key: bytes) -> None:
        self.sent.append((topic, value, key))

    def poll(self, timeout: float) -> int:
        self.clock[0] += timeout
        return 0

    def flush(self, timeout: float) -> int:
        return 0


def test_produce_paces_by_rate_and_stops_at_duration() -> None:
    now = [0.0]
    producer = FakeProducer(now)
    cfg = SimulationConfig(devices=4, anomalies_after=0.0, point_rate=0.05)
    stats = produce(SensorSimulator(cfg), producer, "t", rate=400.0, duration=2.0,
                    clock=lambda: now[0])
    assert 780 <= stats.records <= 820 and stats.records == len(producer.sent)
    topic, value, key = producer.sent[0]
    obj = orjson.loads(value)
    assert (topic, key, obj["key"]) == ("t", b"dev-00", "dev-00")
    assert set(obj) == {"key", "ts", *cfg.sensor_names, "label"}
    assert stats.anomalies == sum(orjson.loads(v)["label"] for _, v, _ in producer.sent)


def test_produce_stops_after_steps_and_reports_blocks() -> None:
    now = [0.0]
    seen: list[int] = []
    stats = produce(SensorSimulator(SimulationConfig(devices=2)), FakeProducer(now), "t",
                    rate=1e9, steps=25, on_block=lambda b: seen.append(len(b)),
                    clock=lambda: now[0])
    assert stats.steps == 25 and stats.records == 50 and sum(seen) == 50
