"""The demo end to end, as ``make demo`` runs it but short and without a terminal."""

from __future__ import annotations

import io
import json
import os
import pathlib
import subprocess
import sys

import pytest
from rich.console import Console

from stream_ae.apps.demo import (
    DemoOptions,
    DemoState,
    _running,
    render,
    simulation_config,
    summarise,
    summary_table,
)
from stream_ae.errors import StreamAEError
from stream_ae.schema import AlertMessage, EventMessage


@pytest.mark.slow
def test_demo_runs_briefly_and_summarises(tmp_path: pathlib.Path) -> None:
    workdir = tmp_path / "demo"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-m", "stream_ae.cli", "demo", "--duration", "20", "--rate", "600",
         "--workdir", str(workdir)],
        capture_output=True, text=True, timeout=240, env=env, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for line in ("records processed", "alerts", "precision", "recall", "injected drift",
                 "HTML report"):
        assert line in out, out
    # no terminal: plain periodic log lines instead of the live view
    assert '"event": "demo_progress"' in proc.stderr
    summary = json.loads((workdir / "summary.json").read_text())
    assert 10_000 <= summary["records"] <= 13_000  # 600 records/s for 20 s
    assert summary["labelled"] > 0 and summary["alerts"] > 0
    assert 0.0 < summary["precision"] <= 1.0 and 0.0 < summary["recall"] <= 1.0
    assert summary["true_alerts"] <= summary["alerts"]
    assert summary["service_exit"] == 0
    report = pathlib.Path(summary["report"])
    assert report.is_file() and "Alert timeline" in report.read_text()
    assert summary["backtest"]["records"] == summary["records"]


def _alert(key: str, ts: float, n: int) -> AlertMessage:
    return AlertMessage.model_validate({
        "alert_id": f"s/0/{n}", "source": {"topic": "s", "partition": 0, "offset": n},
        "key": key, "event_time": ts, "features": {"x": 1.0}, "score": 3.0, "threshold": 1.0,
        "grade": 0.6, "incident_id": f"s/0/{n}/incident",
        "top_features": [{"name": "x", "observed": 1.0, "expected": 0.2, "direction": "high",
                          "share": 1.0, "lag": 0}],
        "context": {"warmup": False, "drift_recent": False}, "model_version": 1,
        "detected_at": ts})


def _event(ts: float) -> EventMessage:
    return EventMessage.model_validate({
        "event_id": f"s/0/{int(ts)}/drift", "kind": "drift", "detector": "adwin",
        "source": {"topic": "s", "partition": 0, "offset": 1}, "event_time": ts,
        "record_index": 1, "level_before": 1.0, "level_after": 2.0, "action": "boost",
        "model_version": 1, "detected_at": ts})


def test_summary_counts_precision_recall_and_drift_delay() -> None:
    sim = simulation_config(DemoOptions(duration=100.0), start=1000.0)
    state = DemoState(started=0.0)
    state.labelled |= {("a", 1010.0), ("a", 1011.0), ("b", 1012.0), ("b", 1013.0)}
    for n, (key, ts) in enumerate([("a", 1010.0), ("a", 1011.0), ("b", 1050.0)]):
        state.on_alert(_alert(key, ts, n), now=ts)
    state.on_alert(_alert("a", 1010.0, 0), now=1010.0)  # re-delivered: counted once
    state.events += [_event(1030.0), _event(1064.5), _event(1070.0)]
    s = summarise(state, sim)
    assert (s.alerts, s.true_alerts, s.labelled) == (3, 2, 4)
    assert (s.precision, s.recall) == (2 / 3, 0.5)
    assert s.drift_injected_at == 1060.0  # at 60 % of the run
    assert (s.drift_detected_at, s.drift_delay_s, s.events_before_drift) == (1064.5, 4.5, 1)
    assert not s.drift_reached  # no simulator block was seen
    assert "first drift event 4.5 s after" in _table_text(summary_table(s))
    state.latest_event_time = 1061.0
    assert summarise(state, sim).drift_reached
    view = _table_text(render(state, 1070.0, sim))
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in view.splitlines()]
    assert ["alerts", "3"] in rows and ["drift injected", "yes"] in rows
    assert ["drift/regime events", "3"] in rows
    assert view.count("x high 1 vs 0.2 (100%)") == 3  # each alert's top sensor


def _table_text(table: object) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text()


def test_a_dead_service_stops_the_demo() -> None:
    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    dead.wait(30)
    with pytest.raises(StreamAEError, match="exited with code 3"):
        _running(producer=None, service=dead)  # type: ignore[arg-type]
