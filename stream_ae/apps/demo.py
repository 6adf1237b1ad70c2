"""The demo: an embedded broker, a sensor simulator, the detector service and a live alert view.

``stream-ae demo`` starts the embedded Kafka-protocol broker, creates the topics,
runs the simulator (in a thread), the detector (``stream-ae run`` as a child
process, exactly as deployed) and an alert subscriber that reads the alerts and
events topics with ``read_committed``. On a terminal it shows a rich Live view;
without one it logs a progress line every few seconds. After ``duration`` seconds
(or Ctrl-C) it stops everything, replays the sensor topic into an HTML report and
returns a :class:`DemoSummary`: records, alerts, precision/recall against the
injected labels and when the injected drift was detected.
"""

from __future__ import annotations

import collections
import json
import math
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import structlog
import yaml
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from stream_ae.apps.broker import EmbeddedBroker
from stream_ae.apps.simulate import SimBlock, SimulationConfig, produce_to
from stream_ae.config import KafkaConfig, Settings, merged
from stream_ae.errors import StreamAEError
from stream_ae.schema import AlertMessage, EventMessage
from stream_ae.sources.kafka import KafkaTopicReader

log = structlog.get_logger()

TOPICS = {"sensors": "sensors", "alerts": "sensor-alerts", "dead": "sensor-dead-letters",
          "events": "sensor-events"}


@dataclass(frozen=True)
class DemoOptions:
    """How the demo runs.

    Parameters
    ----------
    duration
        Seconds the simulator produces.
    rate
        Records per second.
    devices
        Simulated devices (record keys).
    partitions
        Partitions of the sensor topic (one engine each in the service).
    workdir
        Where the config, logs, checkpoints and the report go.
    live
        Rich Live view; None: only when stdout is a terminal.
    seed
        Simulator seed.
    overrides
        Nested settings laid over the demo's service config (the CLI's ``--set``).
    """

    duration: float = 60.0
    rate: float = 1000.0
    devices: int = 6
    partitions: int = 2
    workdir: pathlib.Path = pathlib.Path("out/demo")
    live: bool | None = None
    seed: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class DemoSummary:
    """What the demo did and how well the detector found the injected anomalies."""

    records: int = 0
    labelled: int = 0
    alerts: int = 0
    true_alerts: int = 0
    precision: float = math.nan
    recall: float = math.nan
    drift_injected_at: float = math.nan
    drift_detected_at: float | None = None
    drift_delay_s: float | None = None
    events: int = 0
    events_before_drift: int = 0
    drift_reached: bool = False  # the run lasted until the injected drift
    service_exit: int | None = None
    report: str = ""
    backtest: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- configuration
def simulation_config(opts: DemoOptions, start: float) -> SimulationConfig:
    """Event time follows the wall clock; anomalies (about 1 % of the records) start after
    the warm-up; the drift comes at 60 % of the run; one daily cycle per run."""
    return SimulationConfig(
        devices=opts.devices, interval_s=opts.devices / opts.rate, day_s=opts.duration,
        point_rate=0.002, collective_rate=0.0002,
        anomalies_after=max(6.0, 0.1 * opts.duration), drift_at=0.6 * opts.duration,
        start=start, seed=opts.seed,
    )


def service_config(bootstrap: str, opts: DemoOptions, sensors: tuple[str, ...]
                   ) -> dict[str, Any]:
    """The detector's configuration for the demo (plain data, written as YAML)."""
    return {
        # two lags: temporal context per device (on the simulator's stream F1 0.40 -> 0.49);
        # a regime change after 30 % alarms over 600 records (F1 0.49 -> 0.52): one simulated
        # day per run moves normal behaviour faster than a plant does
        "engine": {"features": {"names": list(sensors), "lags": 2},
                   "training": {"warmup": 1000, "stride": 256, "window": 2048,
                                "batch_size": 1024, "warmup_epochs": 30},
                   "threshold": {"window": 3000, "q": 0.995},
                   # a less jumpy ADWIN: the daily cycle moves the score level all the time
                   "drift": {"delta": 1e-5},
                   # the decision budget is the default (3e-5 false flags per record): the
                   # demo's looser 1e-4 cost precision (0.32 -> 0.34 on its stream replayed
                   # from a file) for 2 % of recall
                   # ... and a new normal (the injected drift) is accepted after 120 records
                   # of a device, where a plant would wait ten minutes
                   "regime": {"after_records": 120}},
        "record": {"label_field": "label"},
        "kafka": {"bootstrap_servers": bootstrap, "group_id": "stream-ae-demo",
                  "input_topics": [TOPICS["sensors"]], "alerts_topic": TOPICS["alerts"],
                  "dead_letter_topic": TOPICS["dead"], "events_topic": TOPICS["events"],
                  "transactional_id": "stream-ae-demo-1", "session_timeout_ms": 6000},
        "batching": {"max_records": 2048, "max_wait_ms": 200},
        "checkpoint": {"directory": str(opts.workdir / "checkpoints"), "interval_s": 10.0},
        "metrics": {"enabled": False},
        "log": {"format": "json", "level": "info"},
    }


