"""The same records give the same decisions whichever way they arrive: through the service
loop (in-memory group source and sink) and as a JSON Lines file through the file backtest.
tests/integration/test_one_path.py adds the topic replay on the real broker."""

from __future__ import annotations

import pathlib

import numpy as np
import orjson
import pandas as pd
from structlog.testing import capture_logs

from stream_ae.backtest import FileInput, run_file_backtest
from stream_ae.config import Settings
from stream_ae.service.main import build_loop, engine_factory
from stream_ae.sinks.memory import MemorySink
from stream_ae.sources.memory import MemoryGroupSource

NAMES = ("a", "b", "c")
BAD = [b"[1, 2]", b'{"key": "k0", "ts": 5.0, "a": "x", "b": 1, "c": 1}', b'{"a": 1',
       b'{"key": "k1", "ts": 6.0, "a": 1, "b": 2}', b'{"key": "k2", "ts": 7.0, "a": NaN, '
       b'"b": 1, "c": 1}']


def small_settings(tmp: pathlib.Path) -> Settings:
    return Settings.load(None, engine={
        "features": {"names": list(NAMES), "lags": 2},
        "training": {"warmup": 300, "window": 256, "batch_size": 128, "stride": 64,
                     "warmup_epochs": 5},
        "threshold": {"window": 300, "q": 0.98}},
        batching={"max_records": 97, "max_wait_ms": 10},
        checkpoint={"directory": str(tmp / "ckpt")})


def messages(n: int = 1500, seed: int = 4) -> list[bytes]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(NAMES)))
    x[rng.choice(np.arange(400, n), size=20, replace=False)] += 7.0
    msgs = [orjson.dumps({"key": f"k{i % 3}", "ts": 1000.0 + i,
                          **dict(zip(NAMES, row.tolist(), strict=True))})
            for i, row in enumerate(x)]
    for j, bad in enumerate(BAD):
        msgs.insert(500 + 97 * j, bad)
    return msgs


def service_decisions(settings: Settings, msgs: list[bytes]) -> tuple[dict, dict]:
    src = MemoryGroupSource({("s", 0): msgs}, max_per_poll=41)
    sink = MemorySink(src.committer())
    with capture_logs():
        build_loop(settings, src, sink, engine_factory(settings)).run_until_idle()
    alerts = {a.position.offset: (a.key, a.timestamp, a.score, a.threshold, a.top_features,
                                  dict(a.features)) for a in sink.alerts if a.position}
    dead = {d.original.position.offset: (d.reason, d.detail, d.original.value)
            for d in sink.dead_letters}
    return alerts, dead


def test_service_and_file_backtest_decide_the_same(tmp_path: pathlib.Path) -> None:
    settings = small_settings(tmp_path)
    msgs = messages()
    alerts, dead = service_decisions(settings, msgs)
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(msgs) + b"\n")
    out = tmp_path / "pred.csv"
    with capture_logs():
        run_file_backtest(settings, FileInput(path), out, progress=False)
    pred = pd.read_csv(out, keep_default_na=False)
    file_alerts = [orjson.loads(line) for line in out.with_suffix(".alerts.jsonl").open("rb")]
    # file offsets are 1-based lines, the memory partition's 0-based offsets
    got = {a["source"]["offset"] - 1: (a["key"], a["event_time"], a["score"], a["threshold"],
                                        tuple((t["name"], t["error"]) for t in a["top_features"]),
                                        a["features"]) for a in file_alerts}
    assert len(alerts) >= 10 and got == alerts
    errors = {int(r.line) - 1: r.error for r in pred.itertuples() if r.error}
    assert errors == {o: f"{reason}: {detail}" for o, (reason, detail, _) in dead.items()}
    assert sorted(r for r, _, _ in dead.values()) == sorted(
        ["invalid_json", "missing_feature", "non_finite", "non_numeric", "not_object"])
