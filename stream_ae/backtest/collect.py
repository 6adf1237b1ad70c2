"""What a backtest remembers of its rows: the frame for metrics and the report, the top
alerts, drift marks and bad rows; and the summary it ends with."""

from __future__ import annotations

import heapq
import math
import pathlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import structlog

from stream_ae.evaluation import (
    EpisodeDelay,
    Metrics,
    classification_metrics,
    delay_summary,
    delays_by_group,
    evaluable,
)
from stream_ae.records import StepResult
from stream_ae.report import BadRow, DriftMark, ReportData, TopAlert, write_reports
from stream_ae.types import F64, I64, Bool

log = structlog.get_logger()

TOP_ALERTS = 20
MAX_BAD_ROWS_SHOWN = 200


@dataclass(frozen=True)
class BacktestSummary:
    """What a backtest produced: counts, quality and the files written."""

    records: int
    scored: int
    alerts: int
    bad_rows: int
    drift_events: int
    elapsed_s: float
    predictions: pathlib.Path
    html: pathlib.Path | None = None
    png: pathlib.Path | None = None
    metrics: Metrics | None = None
    delay: Mapping[str, float] = field(default_factory=dict)
    bad_examples: tuple[BadRow, ...] = ()

    @property
    def records_per_s(self) -> float:
        return self.records / self.elapsed_s if self.elapsed_s > 0 else math.nan


class ResultCollector:
    """Accumulates per-row results of one backtest for metrics and the report.

    Parameters
    ----------
    feature_names
        The model inputs named in ``StepResult.feature_errors``.
    top_k
        How many of the most exceeding alerts keep their per-feature errors.
    row_name
        What the row numbers are: ``line`` (files) or ``offset`` (topics).

    Examples
    --------
    >>> c = ResultCollector(("x",))
    >>> c.add_rows(["a"], np.array([0.0]), np.array([2.0]), np.array([1.0]),
    ...            np.array([True]), np.array([False]), np.array([1]), np.array([7]))
    >>> c.frame()[["group", "score", "is_anomaly", "label"]].values.tolist()
    [['a', 2.0, True, 1]]
    """

    def __init__(self, feature_names: Sequence[str], top_k: int = TOP_ALERTS,
                 row_name: str = "row") -> None:
        self.feature_names = tuple(feature_names)
        self.top_k = top_k
        self.row_name = row_name
        self._cols: dict[str, list[Any]] = {k: [] for k in
                                            ("group", "time", "score", "threshold",
                                             "is_anomaly", "warmup", "label", "row")}
        self._groups: dict[str, int] = {}
        self._top: list[tuple[float, int, TopAlert]] = []
        self._drift: list[DriftMark] = []
        self._bad: list[BadRow] = []
        self._unread = 0  # bad rows that never reached the engine (not in the frame)
        self._rejected = 0  # rows the engine rejected (in the frame, NaN score)

    def add_rows(self, groups: Sequence[str], times: F64, scores: F64, thresholds: F64,
                 flags: Bool, warmup: Bool, labels: I64, rows: I64) -> None:
        """Append rows (NaN score: not scored)."""
        for name, values in zip(self._cols, (self._codes(groups), times, scores, thresholds,
                                             flags, warmup, labels, rows), strict=True):
            self._cols[name].append(np.asarray(values))

    def _codes(self, groups: Sequence[str]) -> I64:
        """Groups as codes into one list of distinct names: memory per row stays 8 bytes
        whatever the key length (pandas text columns copy every row's string)."""
        index = self._groups
        return np.fromiter((index.setdefault(g, len(index)) for g in groups), np.int64,
                           len(groups))

    def add_step(self, groups: Sequence[str], times: F64, labels: I64 | None, rows: I64,
                 res: StepResult) -> None:
        """Append the rows of one engine step and remember its top alerts and drift events."""
        lab = labels if labels is not None else np.full(len(res), -1, np.int64)
        self.add_rows(groups, times, res.scores, res.thresholds, res.is_anomaly, res.warmup,
                      lab, rows)
        for i in map(int, np.flatnonzero(res.is_anomaly)):
            self._offer_alert(groups[i], float(times[i]), int(rows[i]), res, i)
        for e in res.drift_events:
            j = min(e.batch_index, len(res) - 1)
            self._drift.append(DriftMark(groups[j], float(times[j]), int(rows[j]), e.kind,
                                         e.detector, e.action))
            log.debug("backtest_drift", group=groups[j], row=int(rows[j]), kind=e.kind,
                     detector=e.detector, action=e.action)

    def _offer_alert(self, group: str, t: float, row: int, res: StepResult, i: int) -> None:
        ratio = float(res.scores[i] / res.thresholds[i]) if res.thresholds[i] > 0 else math.inf
        if len(self._top) >= self.top_k and ratio <= self._top[0][0]:
            return
        contrib = tuple(res.top_features(i, k=len(res.feature_names)))
        alert = TopAlert(group, t, row, float(res.scores[i]), float(res.thresholds[i]), contrib)
        item = (ratio, row, alert)
        if len(self._top) < self.top_k:
            heapq.heappush(self._top, item)
        else:
            heapq.heapreplace(self._top, item)

    def add_bad(self, bad: Sequence[BadRow], rejected: bool = False) -> None:
        """Count bad rows (``rejected``: by the engine, so also in the frame); keep the first
        ``MAX_BAD_ROWS_SHOWN`` for the report."""
        if rejected:
            self._rejected += len(bad)
        else:
            self._unread += len(bad)
        room = MAX_BAD_ROWS_SHOWN - len(self._bad)
        if room > 0:
            self._bad.extend(bad[:room])

    @property
    def bad_count(self) -> int:
        return self._unread + self._rejected

    @property
    def records(self) -> int:
        """Input rows seen: scored or rejected rows plus rows that could not be read."""
        return sum(len(r) for r in self._cols["row"]) + self._unread

    @property
    def bad_rows(self) -> tuple[BadRow, ...]:
        return tuple(self._bad)

    def frame(self) -> pd.DataFrame:
        """Every row so far in the report layout (plus ``row``: line or offset)."""
        cols: dict[str, Any] = {k: (np.concatenate(v) if v else np.array([], np.int64))
                                for k, v in self._cols.items()}
        # categorical over an object index: one string per distinct group, shared by its rows
        names = pd.Index(list(self._groups), dtype=object)
        cols["group"] = pd.Categorical.from_codes(cols["group"], categories=names)
        frame = pd.DataFrame(cols)
        frame["is_anomaly"] = frame["is_anomaly"].astype(bool)
        frame["warmup"] = frame["warmup"].astype(bool)
        frame["label"] = frame["label"].astype(np.int64)
        return frame

    def report_data(self, title: str, facts: Mapping[str, Any], frame: pd.DataFrame,
                    metrics: Metrics | None, delays: Sequence[EpisodeDelay]) -> ReportData:
        """Everything the report draws (``frame``, ``metrics``, ``delays``: already computed
        from :meth:`frame` with :func:`evaluate_frame`)."""
        return ReportData(
            title=title, frame=frame, feature_names=self.feature_names,
            top_alerts=[a for _, _, a in sorted(self._top, key=lambda x: -x[0])],
            drift=tuple(self._drift), bad_rows=self.bad_rows, bad_row_count=self.bad_count,
            metrics=None if metrics is None else {**metrics.as_dict(), **delay_summary(delays)},
            delays=delays, facts=facts, row_name=self.row_name,
        )


