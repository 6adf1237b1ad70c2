"""Engine throughput (records/s) on synthetic correlated Gaussian streams, beside river.

For each dimension (8 and 38) the engine runs over ``--n`` records fed in
batches of ``--batch`` rows, one torch thread, for the default settings and a
few (stride, window, batch_size) choices. Two rates are printed:

* ``total``: every record, warm-up epochs included (a one-time cost per engine);
* ``steady``: the records after warm-up only (the service's long-run rate).

Process start-up (importing torch, torch's first optimizer construction) is
excluded: the engine is built on a tiny batch before the clock starts. The peer
is river ``anomaly.HalfSpaceTrees`` (default parameters; per record: a dict from
the numpy row, ``score_one``, ``learn_one``; the stream is min-max scaled to
[0, 1] beforehand, outside the clock) on the first ``--river-n`` records; its rate
is extrapolated to the whole stream (river's per-record cost is flat).
Machines are noisy: every row is the median of ``--repeats`` interleaved runs,
and the ratio ``x river`` uses the total (warm-up included) rate; ``rec/CPU-s`` and
``x river CPU`` use the process's CPU time over the same span instead of wall time (less
sensitive to other jobs on a shared machine).

    .venv/bin/python benchmarks/engine_throughput.py [--n 200000] [--river-n 20000]
"""

from __future__ import annotations

import argparse
import gc
import time

import numpy as np
import structlog
import torch

from stream_ae.config import EngineConfig, TrainingConfig
from stream_ae.engine import Engine
from stream_ae.records import Batch

VARIANTS: list[tuple[str, dict[str, int | str]]] = [
    ("default (1024/4096/2048)", {}),
    ("default + warmup_fit pca", {"warmup_fit": "pca"}),
    ("stride 512, window 2048, bs 1024", {"stride": 512, "window": 2048, "batch_size": 1024}),
    ("stride 256", {"stride": 256}),
    ("batch 4096 (whole window)", {"batch_size": 4096}),
]


def correlated(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return (rng.normal(size=(n, d)) @ mix).astype(np.float32)


def time_engine(x: np.ndarray, training: dict[str, int | str], batch: int
                ) -> tuple[float, float, float]:
    cfg = EngineConfig(training=TrainingConfig(**training))
    eng = Engine(cfg, [f"f{i}" for i in range(x.shape[1])])
    eng.step(Batch.from_arrays(x[:1]))  # builds the model outside the clock
    gc.collect()
    gc.freeze()
    t0, c0 = time.perf_counter(), time.process_time()
    t_warm, done_warm = t0, 1
    for start in range(1, x.shape[0], batch):
        eng.step(Batch.from_arrays(x[start : start + batch]))
        if done_warm == 1 and eng.records_seen >= cfg.training.warmup:
            t_warm, done_warm = time.perf_counter(), eng.records_seen
    t1, c1 = time.perf_counter(), time.process_time()
    gc.unfreeze()
    return ((x.shape[0] - 1) / (t1 - t0), (x.shape[0] - done_warm) / (t1 - t_warm),
            (x.shape[0] - 1) / (c1 - c0))


def time_river(x: np.ndarray) -> tuple[float, float]:
    from river import anomaly

    lo, hi = x.min(axis=0), x.max(axis=0)
    scaled = (x - lo) / np.maximum(hi - lo, 1e-9)
    names = [f"f{i}" for i in range(x.shape[1])]
    hst = anomaly.HalfSpaceTrees(seed=0)
    t0, c0 = time.perf_counter(), time.process_time()
    for row in scaled.tolist():  # from the same numpy array the engine starts from
        r = dict(zip(names, row, strict=True))
        hst.score_one(r)
        hst.learn_one(r)
    return (scaled.shape[0] / (time.perf_counter() - t0),
            scaled.shape[0] / (time.process_time() - c0))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--river-n", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--dims", type=int, nargs="+", default=[8, 38])
    p.add_argument("--repeats", type=int, default=3, help="interleaved runs; medians shown")
    args = p.parse_args()
    torch.set_num_threads(1)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    print(f"n={args.n} batch={args.batch} torch threads={torch.get_num_threads()} "
          f"(river HST on {args.river_n} records, extrapolated); "
          f"median of {args.repeats} interleaved runs")
    print(f"{'dim':>4}  {'variant (stride/window/batch)':<34}{'total rec/s':>13}"
          f"{'steady rec/s':>14}{'x river':>9}{'rec/CPU-s':>11}{'x river CPU':>13}")
    for d in args.dims:
        x = correlated(args.n, d)
        runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _ in VARIANTS}
        river_runs: list[tuple[float, float]] = []
        for _ in range(args.repeats):  # interleaved, so load changes hit every row alike
            river_runs.append(time_river(x[: args.river_n]))
            for name, training in VARIANTS:
                runs[name].append(time_engine(x, training, args.batch))
        river_rate = float(np.median([r for r, _ in river_runs]))
        river_cpu = float(np.median([c for _, c in river_runs]))
        for name, _ in VARIANTS:
            total = float(np.median([t for t, _, _ in runs[name]]))
            steady = float(np.median([s for _, s, _ in runs[name]]))
            cpu = float(np.median([c for _, _, c in runs[name]]))
            print(f"{d:>4}  {name:<34}{total:>13,.0f}{steady:>14,.0f}{total / river_rate:>9.1f}"
                  f"{cpu:>11,.0f}{cpu / river_cpu:>13.1f}")
        print(f"{d:>4}  {'river HalfSpaceTrees':<34}{river_rate:>13,.0f}{'':>14}{1.0:>9.1f}"
              f"{river_cpu:>11,.0f}{1.0:>13.1f}")


if __name__ == "__main__":
    main()
