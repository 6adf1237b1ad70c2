"""Decision quality with the default configuration: false flags on normal data, faults
found, quiet after a new normal. Prints one table (the issue's targets beside the result).

    .venv/bin/python benchmarks/decisions.py            # every case
    .venv/bin/python benchmarks/decisions.py --only gaussian,setpoint

Every case writes a file and runs the file backtest with ``Settings()`` defaults (what
``stream-ae backtest FILE`` runs; only ``training.warmup`` is set where the data set's
protocol fixes it: SKAB's 400 rows), then counts from the predictions and incidents.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from stream_ae.backtest import BacktestSummary, FileInput, run_file_backtest, settings_with
from stream_ae.config import Settings
from stream_ae.sources.files import Columns

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"
T0 = 1_735_689_600.0


def backtest(frame: pd.DataFrame, tmp: pathlib.Path, name: str, warmup: int | None = None,
             settings: Settings | None = None
             ) -> tuple[pd.DataFrame, list[dict[str, Any]], BacktestSummary]:
    path = tmp / f"{name}.csv"
    frame.to_csv(path, index=False)
    out = tmp / f"{name}.pred.csv"
    s = settings_with(settings or Settings(), warmup=warmup)
    label = "label" if "label" in frame else None
    summary = run_file_backtest(
        s, FileInput(path, Columns(timestamp="ts", key="key", label=label)), out, progress=False)
    pred = pd.read_csv(out)
    inc_path = out.with_suffix(".incidents.jsonl")
    incidents = ([json.loads(x) for x in inc_path.read_text().splitlines()]
                 if inc_path.exists() else [])
    return pred, incidents, summary


def opened(incidents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [i for i in incidents if i["status"] == "opened"]


def per_100k(pred: pd.DataFrame) -> float:
    live = pred[pred["warmup"] == 0]
    return 1e5 * float(live["is_anomaly"].mean())


# --------------------------------------------------------------------------- cases
def gaussian(tmp: pathlib.Path) -> list[tuple[str, str, str]]:
    rng = np.random.default_rng(0)
    n, d = 200_000, 8
    a = rng.normal(size=(d, d))
    x = rng.normal(size=(n, d)) @ a / np.sqrt(d)
    frame = pd.DataFrame(x, columns=[f"s{j}" for j in range(d)])
    frame.insert(0, "key", "dev-0")
    frame.insert(0, "ts", T0 + np.arange(n, dtype=float))
    pred, inc, summary = backtest(frame, tmp, "gaussian")
    return [("flagged per 100k, 200k x 8-D correlated Gaussian, no anomalies", "<= 20",
             f"{per_100k(pred):.1f} ({len(opened(inc))} incidents)"),
            ("drift and regime-change events on that stationary stream", "0",
             str(summary.drift_events))]


def skab_free(tmp: pathlib.Path) -> list[tuple[str, str, str]]:
    src = SHARED / "datasets/skab/data/anomaly-free/anomaly-free.csv"
    if not src.exists():
        return [("flagged per 100k, SKAB anomaly-free.csv", "<= 200", "skipped (no ../shared)")]
    raw = pd.read_csv(src, sep=";")
    frame = raw.drop(columns=["datetime"])
    frame.insert(0, "key", "skab")
    frame.insert(0, "ts", pd.to_datetime(raw["datetime"]).astype("int64") / 1e9)
    pred, inc, _ = backtest(frame, tmp, "skab_free", warmup=400)
    return [("flagged per 100k, SKAB anomaly-free.csv (warm-up 400)", "<= 200",
             f"{per_100k(pred):.1f} ({len(opened(inc))} incidents)")]


def episodes(labels: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.r_[0, labels, 0])
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def found(pred: pd.DataFrame, spans: list[tuple[int, int]], slack: int) -> int:
    flags = pred["is_anomaly"].to_numpy()
    return sum(bool(flags[a : b + slack].any()) for a, b in spans)


LAGS = 8  # the default context of one sensor: features.lags_for(1)


def context_of(labels: np.ndarray, lags: int) -> np.ndarray:
    """Records with a labelled record among their last ``lags + 1`` (their model input
    holds it): anomalous context, not normal records."""
    c = np.convolve(labels.astype(float), np.ones(lags + 1))[: labels.size]
    return c > 0


def one_feature(tmp: pathlib.Path) -> list[tuple[str, str, str]]:
    rng = np.random.default_rng(1)
    n = 60_000
    t = np.arange(n)
    x = np.sin(2 * np.pi * t / 600) + 0.1 * rng.normal(size=n)
    lab = np.zeros(n, np.int64)
    spikes = rng.choice(np.arange(3000, n - 100), 12, replace=False)
    for i in spikes:
        x[i] += rng.choice([-1, 1]) * 1.5
        lab[i] = 1
    shifts = np.linspace(8000, n - 4000, 6).astype(int)
    for i in shifts:
        x[i : i + 300] += 0.8
        lab[i : i + 300] = 1
    frame = pd.DataFrame({"ts": T0 + t.astype(float), "key": "pump", "level": x, "label": lab})
    pred, _, _ = backtest(frame, tmp, "one_feature")
    spans = episodes(lab)
    normal = pred[~context_of(lab, LAGS) & (pred["warmup"] == 0).to_numpy()]
    return [("1-feature stream: injected spikes and level shifts found", "all 18",
             f"{found(pred, spans, 10)} of {len(spans)}"),
            ("1-feature stream: flagged per 100k normal records", "<= 20",
             f"{1e5 * normal['is_anomaly'].mean():.1f}")]


def setpoint(tmp: pathlib.Path, keys: int) -> list[tuple[str, str, str]]:
    """A lasting change of normal (a new setpoint) on one key at 1 Hz; the others go on."""
    rng = np.random.default_rng(2)
    steps, d = 30_000 if keys == 1 else 3000, 4
    change = steps // 2
    rows = []
    mix = rng.normal(size=(2, d))  # machines of one kind: the same correlations
    for k in range(keys):
        z = rng.normal(size=(steps, 2))
        x = z @ mix + 0.1 * rng.normal(size=(steps, d))
        if k == 0:
            x[change:, :2] += 2.5  # the new setpoint of two sensors
        rows.append(pd.DataFrame(x, columns=[f"s{j}" for j in range(d)]).assign(
            key=f"k{k}", ts=T0 + np.arange(steps, dtype=float), step=np.arange(steps)))
    frame = pd.concat(rows).sort_values(["step", "key"], kind="stable").drop(columns="step")
    frame = frame[["ts", "key", *[f"s{j}" for j in range(d)]]]
    pred, inc, _ = backtest(frame, tmp, f"setpoint{keys}",
                         warmup=1000 if keys == 1 else 1000 * min(keys, 10))
    mine = pred[(pred["key"] == "k0") & (pred["is_anomaly"] == 1)]
    after = mine[mine["timestamp"] >= T0 + change]
    # the alarm run: flags of k0 after the change until its first gap of 10 minutes
    times = np.sort(after["timestamp"].to_numpy()) - (T0 + change)
    gaps = np.flatnonzero(np.diff(times) > 600)
    run = times[: gaps[0] + 1] if gaps.size else times
    last = float(run.max()) if run.size else 0.0
    later = len(times) - len(run)
    new_normal = [i for i in inc if i.get("reason") == "new_normal" and i["key"] == "k0"]
    return [(f"alarms after a lasting setpoint change, {keys} key(s) per partition",
             "<= 600 s at 1 Hz",
             f"{last:.0f} s ({len(run)} records; {later} flagged later), "
             f"{'new normal declared' if new_normal else 'no new normal'}")]


def demo_stream(tmp: pathlib.Path) -> list[tuple[str, str, str]]:
    from stream_ae.apps.simulate import SimulationConfig, simulate_frame

    cfg = SimulationConfig(devices=6, interval_s=1.0, day_s=86_400.0, point_rate=0.002,
                           collective_rate=0.0002, anomalies_after=1200.0, seed=3)
    frame = simulate_frame(cfg, 8 * 3600)
    frame = frame.rename(columns={c: c for c in frame.columns})
    pred, inc, _ = backtest(frame, tmp, "sim")
    live = pred[pred["warmup"] == 0]
    # a flag on a record whose context (its last lags + 1 records of the key) holds a
    # labelled record counts as true: the model input of that record contains the anomaly
    ctx = np.zeros(len(pred), bool)
    for _key, g in pred.groupby("key"):
        ctx[g.index.to_numpy()] = context_of(g["label"].to_numpy(), 7)
    live_ctx = ctx[live.index.to_numpy()]
    flagged = live["is_anomaly"].to_numpy() == 1
    prec = float((flagged & live_ctx).sum()) / max(int(flagged.sum()), 1)
    rec = float(((live["label"] == 1) & (live["is_anomaly"] == 1)).sum()) / max(
        int((live["label"] == 1).sum()), 1)
    spans = []
    for _key, g in pred.groupby("key"):
        lab = g["label"].to_numpy()
        flags = g["is_anomaly"].to_numpy()
        spans += [bool(flags[a : b + 10].any()) for a, b in episodes(lab)]
    lab_at = {(r.key, int(r.line)): r.label for r in pred.itertuples()}
    hours = len(pred) / 3600.0
    false_inc = 0
    for i in opened(inc):
        line = i["source"]["offset"]
        near = [lab_at.get((i["key"], line + j), 0) for j in range(-60, 60)]
        false_inc += not any(near)
    return [("simulated plant, 6 devices x 8 h at 1 Hz: record precision / recall", ">= 0.7 / 0.7",
             f"{prec:.2f} / {rec:.2f}"),
            ("... labelled episodes detected", ">= 90 %",
             f"{100 * np.mean(spans):.0f} % of {len(spans)}"),
            ("... false incidents per device-hour", "<= 0.5",
             f"{false_inc / hours:.2f} ({false_inc} of {len(opened(inc))})")]


CASES: dict[str, Callable[[pathlib.Path], list[tuple[str, str, str]]]] = {
    "gaussian": gaussian, "skab_free": skab_free, "one_feature": one_feature,
    "setpoint": lambda tmp: setpoint(tmp, 1), "setpoint_many": lambda tmp: setpoint(tmp, 100),
    "simulated": demo_stream,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated cases: " + ", ".join(CASES))
    args = ap.parse_args()
    import structlog

    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
    chosen = [c for c in args.only.split(",") if c] or list(CASES)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name in chosen:
            t0 = time.perf_counter()
            got = CASES[name](pathlib.Path(d))
            rows += [(*r, f"{time.perf_counter() - t0:.0f}") for r in got]
    print("| measure | target | stream_ae defaults | s |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
