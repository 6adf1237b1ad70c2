"""Memory: RSS per distinct key (lag features on), the ``max_keys`` bound, and a soak.

1. **Per key.** One engine (default settings, ``features.lags`` 8, 8 features) is warmed
   up on 20,000 records of 8 keys; then ``--keys`` records of distinct new keys go
   through it (4,096 per step). RSS is read from ``/proc/self/status`` after a
   ``gc.collect()`` before and after; bytes per key = the difference / keys. Then as many
   *more* new keys: with ``max_keys`` = ``--keys`` the least recently seen are evicted,
   so RSS must stay put (the bound).
2. **Soak.** A fresh engine (default settings, lags 8) at ``--rate`` records/s (paced
   steps of ``--rate / 10`` records every 0.1 s) for ``--soak-s`` seconds, keys drawn
   from a fleet of ``--fleet`` (default 50,000, below ``max_keys``: beyond it every batch
   with an unseen key takes the feature stage's record-by-record eviction path, which
   does not sustain 20,000 records/s here). RSS is sampled every ``--every`` seconds;
   growth is measured against the sample at the end of the first fifth of the soak (the
   warm-up of allocator pools and of the engine's windows).

    .venv/bin/python benchmarks/memory.py [--keys 100000] [--soak-s 1800] [--rate 20000]
"""

from __future__ import annotations

import argparse
import gc
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import structlog

from stream_ae.config import EngineConfig, FeaturesConfig
from stream_ae.records import Batch

D = 8


def rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def settled_rss() -> int:
    gc.collect()
    return rss_bytes()


def batch(rng: np.random.Generator, keys: list[str], t0: float) -> Batch:
    n = len(keys)
    x = rng.normal(size=(n, D)).astype(np.float32)
    return Batch(tuple(keys), t0 + np.arange(n, dtype=np.float64), x, None)


def per_key(keys: int, lags: int) -> None:
    from stream_ae.engine import Engine

    cfg = EngineConfig(features=FeaturesConfig(lags=lags, max_keys=keys))
    eng = Engine(cfg, [f"f{i}" for i in range(D)])
    rng = np.random.default_rng(0)
    for s in range(0, 20_000, 4096):
        eng.step(batch(rng, [f"warm-{i % 8}" for i in range(s, min(20_000, s + 4096))], s))
    base = settled_rss()
    marks = []
    for phase in (0, 1):  # 1: as many more new keys, beyond max_keys
        for s in range(0, keys, 4096):
            ks = [f"key-{phase}-{i:07d}" for i in range(s, min(keys, s + 4096))]
            eng.step(batch(rng, ks, 1e6 + s))
        marks.append(settled_rss())
    print(f"| lags | keys | RSS before | after {keys:,} keys | bytes per key "
          f"| after {2 * keys:,} keys (max_keys {keys:,}) |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| {lags} | {keys:,} | {base / 2**20:.0f} MiB | {marks[0] / 2**20:.0f} MiB "
          f"| {(marks[0] - base) / keys:,.0f} | {marks[1] / 2**20:.0f} MiB |")


def soak(seconds: float, rate: int, every: float, fleet: int, lags: int) -> None:
    from stream_ae.engine import Engine

    eng = Engine(EngineConfig(features=FeaturesConfig(lags=lags)), [f"f{i}" for i in range(D)])
    rng = np.random.default_rng(1)
    step_n = max(1, rate // 10)
    start = time.monotonic()
    next_sample, samples = start, []
    sent = 0
    while (now := time.monotonic()) - start < seconds:
        ks = [f"soak-{k}" for k in rng.integers(0, fleet, step_n)]
        eng.step(batch(rng, ks, 2e6 + sent))
        sent += step_n
        if now >= next_sample:
            samples.append((now - start, sent, rss_bytes()))
            next_sample += every
        time.sleep(max(0.0, start + sent / rate - time.monotonic()))
    ref_i = next(i for i, (t, _, _) in enumerate(samples) if t >= seconds / 5)
    ref = samples[ref_i][2]
    print(f"\nsoak: {sent:,} records in {seconds:.0f} s ({sent / seconds:,.0f} rec/s), "
          f"{fleet:,} keys, lags {lags}")
    print(f"| soak at {rate:,} rec/s: elapsed s | records | RSS MiB | vs RSS at "
          f"{samples[ref_i][0]:.0f} s |")
    print("|---:|---:|---:|---:|")
    shown = [*samples[:: max(1, len(samples) // 12)], samples[-1]]
    for t, n, r in shown:
        print(f"| {t:.0f} | {n:,} | {r / 2**20:.1f} | {100 * (r - ref) / ref:+.1f} % |")
    peak = max(r for _, _, r in samples[ref_i:])
    print(f"growth after the first fifth: end {100 * (samples[-1][2] - ref) / ref:+.1f} %, "
          f"peak {100 * (peak - ref) / ref:+.1f} %")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--lags", type=int, default=8)
    ap.add_argument("--soak-s", type=float, default=1800.0)
    ap.add_argument("--rate", type=int, default=20_000)
    ap.add_argument("--every", type=float, default=10.0)
    ap.add_argument("--fleet", type=int, default=50_000)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    per_key(args.keys, args.lags)
    if args.soak_s > 0:
        soak(args.soak_s, args.rate, args.every, args.fleet, args.lags)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
