"""Backtest reports: a PNG overview and a self-contained HTML page (plots inlined as base64).

File and topic backtests fill the same :class:`ReportData`; this module only draws.
Plots: score and threshold over time per group (partition or key) with flags and
shaded labelled episodes, the alert timeline with drift events, the score
histogram, and the per-feature error shares of the top alerts.

>>> import pandas as pd, numpy as np
>>> frame = pd.DataFrame({"group": ["a"] * 4, "time": np.arange(4.0),
...                       "score": [1.0, 1.0, 5.0, 1.0], "threshold": [2.0] * 4,
...                       "is_anomaly": [False, False, True, False],
...                       "warmup": [True, False, False, False], "label": [-1, 0, 1, 0]})
>>> data = ReportData(title="t", frame=frame, feature_names=("x",))
>>> "<html" in render_html(data)
True
"""

from __future__ import annotations

import base64
import functools
import html
import io
import math
import pathlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from stream_ae.evaluation import EpisodeDelay, episodes

MAX_GROUP_PLOTS = 12
MAX_POINTS = 20_000
REPORT_COLUMNS = ("group", "time", "score", "threshold", "is_anomaly", "warmup", "label")


@dataclass(frozen=True, slots=True)
class BadRow:
    """An input row that was not scored: where it is (line or offset) and why."""

    line: int
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class TopAlert:
    """One of the highest-scoring alerts with its per-feature squared errors."""

    group: str
    time: float
    row: int
    score: float
    threshold: float
    contributions: tuple[tuple[str, float], ...]


@dataclass(frozen=True, slots=True)
class DriftMark:
    """A drift or regime-change event placed on the report's time axis."""

    group: str
    time: float
    row: int
    kind: str
    detector: str
    action: str


@dataclass(frozen=True)
class ReportData:
    """Everything a report shows.

    ``frame`` has the columns in :data:`REPORT_COLUMNS`: ``group`` (str), ``time``
    (epoch seconds, NaN when unknown), ``score``/``threshold`` (NaN for rejected rows),
    ``is_anomaly``/``warmup`` (bool) and ``label`` (-1 when unknown).
    """

    title: str
    frame: pd.DataFrame
    feature_names: tuple[str, ...]
    top_alerts: Sequence[TopAlert] = ()
    drift: Sequence[DriftMark] = ()
    bad_rows: Sequence[BadRow] = ()
    bad_row_count: int = 0
    metrics: Mapping[str, Any] | None = None
    delays: Sequence[EpisodeDelay] = ()
    facts: Mapping[str, Any] = field(default_factory=dict)
    row_name: str = "row"  # what ``row`` numbers are: "line" (files) or "offset" (topics)

    # cached: the frame is fixed, and plots and tables ask for these per group and per mark
    @functools.cached_property
    def has_time(self) -> bool:
        return bool(np.isfinite(self.frame["time"].to_numpy(np.float64)).any())

    @functools.cached_property
    def _groups(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.frame["group"].tolist()))

    def groups(self) -> list[str]:
        """Groups in order of first appearance."""
        return list(self._groups)


# --------------------------------------------------------------------------- axes
# Figures are made with matplotlib.figure.Figure, never pyplot: no global state and no GUI
# backend, so reports render the same headless, in threads and in tests.
def _x(data: ReportData, frame: pd.DataFrame) -> np.ndarray:
    if data.has_time:
        return pd.to_datetime(frame["time"], unit="s").to_numpy()
    return frame.index.to_numpy()


def _margins(fig: Figure, left: float, top_in: float = 0.35) -> None:
    """Fixed margins (inches at the top and bottom): ``tight_layout`` cost seconds per report."""
    height = fig.get_figheight()
    fig.subplots_adjust(left=left, right=0.98, top=1 - top_in / height, bottom=0.5 / height,
                        hspace=0.9 / max(height / 3.0, 1.0))


def _mark_x(data: ReportData, d: DriftMark) -> Any:
    return pd.to_datetime(d.time, unit="s") if data.has_time else d.row


def _thin(frame: pd.DataFrame) -> pd.DataFrame:
    """At most ``MAX_POINTS`` evenly spaced rows for line plots (flags are drawn separately)."""
    if len(frame) <= MAX_POINTS:
        return frame
    return frame.iloc[:: math.ceil(len(frame) / MAX_POINTS)]


def _shade_labels(ax: Axes, data: ReportData, frame: pd.DataFrame) -> None:
    x = _x(data, frame)
    for start, stop in episodes(frame["label"].to_numpy()):
        # up to the next reading, so that a one-record episode is visible too
        ax.axvspan(x[start], x[min(stop, len(x) - 1)], color="tab:orange", alpha=0.3, lw=0)