# --------------------------------------------------------------------------- live state
@dataclass
class DemoState:
    """What the subscriber has seen, plus the simulator's ground truth."""

    started: float
    produced: int = 0
    latest_event_time: float = -math.inf
    labelled: set[tuple[str, float]] = field(default_factory=set)
    alerts: int = 0
    true_alerts: int = 0
    threshold: float = math.nan
    recent: collections.deque[AlertMessage] = field(
        default_factory=lambda: collections.deque(maxlen=8))
    alert_times: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=5000))
    events: list[EventMessage] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)  # alert ids: a re-delivered alert counts once

    def on_block(self, block: SimBlock) -> None:
        """Simulator callback (its thread): remember labelled readings."""
        for i in map(int, block.labels.nonzero()[0]):
            self.labelled.add((block.keys[i], round(float(block.timestamps[i]), 3)))
        self.produced += len(block)
        if len(block):
            self.latest_event_time = float(block.timestamps[-1])

    def on_alert(self, alert: AlertMessage, now: float) -> None:
        if alert.alert_id in self.seen:
            return
        self.seen.add(alert.alert_id)
        self.alerts += 1
        self.threshold = alert.threshold
        self.recent.appendleft(alert)
        self.alert_times.append(now)
        if (alert.key, round(alert.event_time or math.nan, 3)) in self.labelled:
            self.true_alerts += 1

    def rate(self, now: float, window: float = 10.0) -> float:
        """Alerts per second over the last ``window`` seconds."""
        return sum(1 for t in self.alert_times if t >= now - window) / window


def render(state: DemoState, now: float, sim: SimulationConfig) -> Group:
    """The Live view: counters, then the latest alerts with their top features."""
    stats = Table(title="stream-ae demo", show_header=False)
    drift_at = sim.start + (sim.drift_at or math.nan)
    drift = "yes" if now >= drift_at else f"in {drift_at - now:.0f} s"
    for name, value in (
        ("elapsed", f"{now - state.started:.0f} s"), ("records produced", f"{state.produced:,}"),
        ("alerts", f"{state.alerts:,}"), ("alert rate", f"{state.rate(now):.1f}/s"),
        ("threshold (latest alert)", f"{state.threshold:.4g}"),
        ("drift injected", drift),
        ("drift/regime events", str(len(state.events))),
    ):
        stats.add_row(name, value)
    alerts = Table(title="latest alerts")
    for col in ("event time", "key", "grade", "incident", "sensors (observed vs expected)"):
        alerts.add_column(col)
    for a in state.recent:
        when = time.strftime("%H:%M:%S", time.gmtime(a.event_time or 0))
        top = ", ".join(f"{f.name} {f.direction} {f.observed:.3g} vs {f.expected:.3g} "
                        f"({f.share:.0%})" for f in a.top_features[:2]
                        if f.observed is not None and f.expected is not None)
        alerts.add_row(when, a.key, f"{a.grade:.2f}", a.incident_id.rsplit("/", 2)[-2], top)
    return Group(stats, alerts)


