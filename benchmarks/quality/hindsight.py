"""What any one threshold on the default score could do on SKAB, with the labels: hindsight
bounds for issue #9's SKAB and anomaly-free targets.

The shipped decisions never see labels. This script asks what the *score* allows: it streams
SKAB's 34 leaderboard files and ``anomaly-free.csv`` through the default engine (cold start,
warm-up 400 rows, as ``skab.py`` and ``benchmarks/decisions.py`` do), then, for a few
statistics of the score, chooses thresholds **with the labels** (an oracle):

* ``best at FAR <= 15``: the threshold with the lowest pooled SKAB MAR among those with
  FAR <= 15 %, and what that threshold flags on ``anomaly-free.csv`` (per 100k rows);
* ``anomaly-free at 200``: the threshold that flags 200 per 100k of ``anomaly-free.csv``
  (its target), and the pooled SKAB F1 / FAR / MAR it gives.

Statistics, all causal within a file: the log score less the median of the file's first 100
test rows (scores of different files are on different scales), and its trailing mean over
``w`` rows (temporal evidence in its plainest form). One threshold serves all files, as the
shipped defaults do. If no threshold meets both targets with hindsight, no label-free rule on
this statistic can.

    .venv/bin/python benchmarks/quality/hindsight.py [--windows 1 10 20 40]
"""

from __future__ import annotations

import argparse
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass

import harness
import numpy as np
import numpy.typing as npt
import pandas as pd
from detectors import make_detector
from harness import StreamOutput

from stream_ae.evaluation import classification_metrics

F64 = npt.NDArray[np.float64]
WARMUP = harness.SKAB_TRAIN_ROWS
BASELINE_ROWS = 100  # test rows whose median log score sets a file's origin


@dataclass(frozen=True)
class Rates:
    f1: float
    far: float  # % of normal rows flagged
    mar: float  # % of anomalous rows missed

    def text(self) -> str:
        return f"{self.f1:.3f} / {self.far:.2f} / {self.mar:.2f}"


def rates(y: npt.NDArray[np.int64], flag: npt.NDArray[np.bool_]) -> Rates:
    """Pooled F1, FAR and MAR as SKAB's scorer counts them."""
    m = classification_metrics(y, flag, flag)
    return Rates(m.f1, 100 * m.fp / max(1, m.n - m.positives), 100 * m.fn / max(1, m.positives))


def best_below_far(stat: F64, y: npt.NDArray[np.int64], far_max: float) -> float:
    """The threshold ``t`` (flag ``stat > t``) with the fewest missed anomalies among those
    whose FAR is at most ``far_max`` %: every cut between sorted values, exactly.

    >>> y = np.array([0, 0, 0, 0, 1, 1, 1, 0, 1, 0])
    >>> s = np.array([.1, .2, .3, .9, .5, .8, .7, .4, .6, .0])
    >>> t = best_below_far(s, y, 100 / 6 + 1e-9)  # one false flag of six normal rows allowed
    >>> t, rates(y, s > t).far, rates(y, s > t).mar
    (0.4, 16.666666666666668, 0.0)
    """
    order = np.argsort(-stat, kind="stable")
    s, lab = stat[order], y[order]
    fp = np.cumsum(lab == 0)  # false flags when flagging s[: i + 1]
    ok = 100 * fp / max(1, int((y == 0).sum())) <= far_max
    if not ok.any():
        return float(np.inf)
    # the most flags within the budget: the fewest misses. ``stat > s[i + 1]`` also leaves out
    # the values tied with s[i + 1] before position i, a cut with fewer false flags, and no
    # later cut is within the budget
    i = int(np.flatnonzero(ok)[-1])
    return float(s[i + 1]) if i + 1 < s.size else float(-np.inf)


def statistic(scores: F64, window: int) -> F64:
    """Log score less the median of the first test rows, averaged over trailing ``window``
    rows (causal)."""
    z = np.log(np.maximum(scores, 1e-300))
    z = z - np.median(z[:BASELINE_ROWS])
    return pd.Series(z).rolling(window, min_periods=1).mean().to_numpy()


def stream_free(shared: pathlib.Path) -> StreamOutput:
    src = shared / "datasets" / "skab" / "data" / "anomaly-free" / "anomaly-free.csv"
    frame = pd.read_csv(src, sep=";", index_col="datetime")
    values = frame.to_numpy(dtype=np.float32)
    return make_detector("engine", [], 50).run(values, WARMUP, tuple(frame.columns))


def stream_skab(shared: pathlib.Path
                ) -> tuple[npt.NDArray[np.int64], list[F64], npt.NDArray[np.bool_]]:
    """Each leaderboard file from a cold start (as ``skab.py`` streams it): the pooled test
    labels, each file's test scores, the pooled test flags."""
    ys, scores, flags = [], [], []
    for f in harness.skab_files(shared):
        out = make_detector("engine", [], 50).run(f.values, WARMUP, f.feature_names)
        ys.append(f.labels[WARMUP:])
        scores.append(out.scores[WARMUP:])
        flags.append(out.is_anomaly[WARMUP:])
    return np.concatenate(ys), scores, np.concatenate(flags)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows", type=int, nargs="+", default=[1, 10, 20, 40])
    ap.add_argument("--shared", help="the shared folder (default $STREAM_AE_SHARED or ../shared)")
    a = ap.parse_args(argv)
    shared = harness.shared_dir(a.shared)
    y, scores, flags = stream_skab(shared)
    shipped = rates(y, flags)
    free = stream_free(shared)
    free_scores, free_flags = free.scores[WARMUP:], free.is_anomaly[WARMUP:]
    print(f"SKAB: {len(scores)} files, {y.size:,} test rows; anomaly-free.csv: "
          f"{free_scores.size:,} rows after its warm-up of {WARMUP}")
    print("| rule (one threshold for every file) | labels used | SKAB F1 / FAR / MAR "
          "| anomaly-free flagged per 100k |")
    print("|---|---|---|---:|")
    print(f"| shipped decisions (defaults) | no | {shipped.text()} "
          f"| {1e5 * free_flags.mean():,.0f} |")
    for w in a.windows:
        sk = np.concatenate([statistic(s, w) for s in scores])
        fr = statistic(free_scores, w)
        name = "log score" if w == 1 else f"mean of log score over {w} rows"
        t = best_below_far(sk, y, 15.0)
        print(f"| {name}, best at FAR <= 15 | yes | {rates(y, sk > t).text()} "
              f"| {1e5 * (fr > t).mean():,.0f} |")
        t200 = float(np.sort(fr)[-(int(200e-5 * fr.size) + 1)])  # flags at most 200 per 100k
        print(f"| {name}, anomaly-free at 200 | yes | {rates(y, sk > t200).text()} "
              f"| {1e5 * (fr > t200).mean():,.0f} |")
    print("targets: SKAB >= 0.80 / <= 15 / <= 25; anomaly-free <= 200 per 100k")


if __name__ == "__main__":
    main()