def plot_group(ax: Axes, data: ReportData, group: str) -> None:
    """Score, threshold, flags, labelled episodes and drift events of one group."""
    frame = data.frame[data.frame["group"] == group].reset_index(drop=True)
    thin = _thin(frame)
    x_thin = _x(data, thin)
    ax.plot(x_thin, thin["score"], lw=0.6, color="tab:blue", label="score")
    ax.plot(x_thin, thin["threshold"], lw=1.0, color="black", label="threshold")
    flagged = frame[frame["is_anomaly"]]
    ax.scatter(_x(data, flagged), flagged["score"], s=8, color="tab:red", zorder=3, label="alert")
    _shade_labels(ax, data, frame)
    for d in data.drift:
        if d.group == group:
            ax.axvline(_mark_x(data, d), color="tab:purple", ls="--", lw=1.0)
    positive = frame["score"].to_numpy(np.float64)
    if np.nanmin(positive, initial=np.inf) > 0:
        ax.set_yscale("log")
    ax.set_title(f"{group or 'all records'}", fontsize=9)
    ax.set_ylabel("score")


def overview_figure(data: ReportData, groups: Sequence[str]) -> Figure:
    """One panel per group (score and threshold over time)."""
    fig = Figure(figsize=(11, 2.6 * len(groups) + 0.6))
    axes = fig.subplots(len(groups), 1, squeeze=False, sharex=data.has_time)
    for ax, group in zip(axes[:, 0], groups, strict=True):
        plot_group(ax, data, group)
    axes[0, 0].legend(loc="upper left", fontsize=8, ncols=3)
    fig.suptitle(data.title, fontsize=11)
    _margins(fig, left=0.07, top_in=0.75)
    return fig


def timeline_figure(data: ReportData) -> Figure:
    """Alerts (dots) and drift events (diamonds) per group over time."""
    groups = data.groups()
    fig = Figure(figsize=(11, 0.35 * len(groups) + 1.6))
    ax = fig.subplots()
    pos = {g: i for i, g in enumerate(groups)}
    flagged = data.frame[data.frame["is_anomaly"]]
    ax.scatter(_x(data, flagged), flagged["group"].map(pos), s=6, color="tab:red", label="alert")
    if data.drift:
        xs = [_mark_x(data, d) for d in data.drift]
        ax.scatter(xs, [pos.get(d.group, 0) for d in data.drift], marker="D", s=40,
                   color="tab:purple", label="drift / regime change")
    ax.set_yticks(range(len(groups)), [g or "all" for g in groups], fontsize=7)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("alert timeline")
    _margins(fig, left=0.12)
    return fig


def histogram_figure(data: ReportData) -> Figure:
    """Scores after warm-up on a log axis, split by label when labels exist."""
    fig = Figure(figsize=(7, 3.2))
    ax = fig.subplots()
    frame = data.frame[~data.frame["warmup"] & np.isfinite(data.frame["score"])]
    scores = frame["score"].clip(lower=1e-12)
    bins: Any = 10
    if len(scores):
        bins = np.logspace(np.log10(scores.min()), np.log10(scores.max()) + 1e-9, 60)
    labels = frame["label"]
    for name, mask, color in (("normal", labels == 0, "tab:blue"), ("labelled anomaly",
                              labels == 1, "tab:orange"), ("unlabelled", labels < 0, "tab:gray")):
        if mask.any():
            ax.hist(scores[mask], bins=bins, alpha=0.6, color=color, label=name)
    if len(frame):
        ax.axvline(float(frame["threshold"].median()), color="black", lw=1,
                   label="median threshold")
    if len(frame):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    ax.set_title("score histogram (after warm-up)")
    _margins(fig, left=0.1)
    return fig


