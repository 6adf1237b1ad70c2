"""A sensor simulator with known anomalies and one known drift, for demos, samples and tests.

Devices are similar machines (shared structure, small differences). Each has sensors
driven by two latent factors (a daily cycle plus a
slow AR(1) load), so its sensors are correlated; each reading adds Gaussian noise.
After ``anomalies_after`` seconds of event time it injects

* point anomalies: one record with a 5-9 sd spike on one sensor (``label`` 1);
* collective anomalies: a run of records where one sensor is shifted by 2-4
  typical spreads (its correlation with the others breaks; every record of the
  run has ``label`` 1);

and at ``drift_at`` the normal behaviour of every device changes for good (offsets
move and one sensor's loadings rotate). The drift is *not* labelled: it is a new
normal the detector should adapt to.

Random draws come from one generator per purpose, each drawing a fixed amount per
step, so the output does not depend on how steps are split into blocks.

>>> sim = SensorSimulator(SimulationConfig(devices=2, seed=1))
>>> block = sim.step(3)
>>> (len(block), block.keys[:2], block.values.shape)
(6, ('dev-00', 'dev-01'), (6, 6))
"""

from __future__ import annotations

import math
import pathlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import orjson
import pandas as pd

from stream_ae.config import KafkaConfig
from stream_ae.records import F32, F64, I64, Bool
from stream_ae.sinks.kafka import KafkaSink


class Producer(Protocol):
    """The part of confluent-kafka's producer the simulator uses."""

    def produce(self, topic: str, value: bytes, key: bytes) -> Any: ...

    def poll(self, timeout: float) -> int: ...

    def flush(self, timeout: float) -> int: ...


SENSOR_NAMES = ("temperature", "pressure", "vibration", "current", "flow", "humidity")
_FACTORS = 2


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    """What to simulate.

    Parameters
    ----------
    devices, sensors
        Devices (record keys) and sensors (features) per device.
    interval_s
        Event-time seconds between two readings of a device.
    day_s
        Period of the daily cycle in event-time seconds (shorten it for quick demos).
    noise
        Noise standard deviation, in units of the sensors' typical spread.
    point_rate
        Probability that a record (after ``anomalies_after``) is a point anomaly.
    collective_rate
        Probability per device and step that a collective anomaly starts.
    collective_len
        Shortest and longest run of a collective anomaly, in steps.
    anomalies_after
        Event seconds from the start before any anomaly (leave the warm-up clean).
    drift_at
        Event seconds from the start when normal behaviour changes; ``None``: never.
    start
        Epoch seconds of the first reading.
    seed
        Seed of every random draw.
    """

    devices: int = 4
    sensors: int = 6
    interval_s: float = 1.0
    day_s: float = 86_400.0
    noise: float = 0.05
    point_rate: float = 0.003
    collective_rate: float = 0.001
    collective_len: tuple[int, int] = (20, 60)
    anomalies_after: float = 600.0
    drift_at: float | None = None
    start: float = 1_735_689_600.0  # 2025-01-01T00:00:00Z
    seed: int = 0

    @property
    def sensor_names(self) -> tuple[str, ...]:
        extra = tuple(f"sensor_{i}" for i in range(len(SENSOR_NAMES), self.sensors))
        return (SENSOR_NAMES + extra)[: self.sensors]


@dataclass(frozen=True)
class SimBlock:
    """Readings of some steps, device-major within a step, in time order."""

    keys: tuple[str, ...]
    timestamps: F64
    values: F32
    labels: I64
    kinds: tuple[str, ...]  # "", "point" or "collective"
    sensor_names: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.keys)

    def to_frame(self) -> pd.DataFrame:
        """As a table: key, ts, one column per sensor, label."""
        frame = pd.DataFrame(self.values.astype(np.float64), columns=list(self.sensor_names))
        frame.insert(0, "ts", self.timestamps)
        frame.insert(0, "key", list(self.keys))
        frame["label"] = self.labels
        return frame

    def to_json(self) -> Iterator[tuple[bytes, bytes]]:
        """``(message key, JSON value)`` per reading, in the default record layout."""
        names = self.sensor_names
        for i, key in enumerate(self.keys):
            obj: dict[str, object] = {"key": key, "ts": round(float(self.timestamps[i]), 3)}
            obj.update(zip(names, (round(float(v), 5) for v in self.values[i]), strict=True))
            obj["label"] = int(self.labels[i])
            yield key.encode(), orjson.dumps(obj)


