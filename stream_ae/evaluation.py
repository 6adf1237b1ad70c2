"""Detection quality against labels: precision, recall, F1, ROC-AUC, delay per episode.

Pure numpy. Rows are evaluated only where a label is known (``>= 0``) and the
score is finite; warm-up rows (never flagged by design) are left out by the
callers, which pass a mask.

>>> m = classification_metrics([0, 0, 1, 1], [0, 1, 1, 0], [0.1, 0.6, 0.9, 0.4])
>>> (m.precision, m.recall, m.f1, m.roc_auc)
(0.5, 0.5, 0.5, 0.75)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from stream_ae.records import F64, I64, Bool


@dataclass(frozen=True, slots=True)
class Metrics:
    """Point-wise classification quality; NaN where a ratio is undefined (0/0)."""

    n: int
    positives: int
    flagged: int
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    roc_auc: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class EpisodeDelay:
    """One labelled anomaly episode (a run of consecutive label-1 rows of one group).

    ``start``/``stop`` index the group's rows (``stop`` exclusive); the delays are
    from the episode's first row to its first flagged row, ``None`` when missed.
    """

    group: str
    start: int
    stop: int
    start_time: float
    detected: bool
    delay_records: int | None
    delay_seconds: float | None


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def roc_auc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney U) formula, ties averaged.

    NaN when only one class is present.

    >>> roc_auc([0, 1, 0, 1], [0.2, 0.8, 0.8, 0.9])
    0.875
    >>> roc_auc([0, 0], [0.1, 0.2])
    nan
    """
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    pos = int((y == 1).sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return math.nan
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    avg_rank = np.cumsum(counts) - (counts - 1) / 2.0
    ranks = avg_rank[inverse]
    u = float(ranks[y == 1].sum()) - pos * (pos + 1) / 2.0
    return u / (pos * neg)


def classification_metrics(
    labels: npt.ArrayLike, flags: npt.ArrayLike, scores: npt.ArrayLike
) -> Metrics:
    """Precision, recall and F1 of ``flags`` and ROC-AUC of ``scores`` against 0/1 ``labels``."""
    y = np.asarray(labels, dtype=np.int64) == 1
    f = np.asarray(flags).astype(np.bool_)
    tp, fp, fn = int((y & f).sum()), int((~y & f).sum()), int((y & ~f).sum())
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn) if tp else (0.0 if fp + fn else math.nan)
    return Metrics(
        n=len(y), positives=int(y.sum()), flagged=int(f.sum()), tp=tp, fp=fp, fn=fn,
        precision=precision, recall=recall, f1=f1, roc_auc=roc_auc(y, scores),
    )


def evaluable(labels: I64, scores: F64, warmup: Bool) -> Bool:
    """Rows that count: label known, score finite, past warm-up.

    >>> evaluable(np.array([1, -1, 0, 0]), np.array([1.0, 2.0, np.nan, 3.0]),
    ...           np.array([False, False, False, True])).tolist()
    [True, False, False, False]
    """
    mask: Bool = (labels >= 0) & np.isfinite(scores) & ~warmup
    return mask


def episodes(labels: npt.ArrayLike) -> list[tuple[int, int]]:
    """Runs of consecutive ``1`` labels as ``(start, stop)`` index pairs.

    >>> episodes([0, 1, 1, 0, 1, 0, 0, 1])
    [(1, 3), (4, 5), (7, 8)]
    """
    y = (np.asarray(labels) == 1).astype(np.int8)
    edges = np.diff(np.concatenate(([0], y, [0])))
    starts = np.flatnonzero(edges == 1)
    stops = np.flatnonzero(edges == -1)
    return [(int(a), int(b)) for a, b in zip(starts, stops, strict=True)]


def detection_delays(
    labels: npt.ArrayLike,
    flags: npt.ArrayLike,
    timestamps: npt.ArrayLike | None = None,
    group: str = "",
) -> list[EpisodeDelay]:
    """For each labelled episode of one group (rows in time order), how long until the first flag.

    >>> [(d.detected, d.delay_records, d.delay_seconds) for d in detection_delays(
    ...     [0, 1, 1, 1, 0, 1], [0, 0, 0, 1, 0, 0], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0])]
    [(True, 2, 2.0), (False, None, None)]
    """
    f = np.asarray(flags).astype(np.bool_)
    y = np.asarray(labels)
    ts = np.full(len(y), math.nan) if timestamps is None else np.asarray(timestamps, np.float64)
    out = []
    for start, stop in episodes(y):
        hits = np.flatnonzero(f[start:stop])
        first = int(hits[0]) if len(hits) else None
        seconds = None
        if first is not None and math.isfinite(ts[start]):
            seconds = float(ts[start + first] - ts[start])
        out.append(EpisodeDelay(group, start, stop, float(ts[start]), first is not None,
                                first, seconds))
    return out


def delays_by_group(
    groups: Sequence[str], labels: I64, flags: Bool, timestamps: F64
) -> list[EpisodeDelay]:
    """``detection_delays`` for each group (key or partition) of interleaved rows.

    >>> d = delays_by_group(["a", "b", "a", "b"], np.array([1, 0, 1, 1]),
    ...                     np.array([False, False, True, True]), np.arange(4.0))
    >>> [(x.group, x.delay_records) for x in d]
    [('a', 1), ('b', 0)]
    """
    # one vectorised pass: codes in order of first appearance, rows of a group in stream order
    codes, names = pd.factorize(np.asarray(groups, dtype=object))
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    out: list[EpisodeDelay] = []
    for j, name in enumerate(names):
        idx = order[bounds[j] : bounds[j + 1]]
        out.extend(detection_delays(labels[idx], flags[idx], timestamps[idx], group=str(name)))
    return out


def delay_summary(delays: Sequence[EpisodeDelay]) -> dict[str, float]:
    """Episodes, share detected and median delay (records, seconds) over detected ones.

    >>> delay_summary([EpisodeDelay("", 0, 2, 0.0, True, 1, 1.0),
    ...                EpisodeDelay("", 5, 6, 5.0, False, None, None)])
    {'episodes': 2, 'detected': 1, 'detected_fraction': 0.5, 'median_delay_records': 1.0, \
'median_delay_seconds': 1.0}
    """
    hit = [d for d in delays if d.detected]
    recs = [d.delay_records for d in hit if d.delay_records is not None]
    secs = [d.delay_seconds for d in hit if d.delay_seconds is not None]
    return {
        "episodes": len(delays),
        "detected": len(hit),
        "detected_fraction": _ratio(len(hit), len(delays)),
        "median_delay_records": float(np.median(recs)) if recs else math.nan,
        "median_delay_seconds": float(np.median(secs)) if secs else math.nan,
    }