def contributions_figure(data: ReportData) -> Figure:
    """Share of each feature in the squared reconstruction error of the top alerts."""
    alerts = list(data.top_alerts)
    fig = Figure(figsize=(10, 0.32 * len(alerts) + 1.4))
    ax = fig.subplots()
    names = sorted({n for a in alerts for n, _ in a.contributions})
    share = np.zeros((len(alerts), len(names)))
    for i, a in enumerate(alerts):
        total = sum(v for _, v in a.contributions) or 1.0
        for n, v in a.contributions:
            share[i, names.index(n)] = v / total
    left = np.zeros(len(alerts))
    cmap = mpl.colormaps["tab20"]
    for j, name in enumerate(names):
        ax.barh(range(len(alerts)), share[:, j], left=left, color=cmap(j % 20), label=name)
        left += share[:, j]
    names_y = [f"{a.group or '-'} {data.row_name} {a.row}" for a in alerts]
    ax.set_yticks(range(len(alerts)), names_y, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("share of squared error")
    ax.legend(fontsize=7, ncols=min(len(names), 6), loc="lower right")
    ax.set_title("per-feature contribution of the top alerts")
    _margins(fig, left=0.18)
    return fig


# --------------------------------------------------------------------------- outputs
def _png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def _top_groups(data: ReportData) -> list[str]:
    """Groups to draw: all, by name, or those with the most alerts, at most ``MAX_GROUP_PLOTS``."""
    groups = data.groups()
    if len(groups) <= MAX_GROUP_PLOTS:
        return sorted(groups)
    counts = data.frame.groupby("group", sort=False)["is_anomaly"].sum()
    return counts.sort_values(ascending=False, kind="stable").index[:MAX_GROUP_PLOTS].tolist()


def write_reports(data: ReportData, png: pathlib.Path, html_path: pathlib.Path) -> None:
    """The overview PNG (score and threshold over time, flags, labelled anomalies shaded)
    and the HTML report, which embeds the same overview (drawn once)."""
    overview = _png_bytes(overview_figure(data, _top_groups(data)))
    png.write_bytes(overview)
    html_path.write_text(render_html(data, overview), encoding="utf-8")


def _img(png: bytes, alt: str) -> str:
    return (f'<img alt="{html.escape(alt)}" '
            f'src="data:image/png;base64,{base64.b64encode(png).decode()}">')


def _table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "<p>none</p>"
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in r.values()) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _time_text(data: ReportData, t: float) -> str:
    if not math.isfinite(t):
        return ""
    return str(pd.to_datetime(t, unit="s", utc=True)) if data.has_time else f"{t:g}"


def _sections(data: ReportData, overview: bytes) -> list[str]:
    facts = [{"item": k, "value": v} for k, v in data.facts.items()]
    metric_rows = [{"metric": k, "value": v} for k, v in (data.metrics or {}).items()]
    drift = [{"group": d.group, "time": _time_text(data, d.time), data.row_name: d.row,
              "kind": d.kind,
              "detector": d.detector, "action": d.action} for d in data.drift]
    delays = [{"group": d.group, "start": _time_text(data, d.start_time) or d.start,
               "records": d.stop - d.start, "detected": d.detected,
               "delay_records": "" if d.delay_records is None else d.delay_records,
               "delay_s": "" if d.delay_seconds is None else d.delay_seconds}
              for d in data.delays]
    bad = [{data.row_name: b.line, "reason": b.reason, "detail": b.detail}
           for b in data.bad_rows]
    top = [{"group": a.group, "time": _time_text(data, a.time), data.row_name: a.row,
            "score": a.score,
            "threshold": a.threshold,
            "top features": ", ".join(f"{n} ({v:.3g})" for n, v in a.contributions[:3])}
           for a in data.top_alerts]
    out = [f"<h1>{html.escape(data.title)}</h1>", "<h2>Summary</h2>", _table(facts)]
    if metric_rows:
        out += ["<h2>Detection quality (labelled rows after warm-up)</h2>", _table(metric_rows)]
    out += ["<h2>Score and threshold over time</h2>",
            _img(overview, "scores")]
    out += ["<h2>Alert timeline</h2>", _img(_png_bytes(timeline_figure(data)), "timeline")]
    out += ["<h2>Drift and regime-change events</h2>", _table(drift)]
    out += ["<h2>Score histogram</h2>", _img(_png_bytes(histogram_figure(data)), "histogram")]
    if data.top_alerts:
        out += ["<h2>Top alerts</h2>", _table(top),
                _img(_png_bytes(contributions_figure(data)), "contributions")]
    if data.delays:
        out += ["<h2>Detection delay per labelled episode</h2>", _table(delays)]
    out += [f"<h2>Bad rows ({data.bad_row_count}, first {len(bad)} shown)</h2>", _table(bad)]
    return out


_STYLE = ("body{font-family:sans-serif;margin:2em;max-width:1200px}"
          "table{border-collapse:collapse;margin:.5em 0}"
          "td,th{border:1px solid #ccc;padding:2px 8px;font-size:13px;text-align:left}"
          "img{max-width:100%}")


def render_html(data: ReportData, overview: bytes | None = None) -> str:
    """The report as one HTML string with every image inlined (``overview``: the PNG of
    :func:`overview_figure` when already drawn)."""
    if overview is None:
        overview = _png_bytes(overview_figure(data, _top_groups(data)))
    body = "\n".join(_sections(data, overview))
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(data.title)}</title><style>{_STYLE}</style></head>"
            f"<body>{body}</body></html>")