class SensorSimulator:
    """Generates :class:`SimBlock` s step by step (one reading per device per step).

    Examples
    --------
    >>> cfg = SimulationConfig(devices=3, point_rate=0.5, anomalies_after=0.0, seed=7)
    >>> a = SensorSimulator(cfg).step(40)
    >>> b1, b2 = (s := SensorSimulator(cfg)).step(15), s.step(25)
    >>> bool(np.array_equal(a.values, np.concatenate([b1.values, b2.values])))
    True
    >>> 0 < int(a.labels.sum()) < len(a)
    True
    """

    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        self._rngs: dict[str, np.random.Generator] | None = None
        self._step = 0

    @property
    def steps_done(self) -> int:
        return self._step

    def _init(self) -> None:
        c = self.config
        seeds = np.random.SeedSequence(c.seed).spawn(6)
        names = ("params", "noise", "load", "point", "collective", "drift")
        self._rngs = {n: np.random.default_rng(s) for n, s in zip(names, seeds, strict=True)}
        p = self._rngs["params"]
        # a fleet of similar machines: shared structure, small differences per device
        self._base = p.uniform(1.0, 10.0, c.sensors) + p.normal(0.0, 0.1, (c.devices, c.sensors))
        self._loadings = (p.normal(0.0, 1.0, (c.sensors, _FACTORS))
                          + p.normal(0.0, 0.05, (c.devices, c.sensors, _FACTORS)))
        self._phase = p.uniform(0.0, 2 * math.pi, c.devices)
        self._load = np.zeros(c.devices)
        self._run_left = np.zeros(c.devices, dtype=np.int64)
        self._run_sensor = np.zeros(c.devices, dtype=np.int64)
        self._run_shift = np.zeros(c.devices)
        self._spread = np.abs(self._loadings).sum(axis=2) + c.noise
        d = self._rngs["drift"]
        self._drift_offset = d.normal(0.0, 1.5, (c.devices, c.sensors))
        self._drift_loadings = d.normal(0.0, 1.0, (c.devices, _FACTORS))
        self._drift_sensor = d.integers(0, c.sensors, c.devices)

    def step(self, steps: int) -> SimBlock:
        """The next ``steps`` steps of every device."""
        if self._rngs is None:
            self._init()
        c = self.config
        vals = np.empty((steps, c.devices, c.sensors))
        labels = np.zeros((steps, c.devices), dtype=np.int64)
        kinds = np.full((steps, c.devices), "", dtype=object)
        times = c.start + (self._step + np.arange(steps)) * c.interval_s
        for i in range(steps):
            vals[i], labels[i], kinds[i] = self._one(times[i] - c.start)
        self._step += steps
        keys = tuple(f"dev-{d:02d}" for d in range(c.devices)) * steps
        return SimBlock(
            keys=keys,
            timestamps=np.repeat(times, c.devices),
            values=vals.reshape(-1, c.sensors).astype(np.float32),
            labels=labels.reshape(-1),
            kinds=tuple(kinds.reshape(-1)),
            sensor_names=c.sensor_names,
        )

    def _one(self, elapsed: float) -> tuple[F64, I64, list[str]]:
        assert self._rngs is not None
        c = self.config
        normal = self._normal(elapsed)
        point_mask, point_vals = self._points(normal, active=elapsed >= c.anomalies_after)
        in_run = self._collective(active=elapsed >= c.anomalies_after)
        out = np.where(point_mask, point_vals, normal)
        rows = np.flatnonzero(in_run)
        cols = self._run_sensor[rows]
        out[rows, cols] += self._run_shift[rows] * self._spread[rows, cols]
        is_point: Bool = np.asarray(point_mask.any(axis=1), dtype=np.bool_)
        labels = (is_point | in_run).astype(np.int64)
        kinds = ["collective" if s else ("point" if p else "") for p, s in
                 zip(is_point, in_run, strict=True)]
        return out, labels, kinds

    def _normal(self, elapsed: float) -> F64:
        assert self._rngs is not None
        c = self.config
        self._load = 0.98 * self._load + self._rngs["load"].normal(0.0, 0.2, c.devices)
        cycle = np.sin(2 * math.pi * elapsed / c.day_s + self._phase)
        factors = np.stack([cycle, self._load], axis=1)  # (devices, factors)
        loadings, base = self._loadings, self._base
        if c.drift_at is not None and elapsed >= c.drift_at:
            loadings = loadings.copy()
            rows = np.arange(c.devices)
            loadings[rows, self._drift_sensor] = self._drift_loadings
            base = base + self._drift_offset
        signal: F64 = base + np.einsum("dsf,df->ds", loadings, factors)
        return signal + self._rngs["noise"].normal(0.0, c.noise, (c.devices, c.sensors))

    def _points(self, normal: F64, active: bool) -> tuple[np.ndarray, F64]:
        assert self._rngs is not None
        c, r = self.config, self._rngs["point"]
        hit = r.random(c.devices) < c.point_rate
        sensor = r.integers(0, c.sensors, c.devices)
        size = r.uniform(5.0, 9.0, c.devices) * r.choice([-1.0, 1.0], c.devices)
        mask = np.zeros((c.devices, c.sensors), dtype=np.bool_)
        if active:
            mask[np.arange(c.devices), sensor] = hit
        return mask, normal + size[:, None] * self._spread

    def _collective(self, active: bool) -> np.ndarray:
        assert self._rngs is not None
        c, r = self.config, self._rngs["collective"]
        start = r.random(c.devices) < c.collective_rate
        length = r.integers(c.collective_len[0], c.collective_len[1] + 1, c.devices)
        sensor = r.integers(0, c.sensors, c.devices)
        shift = r.uniform(2.0, 4.0, c.devices) * r.choice([-1.0, 1.0], c.devices)
        begin = start & (self._run_left == 0) & active
        self._run_left = np.where(begin, length, self._run_left)
        self._run_sensor = np.where(begin, sensor, self._run_sensor)
        self._run_shift = np.where(begin, shift, self._run_shift)
        in_run: Bool = self._run_left > 0
        self._run_left = np.maximum(self._run_left - 1, 0)
        return in_run