# --------------------------------------------------------------------------- subscriber
class Subscriber:
    """Reads the alerts and events topics (read_committed) and updates the state."""

    def __init__(self, kafka: KafkaConfig, state: DemoState) -> None:
        self.kafka = kafka
        self.state = state
        self._alerts = KafkaTopicReader(kafka, TOPICS["alerts"])
        self._events = KafkaTopicReader(kafka, TOPICS["events"])

    def open(self) -> None:
        self._alerts.open()
        self._events.open()

    def poll(self, timeout: float) -> int:
        """Read what arrived; returns how many alerts."""
        now = time.time()
        msgs = self._alerts.poll(5000, timeout)
        for m in msgs:
            self.state.on_alert(AlertMessage.model_validate_json(m.value or b"{}"), now)
        for m in self._events.poll(1000, 0.0):
            event = EventMessage.model_validate_json(m.value or b"{}")
            self.state.events.append(event)
            log.info("demo_event", kind=event.kind, partition=event.source.partition,
                     event_time=event.event_time)
        return len(msgs)

    def close(self) -> None:
        self._alerts.close()
        self._events.close()


# --------------------------------------------------------------------------- the run
def _start_service(config_path: pathlib.Path, log_path: pathlib.Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "stream_ae.cli", "run", "--config", str(config_path)]
    with log_path.open("ab") as out:
        # own session: a Ctrl-C in the terminal reaches the demo, which stops the service itself
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    log.info("demo_service_started", pid=proc.pid, config=str(config_path), log=str(log_path))
    return proc


def _stop_service(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    log.info("demo_service_stopped", exit_code=proc.returncode)
    return proc.returncode


class _Producer:
    """Runs the simulator in a thread (:func:`~stream_ae.apps.simulate.produce_to`)."""

    def __init__(self, kafka: KafkaConfig, sim: SimulationConfig, opts: DemoOptions,
                 state: DemoState) -> None:
        self.kafka, self.sim, self.opts, self.state = kafka, sim, opts, state
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="simulator", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            produce_to(self.kafka, None, TOPICS["sensors"], self.sim, self.opts.rate,
                       duration=self.opts.duration, stop=self.stop, on_block=self.state.on_block)
        except BaseException as exc:  # surfaced to the main thread in join()
            self.error = exc

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self) -> None:
        self.stop.set()
        self._thread.join(30)
        if self.error is not None:
            raise self.error


def _running(producer: _Producer, service: subprocess.Popen[bytes]) -> bool:
    """The simulator still produces; ``StreamAEError`` when the service died under it."""
    if service.poll() is not None:
        raise StreamAEError(f"the detector service exited with code {service.returncode}; "
                            "see service.log in the demo's work directory")
    return producer.running


def _watch(sub: Subscriber, producer: _Producer, service: subprocess.Popen[bytes],
           state: DemoState, sim: SimulationConfig, live: bool) -> None:
    """Poll alerts while the simulator runs: Live view on a terminal, log lines otherwise."""
    if live:
        with Live(render(state, time.time(), sim), refresh_per_second=4,
                  console=Console()) as view:
            while _running(producer, service):
                sub.poll(0.25)
                view.update(render(state, time.time(), sim))
        return
    last = 0.0
    while _running(producer, service):
        sub.poll(0.25)
        now = time.time()
        if now - last >= 5.0:
            last = now
            log.info("demo_progress", elapsed_s=round(now - state.started), produced=state.produced,
                     alerts=state.alerts, alert_rate=round(state.rate(now), 2),
                     threshold=state.threshold, events=len(state.events))


def _drain(sub: Subscriber, quiet_s: float = 4.0, limit_s: float = 30.0) -> None:
    """After the simulator stops, read alerts until none arrive for ``quiet_s`` seconds."""
    deadline = time.monotonic() + limit_s
    quiet_since = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - quiet_since < quiet_s:
        if sub.poll(0.5):
            quiet_since = time.monotonic()