def evaluate_frame(frame: pd.DataFrame) -> tuple[Metrics | None, list[EpisodeDelay]]:
    """Metrics over labelled, scored rows after warm-up; delays per group (None without labels)."""
    labels = frame["label"].to_numpy(np.int64)
    if not (labels >= 0).any():
        return None, []
    scores = frame["score"].to_numpy(np.float64)
    warm = frame["warmup"].to_numpy(np.bool_)
    flags = frame["is_anomaly"].to_numpy(np.bool_)
    mask = evaluable(labels, scores, warm)
    metrics = classification_metrics(labels[mask], flags[mask], scores[mask])
    counted = np.where(mask, labels, -1)
    delays = delays_by_group(frame["group"].tolist(), counted, flags,
                             frame["time"].to_numpy(np.float64))
    return metrics, delays


def rejected_rows(rows: I64, res: StepResult) -> list[BadRow]:
    """Rows the engine's feature stage rejected, as bad rows numbered by ``rows`` (lines or
    offsets)."""
    return [BadRow(int(rows[r]), f"rejected:{reason}", "") for r, reason in res.rejected]


def finish(collector: ResultCollector, output: pathlib.Path, title: str,
           facts: Mapping[str, Any], started: float, report: bool = True) -> BacktestSummary:
    """Compute metrics, write the PNG and HTML beside ``output`` (when ``report``) and
    summarise."""
    frame = collector.frame()
    elapsed = time.perf_counter() - started
    scored = int(np.isfinite(frame["score"].to_numpy(np.float64)).sum())
    records = collector.records
    alerts = int(frame["is_anomaly"].sum())
    all_facts = {**facts, "records": records, "scored": scored,
                 "alerts": alerts, "bad rows": collector.bad_count,
                 "warm-up rows": int(frame["warmup"].sum()), "elapsed s": round(elapsed, 2)}
    metrics, delays = evaluate_frame(frame)
    data = collector.report_data(title, all_facts, frame, metrics, delays)
    png = html_path = None
    if report:
        png, html_path = output.with_suffix(".png"), output.with_suffix(".html")
        write_reports(data, png, html_path)
    summary = BacktestSummary(
        records=records, scored=scored, alerts=alerts,
        bad_rows=collector.bad_count, drift_events=len(data.drift), elapsed_s=elapsed,
        predictions=output, html=html_path, png=png, metrics=metrics,
        delay=delay_summary(delays) if metrics is not None else {},
        bad_examples=collector.bad_rows[:10],
    )
    log.info("backtest_finished", records=records, alerts=summary.alerts,
             bad_rows=summary.bad_rows, elapsed_s=round(elapsed, 2), predictions=str(output),
             report=str(html_path) if html_path else None)
    return summary