def simulate_frame(config: SimulationConfig, steps: int) -> pd.DataFrame:
    """``steps`` steps of every device as one table (for files and samples).

    >>> simulate_frame(SimulationConfig(devices=1, sensors=2), 2).columns.tolist()
    ['key', 'ts', 'temperature', 'pressure', 'label']
    """
    return SensorSimulator(config).step(steps).to_frame()


def write_file(config: SimulationConfig, steps: int, path: pathlib.Path) -> int:
    """Write ``steps`` steps as CSV, JSON Lines or Parquet (by suffix); return the rows written.

    >>> import tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "s.csv"
    >>> write_file(SimulationConfig(devices=2, sensors=2), 3, p)
    6
    >>> p.read_text().splitlines()[0]
    'key,ts,temperature,pressure,label'
    """
    frame = simulate_frame(config, steps)
    sensors = list(config.sensor_names)
    frame[sensors] = frame[sensors].round(4)  # readings to 4 decimals; timestamps exact
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif suffix in (".jsonl", ".ndjson"):
        frame.to_json(path, orient="records", lines=True, double_precision=6)
    else:
        frame.to_csv(path, index=False)
    return len(frame)


@dataclass
class ProduceStats:
    """What :func:`produce` sent."""

    records: int = 0
    anomalies: int = 0
    steps: int = 0


def produce(
    sim: SensorSimulator,
    producer: Producer,
    topic: str,
    rate: float,
    steps: int | None = None,
    duration: float | None = None,
    stop: threading.Event | None = None,
    on_block: Callable[[SimBlock], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> ProduceStats:
    """Produce readings to ``topic`` at about ``rate`` records/s until ``steps``, ``duration``
    or ``stop``; message key = device, value = the default JSON record layout.

    ``producer`` is anything with confluent-kafka's ``produce``/``poll``/``flush`` (the
    Kafka sink's producer); waiting is done in ``producer.poll`` so delivery reports are
    served while pacing. ``on_block`` sees every block before it is produced.
    """
    stats = ProduceStats()
    per_step = sim.config.devices
    t0 = clock()
    while not (stop is not None and stop.is_set()):
        elapsed = clock() - t0
        if (duration is not None and elapsed >= duration) or (steps is not None
                                                              and stats.steps >= steps):
            break
        due = int(elapsed * rate / per_step) + 1 - stats.steps
        if steps is not None:
            due = min(due, steps - stats.steps)
        if due <= 0:
            producer.poll(min(0.05, per_step / rate))
            continue
        block = sim.step(due)
        if on_block is not None:
            on_block(block)
        _send(producer, topic, block)
        stats.records += len(block)
        stats.anomalies += int(block.labels.sum())
        stats.steps += due
    producer.flush(30)
    return stats


def _send(producer: Producer, topic: str, block: SimBlock) -> None:
    for key, value in block.to_json():
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)  # local queue full: serve deliveries, then retry
    producer.poll(0)


def produce_to(kafka: KafkaConfig, bootstrap: str | None, topic: str, config: SimulationConfig,
               rate: float, steps: int | None = None, duration: float | None = None,
               stop: threading.Event | None = None,
               on_block: Callable[[SimBlock], None] | None = None) -> ProduceStats:
    """:func:`produce` through the Kafka sink's (idempotent) producer until ``steps``,
    ``duration``, ``stop`` or Ctrl-C (which ends the run cleanly after flushing)."""
    update: dict[str, object] = {"guarantee": "at_least_once"}
    if bootstrap:
        update["bootstrap_servers"] = bootstrap
    sink = KafkaSink(kafka.model_copy(update=update))
    sink.open()
    stop = stop or threading.Event()
    try:
        return produce(SensorSimulator(config), sink.producer, topic, rate, steps, duration, stop,
                       on_block)
    except KeyboardInterrupt:
        stop.set()
        sink.producer.flush(30)
        return ProduceStats()
    finally:
        sink.close()
