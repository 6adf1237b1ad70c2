"""The records and helpers of the one-processing-path tests (unit and integration)."""

from __future__ import annotations

import pathlib

import orjson
import pandas as pd
from structlog.testing import capture_logs

from stream_ae.config import Settings
from stream_ae.service.main import build_loop, engine_factory
from stream_ae.sinks.memory import MemorySink
from stream_ae.sources.memory import MemoryGroupSource
from tests import streams
from tests.streams import gaussian

NAMES = ("a", "b", "c")
BAD = [b"[1, 2]", b'{"key": "k0", "ts": 5.0, "a": "x", "b": 1, "c": 1}', b'{"a": 1',
       b'{"key": "k1", "ts": 6.0, "a": 1, "b": 2}', b'{"key": "k2", "ts": 7.0, "a": NaN, '
       b'"b": 1, "c": 1}']


def small_settings(tmp: pathlib.Path) -> Settings:
    return Settings.load(None, engine={
        "features": {"names": list(NAMES), "lags": 2},
        "training": {"warmup": 300, "window": 256, "batch_size": 128, "stride": 64,
                     "warmup_epochs": 5},
        "threshold": {"window": 300, "q": 0.98},
        "decision": {"false_alarm_rate": 1e-3, "min_scores": 50, "key_min_records": 20}},
        batching={"max_records": 97, "max_wait_ms": 10},
        checkpoint={"directory": str(tmp / "ckpt")})


def messages(n: int = 1500, seed: int = 4) -> list[bytes]:
    x, _ = gaussian(n, len(NAMES), seed, anomalies=20, after=400)
    msgs = streams.messages(x, NAMES)
    for j, bad in enumerate(BAD):
        msgs.insert(500 + 97 * j, bad)
    return msgs


def service_decisions(settings: Settings, msgs: list[bytes]) -> tuple[dict, dict]:  # type: ignore[type-arg]
    src = MemoryGroupSource({("s", 0): msgs}, max_per_poll=41)
    sink = MemorySink(src.committer())
    with capture_logs():
        build_loop(settings, src, sink, engine_factory(settings)).run_until_idle()
    alerts = {a.position.offset: (
        a.key, a.timestamp, a.score, a.threshold, a.grade, int(a.incident_id.split("/")[-2]),
        tuple((t.name, t.observed, t.expected, t.direction, t.share, t.lag)
              for t in a.top_features), dict(a.features)) for a in sink.alerts if a.position}
    dead = {d.original.position.offset: (d.reason, d.detail, d.original.value)
            for d in sink.dead_letters}
    return alerts, dead


def replay_decisions(alert_lines: list[bytes], pred: pd.DataFrame, base: int
                     ) -> tuple[dict, dict]:  # type: ignore[type-arg]
    """Alerts (from their JSON lines) and errors (from the predictions) of a backtest, by
    0-based position (``base``: the backtest's offset of the first record)."""
    got = {}
    for line in alert_lines:
        a = orjson.loads(line)
        got[a["source"]["offset"] - base] = (
            a["key"], a["event_time"], a["score"], a["threshold"], a["grade"],
            int(a["incident_id"].split("/")[-2]) - base,
            tuple((t["name"], t["observed"], t["expected"], t["direction"], t["share"],
                   t["lag"]) for t in a["top_features"]), a["features"])
    order = "line" if "line" in pred else "offset"
    errors = {int(getattr(r, order)) - base: r.error for r in pred.itertuples() if r.error}
    return got, errors
