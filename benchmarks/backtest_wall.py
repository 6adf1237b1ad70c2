"""``stream-ae backtest`` wall time, process start to exit, beside river in the same run.

Writes a 200,000 x 8 Parquet file (correlated Gaussian readings of 8 devices, 0.5 %
labelled spikes; ``--rows``/``--features`` change it), then times, as separate processes
started one after the other (interleaved, ``--repeats`` times, medians shown):

* ``stream-ae backtest FILE -o pred.csv`` with the default settings: predictions, metrics,
  PNG and HTML report, exactly what a user runs (``python -m stream_ae.cli``);
* the same with ``-o pred.parquet``;
* river ``HalfSpaceTrees`` (default parameters) scoring then learning every record of the
  same file in one process: read it with pyarrow, min-max scale it, ``score_one`` +
  ``learn_one`` per record, write the scores as CSV.

Both are timed from process start to exit (interpreter start and imports included), in
wall seconds and in CPU seconds of the process (user + system, all threads: less
sensitive to other load on a shared machine). Machines are shared and noisy: compare the
ratios measured in one run.

    .venv/bin/python benchmarks/backtest_wall.py [--rows 200000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

RIVER = """
import sys
import numpy as np, pyarrow as pa, pyarrow.csv as pcsv, pyarrow.parquet as pq
from river import anomaly
table = pq.read_table(sys.argv[1])
names = [c for c in table.column_names if c.startswith("f")]
x = np.column_stack([table[c].to_numpy() for c in names])
lo, hi = x.min(axis=0), x.max(axis=0)
rows = ((x - lo) / np.maximum(hi - lo, 1e-9)).tolist()
hst = anomaly.HalfSpaceTrees(seed=0)
scores = np.empty(len(rows))
for i, row in enumerate(rows):
    r = dict(zip(names, row))
    scores[i] = hst.score_one(r)
    hst.learn_one(r)
pcsv.write_csv(pa.table({"score": scores}), sys.argv[2])
"""


def make_file(path: pathlib.Path, rows: int, features: int, seed: int = 0) -> None:
    import pandas as pd

    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(features, features)) / np.sqrt(features)
    x = rng.normal(size=(rows, features)) @ mix
    label = rng.random(rows) < 0.005
    x[label] += 6.0
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(features)])
    frame.insert(0, "ts", 1.7e9 + np.arange(rows, dtype=np.float64))
    frame.insert(1, "key", [f"dev-{i % 8}" for i in range(rows)])
    frame["label"] = label.astype(np.int64)
    frame.to_parquet(path, index=False)


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system, all threads) of one child process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--features", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--input", type=pathlib.Path, default=None, help="use this file instead")
    args = ap.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="stream-ae-backtest-"))
    src = args.input or tmp / "big.parquet"
    if args.input is None:
        make_file(src, args.rows, args.features)
    py = sys.executable
    runs: dict[str, list[tuple[float, float]]] = {
        "stream-ae backtest -o pred.csv (defaults, reports)": [],
        "stream-ae backtest -o pred.parquet": [],
        "river HalfSpaceTrees, one process": [],
    }
    cmds = [
        [py, "-m", "stream_ae.cli", "backtest", str(src), "-o", str(tmp / "pred.csv"),
         "--no-progress"],
        [py, "-m", "stream_ae.cli", "backtest", str(src), "-o", str(tmp / "pred.parquet"),
         "--no-progress"],
        [py, "-c", RIVER, str(src), str(tmp / "river.csv")],
    ]
    print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores are shared: compare ratios)")
    for _ in range(args.repeats):  # interleaved: load changes hit every row alike
        for name, cmd in zip(runs, cmds, strict=True):
            runs[name].append(timed(cmd))
    rows = args.rows if args.input is None else _rows(src)
    peer = runs["river HalfSpaceTrees, one process"]
    river = float(np.median([w for w, _ in peer]))
    river_cpu = float(np.median([c for _, c in peer]))
    print(f"| {rows:,} rows, process start to exit | wall s (median of {args.repeats}) "
          "| rec/s | x river (wall) | CPU s | x river (CPU) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, times in runs.items():
        wall = float(np.median([w for w, _ in times]))
        cpu = float(np.median([c for _, c in times]))
        print(f"| {name} | {wall:.2f} | {rows / wall:,.0f} | {river / wall:.2f} | {cpu:.2f} "
              f"| {river_cpu / cpu:.2f} |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def _rows(path: pathlib.Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)


if __name__ == "__main__":
    main()
