"""SKAB outlier-detection protocol: stream each labelled file through a detector.

Per file, from a cold start: the first 400 rows are the warm-up (the only
training data the protocol grants; never flagged), the rest is the test part,
streamed in order, scored before anything is learned from it. Predictions for
all rows go to ``OUT/<folder>/<n>.csv`` in the external format of
``../shared/eval/skab_eval.py``, which then scores them (pooled F1/FAR/MAR).

    python benchmarks/quality/skab.py                      # stream_ae defaults
    python benchmarks/quality/skab.py --set training.gate=none --subset valve1
    python benchmarks/quality/skab.py --detector hst --per-file
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import harness
import structlog
from detectors import make_detector
from harness import SkabFile, StreamDetector

log = structlog.get_logger()

LEADERBOARD = {  # SKAB README "Outlier detection problem": F1, FAR %, MAR %, causal?
    "Conv-AE": (0.78, 13.55, 28.02, "no (looks ahead)"),
    "MSET": (0.78, 39.73, 14.13, "no (centred smoothing)"),
    "T-squared+Q (PCA-based)": (0.76, 26.62, 24.92, "yes"),
    "LSTM-AE": (0.74, 29.96, 25.92, "no (looks ahead)"),
    "T-squared": (0.66, 19.21, 42.60, "yes"),
    "Vanilla AE": (0.39, 2.59, 75.15, "yes"),
    "Isolation forest": (0.29, 2.56, 82.89, "yes"),
    "all rows flagged": (0.70, 100.0, 0.0, "yes"),
}
TARGET = (0.80, 15.0, 25.0)


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _run_one(detector: StreamDetector, f: SkabFile, out_dir: pathlib.Path) -> str:
    out = detector.run(f.values, harness.SKAB_TRAIN_ROWS, f.feature_names)
    harness.write_skab_prediction(out_dir, f, out)
    return f.rel


def run_skab(detector: StreamDetector, shared: pathlib.Path, out_dir: pathlib.Path,
             subset: Sequence[str] = (), jobs: int = 1, per_file: bool = False) -> dict[str, Any]:
    """Stream every (or every ``subset``) file, write predictions, return the scorer's result."""
    files = harness.skab_files(shared, subset)
    if jobs > 1:
        with ProcessPoolExecutor(jobs, initializer=_init_worker) as pool:
            list(pool.map(_run_one, [detector] * len(files), files, [out_dir] * len(files)))
    else:
        _init_worker()
        for f in files:
            _run_one(detector, f, out_dir)
    log.info("skab_streamed", detector=detector.name, files=len(files), out=str(out_dir))
    return harness.score_skab(shared, out_dir, allow_missing=bool(subset), per_file=per_file)


def summary_row(res: dict[str, Any]) -> tuple[float, float, float]:
    lb = res["leaderboard"]
    return (lb["F1"], lb["FAR"], lb["MAR"])


def meets_target(row: tuple[float, float, float]) -> bool:
    return row[0] >= TARGET[0] and row[1] <= TARGET[1] and row[2] <= TARGET[2]


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detector", choices=["engine", "hst"], default="engine")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="EngineConfig override, dotted (repeatable)")
    ap.add_argument("--subset", action="append", default=[],
                    help="only these folders (valve1, valve2, other); not leaderboard-comparable")
    ap.add_argument("--chunk", type=int, default=50, help="rows per Engine.step call")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (at most 2 here)")
    ap.add_argument("--out", help="prediction folder (default: a temporary one)")
    ap.add_argument("--shared", help="the shared folder (default $STREAM_AE_SHARED or ../shared)")
    ap.add_argument("--per-file", action="store_true")
    a = ap.parse_args(argv)
    shared = harness.shared_dir(a.shared)
    detector = make_detector(a.detector, a.set, a.chunk)
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(a.out or tmp)
        res = run_skab(detector, shared, out, a.subset, a.jobs, a.per_file)
    print(res["text"], end="")


if __name__ == "__main__":
    main()
