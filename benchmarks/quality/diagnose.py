"""Where SKAB errors come from: per file, false alarms before / after the anomalous
episode and missed rows before the first alarm (detection delay) / after it.

    python benchmarks/quality/diagnose.py [--subset valve1] [--set KEY=VALUE ...]

Uses the labels only to attribute errors after the fact (diagnosis, not tuning).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import harness
import numpy as np
import numpy.typing as npt
from detectors import EngineDetector, parse_overrides
from run_all import DATASET_OPTIONS

COLUMNS = ("fp_before", "fp_after", "fn_delay", "fn_later", "tp", "delay_rows")


def attribute(y: npt.NDArray[np.int64], p: npt.NDArray[np.bool_]) -> dict[str, int]:
    """Split the errors of one test segment around its anomalous episode.

    >>> y = np.array([0, 0, 1, 1, 1, 1, 0, 0])
    >>> p = np.array([1, 0, 0, 1, 0, 1, 0, 1], bool)
    >>> attribute(y, p)
    {'fp_before': 1, 'fp_after': 1, 'fn_delay': 1, 'fn_later': 1, 'tp': 2, 'delay_rows': 1}
    """
    pos = np.flatnonzero(y == 1)
    first, last = (int(pos[0]), int(pos[-1]) + 1) if pos.size else (len(y), len(y))
    hit = np.flatnonzero(p[first:last])
    delay = int(hit[0]) if hit.size else last - first
    inside = p[first:last]
    return {
        "fp_before": int(p[:first].sum()), "fp_after": int(p[last:].sum()),
        "fn_delay": delay, "fn_later": int((~inside).sum()) - delay,
        "tp": int(inside.sum()), "delay_rows": delay,
    }


def main(argv: Sequence[str] | None = None) -> None:
    from stream_ae.logs import configure_logging

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subset", action="append", default=[])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--shared")
    a = ap.parse_args(argv)
    configure_logging("console", "warning")
    det = EngineDetector(overrides={**DATASET_OPTIONS["skab"], **parse_overrides(a.set)})
    total = dict.fromkeys(COLUMNS, 0)
    print(f"{'file':<15}" + "".join(f"{c:>11}" for c in COLUMNS))
    for f in harness.skab_files(harness.shared_dir(a.shared), a.subset):
        out = det.run(f.values, harness.SKAB_TRAIN_ROWS, f.feature_names)
        row = attribute(f.labels[harness.SKAB_TRAIN_ROWS:],
                        out.is_anomaly[harness.SKAB_TRAIN_ROWS:])
        total = {k: total[k] + row[k] for k in COLUMNS}
        print(f"{f.rel:<15}" + "".join(f"{row[c]:>11}" for c in COLUMNS))
    print(f"{'total':<15}" + "".join(f"{total[c]:>11}" for c in COLUMNS))


if __name__ == "__main__":
    main()