def summarise(state: DemoState, sim: SimulationConfig) -> DemoSummary:
    """Counts, precision/recall against the injected labels and the drift detection time."""
    injected = sim.start + (sim.drift_at if sim.drift_at is not None else math.nan)
    after = sorted(e.event_time for e in state.events
                   if e.kind == "drift" and e.event_time is not None and e.event_time >= injected)
    return DemoSummary(
        records=state.produced, labelled=len(state.labelled), alerts=state.alerts,
        true_alerts=state.true_alerts,
        precision=state.true_alerts / state.alerts if state.alerts else math.nan,
        recall=state.true_alerts / len(state.labelled) if state.labelled else math.nan,
        drift_injected_at=injected, drift_detected_at=after[0] if after else None,
        drift_delay_s=round(after[0] - injected, 2) if after else None,
        events=len(state.events),
        events_before_drift=sum(1 for e in state.events
                                if e.event_time is not None and e.event_time < injected),
        drift_reached=state.latest_event_time >= injected,
    )


def run_demo(opts: DemoOptions, on_started: Callable[[str], None] | None = None) -> DemoSummary:
    """Run the whole demo; returns its summary (also written to ``workdir/summary.json``)."""
    opts.workdir.mkdir(parents=True, exist_ok=True)
    # the broker is new and empty each time: checkpoints of an earlier run would make the
    # service seek past the new records
    shutil.rmtree(opts.workdir / "checkpoints", ignore_errors=True)
    live = opts.live if opts.live is not None else sys.stdout.isatty()
    with EmbeddedBroker(log_path=opts.workdir / "broker.log") as broker:
        broker.create_topics({TOPICS["sensors"]: opts.partitions, TOPICS["alerts"]: 1,
                              TOPICS["dead"]: 1, TOPICS["events"]: 1})
        sim = simulation_config(opts, time.time())
        cfg = merged(service_config(broker.bootstrap, opts, sim.sensor_names), opts.overrides)
        config_path = opts.workdir / "demo.yaml"
        config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        settings = Settings.load(config_path)
        if on_started is not None:
            on_started(broker.bootstrap)
        summary = _run_parts(settings, config_path, sim, opts, live)
        summary.report, summary.backtest = _report(settings, opts)
    (opts.workdir / "summary.json").write_text(json.dumps(summary.as_dict(), indent=1))
    return summary


def _run_parts(settings: Settings, config_path: pathlib.Path, sim: SimulationConfig,
               opts: DemoOptions, live: bool) -> DemoSummary:
    state = DemoState(started=time.time())
    service = _start_service(config_path, opts.workdir / "service.log")
    sub = Subscriber(settings.kafka, state)
    producer = _Producer(settings.kafka, sim, opts, state)
    try:
        sub.open()
        producer.start()
        try:
            _watch(sub, producer, service, state, sim, live)
        except KeyboardInterrupt:
            log.info("demo_interrupted")
        finally:
            producer.join()
        _drain(sub)
    finally:
        exit_code = _stop_service(service)
        sub.close()
    summary = summarise(state, sim)
    summary.service_exit = exit_code
    return summary


def _report(settings: Settings, opts: DemoOptions) -> tuple[str, dict[str, Any]]:
    """Replay the sensor topic with the same settings into the HTML report."""
    from stream_ae.backtest import TopicInput, run_topic_backtest

    out = opts.workdir / "replay" / "predictions.csv"
    s = run_topic_backtest(settings, TopicInput(TOPICS["sensors"]), out, progress=False)
    m = s.metrics
    quality = {} if m is None else {"precision": m.precision, "recall": m.recall, "f1": m.f1,
                                    "roc_auc": m.roc_auc}
    return str(s.html), {"records": s.records, "alerts": s.alerts, **quality, **s.delay}


def summary_table(summary: DemoSummary) -> Table:
    """The summary for the terminal."""
    table = Table(title="demo summary", show_header=False)
    drift = (f"first drift event {summary.drift_delay_s:.1f} s after it was injected"
             if summary.drift_delay_s is not None
             else "not detected" if summary.drift_reached else "not reached (run ended before)")
    rows = [
        ("records processed", f"{summary.records:,}"),
        ("injected anomalous records", f"{summary.labelled:,}"),
        ("alerts", f"{summary.alerts:,}"),
        ("precision (alerts on injected anomalies)", f"{summary.precision:.3f}"),
        ("recall (injected anomalies alerted)", f"{summary.recall:.3f}"),
        ("injected drift", drift),
        ("drift/regime events (before the injected drift)",
         f"{summary.events} ({summary.events_before_drift})"),
        ("HTML report", summary.report),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table
