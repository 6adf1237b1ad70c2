"""Cost of the decision layer per component: 200k records, 1 key and 1,000 keys.

The flow the engine runs, block by block (1,024 records, its boundary stride): survival
-> grade -> evidence -> flags -> sensor shares -> incidents, then the calibrator learns
from the rows not flagged (rows of keys without their own level yet are learned, not
flagged). Scores are chi-square(6)/6 per key (key scales spread over a
factor ~1e3), with bursts of anomalies (x20) on 0.5 % of the rows. The block's keys
are encoded once (``BatchKeys``) and shared. CPU seconds (process time) per component,
summed over the stream, the least of three runs.

    .venv/bin/python benchmarks/decision_layer.py
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from stream_ae.detect import BatchKeys
from stream_ae.detect.attribution import SensorAttribution
from stream_ae.detect.calibrate import TailCalibrator, grade
from stream_ae.detect.evidence import EvidenceAccumulator, threshold_for_rate
from stream_ae.detect.incidents import IncidentTracker

N, BLOCK, SENSORS = 200_000, 1024, ["t", "p", "h", "v"]


def stream(n_keys: int, seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray]:
    r = np.random.default_rng(seed)
    kid = r.integers(0, n_keys, N)
    scores = r.chisquare(6, N) / 6 * np.exp(r.normal(0, 2, n_keys))[kid]
    burst = np.zeros(N, bool)
    for start in r.integers(20_000, N - 100, 10):
        burst[start : start + 100] = True
    scores[burst] *= 20.0
    errors = r.exponential(size=(N, 3 * len(SENSORS))).astype(np.float32)
    return [f"key-{k}" for k in kid], scores, errors


def run(n_keys: int) -> dict[str, float]:
    keys, scores, errors = stream(n_keys)
    cal, ev, inc = TailCalibrator(), EvidenceAccumulator(), IncidentTracker()
    att = SensorAttribution(SENSORS, lags=1, diffs=True)
    h = threshold_for_rate(ev.k, 1e-5)
    cost: dict[str, float] = defaultdict(float)
    counts = {"flags": 0, "incidents": 0}

    def timed(name: str, f: Callable[..., Any], *a: Any) -> Any:
        t = time.process_time()
        out = f(*a)
        cost[name] += time.process_time() - t
        return out

    for a in range(0, N, BLOCK):
        s, e = scores[a : a + BLOCK], errors[a : a + BLOCK]
        k = timed("BatchKeys (once per block)", BatchKeys, keys[a : a + BLOCK])
        p = timed("calibrator.survival", cal.survival, k, s)
        g = timed("grade", grade, p)
        cusum = timed("evidence.update", ev.update, k, p)
        own = timed("calibrator.has_level", cal.has_level, k)
        flags = ((p < 1e-6) | (cusum > h)) & own  # a key without its own level learns first
        shares = timed("attribution.sensor_errors", att.sensor_errors, e)
        ids = np.arange(a, a + len(k))
        _, ups = timed("incidents.update", inc.update, k, flags, g, ids.astype(float), ids,
                       shares, SENSORS)
        if flags.any():
            rows = np.flatnonzero(flags)
            timed("calibrator.score_at", cal.score_at, [k[i] for i in rows.tolist()],
                  np.full(rows.size, 1e-6))
        normal = np.flatnonzero(~flags)
        learn = k if normal.size == len(k) else [k[i] for i in normal.tolist()]
        timed("calibrator.update", cal.update, learn, s[normal])
        counts["flags"] += int(flags.sum())
        counts["incidents"] += sum(u.kind == "opened" for u in ups)
    cost["total"] = sum(cost.values())
    return {**cost, **counts}


def main() -> None:
    """The least CPU of three runs per component (a shared machine only ever adds time)."""
    results = {}
    for n in (1, 1000):
        runs = [run(n) for _ in range(3)]
        results[n] = {name: min(r[name] for r in runs) for name in runs[0]}
    names = list(results[1])
    print("| component | 1 key | 1,000 keys |")
    print("|---|---:|---:|")
    for name in names:
        unit = "" if name in ("flags", "incidents") else " s"
        fmt = (lambda v: f"{v:.0f}") if not unit else (lambda v: f"{v:.3f}")
        print(f"| {name} | {fmt(results[1][name])}{unit} | {fmt(results[1000][name])}{unit} |")


if __name__ == "__main__":
    main()
