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
import datetime
import functools
import html
import io
import math
import pathlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from stream_ae.evaluation import EpisodeDelay, episodes

if TYPE_CHECKING:  # matplotlib (~0.7 s to import) is loaded when a figure is drawn
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MAX_GROUP_PLOTS = 12  # per-group panels: the groups with the most alerts
MAX_TIMELINE_GROUPS = 40  # rows of the alert timeline: likewise
MAX_TABLE_ROWS = 200  # rows of the per-group, drift and delay tables (the rest are counted)
MAX_POINTS = 4000  # points per line of a panel (a min/max envelope of longer series)
MAX_MARKERS = 5000  # alert markers per panel (evenly thinned beyond)
MAX_LABEL_CHARS = 48  # group names in titles, ticks and tables are cut to this
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
    def _rows(self) -> dict[str, np.ndarray]:
        """Row positions of each group, groups in order of first appearance."""
        codes, uniq = pd.factorize(self.frame["group"], sort=False)
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(uniq) + 1))
        return {str(g): order[bounds[i]:bounds[i + 1]] for i, g in enumerate(uniq)}

    @functools.cached_property
    def per_group(self) -> pd.DataFrame:
        """Records, alerts, labelled rows and the highest score per group, most alerts first."""
        f = self.frame
        stats = pd.DataFrame({"group": f["group"], "alerts": f["is_anomaly"].astype(np.int64),
                              "labelled": (f["label"] == 1).astype(np.int64),
                              "score": f["score"]})
        g = stats.groupby("group", sort=False)
        out = pd.DataFrame({"records": g.size(), "alerts": g["alerts"].sum(),
                            "labelled": g["labelled"].sum(), "max_score": g["score"].max()})
        return out.sort_values("alerts", ascending=False, kind="stable")

    def groups(self) -> list[str]:
        """Groups in order of first appearance."""
        return list(self._rows)

    def row_index(self, group: str) -> np.ndarray:
        """Positions of the rows of one group in ``frame``."""
        return self._rows[group]

    def group_frame(self, group: str) -> pd.DataFrame:
        """The rows of one group, renumbered from 0."""
        return self.frame.iloc[self._rows[group]].reset_index(drop=True)


def short(name: str, limit: int = MAX_LABEL_CHARS) -> str:
    """A group name cut to ``limit`` characters for titles, ticks and tables.

    >>> short("pump-7"), short("x" * 60, 10)
    ('pump-7', 'xxxxxxxxx…')
    """
    return name if len(name) <= limit else name[: limit - 1] + "…"


# --------------------------------------------------------------------------- axes
# Figures are made with matplotlib.figure.Figure, never pyplot: no global state and no GUI
# backend, so reports render the same headless, in threads and in tests. Line plots get at
# most MAX_POINTS points and alert markers are plain Line2D markers (a scatter's per-point
# paths cost seconds for 10^5 points); labelled episodes are one broken_barh per panel.
def _x(data: ReportData, frame: pd.DataFrame) -> np.ndarray:
    """x positions: matplotlib date numbers (days) with event time, else the row number."""
    if data.has_time:
        return _days(frame["time"].to_numpy(np.float64))
    return np.arange(len(frame), dtype=np.float64)


def _days(seconds: np.ndarray) -> np.ndarray:
    from matplotlib import dates

    epoch = pd.Timestamp(dates.get_epoch(), tz="UTC").timestamp()  # type: ignore[no-untyped-call]
    return (np.asarray(seconds, np.float64) - epoch) / 86_400.0


def _margins(fig: Figure, left: float, top_in: float = 0.35) -> None:
    """Fixed margins (inches at the top and bottom): ``tight_layout`` cost seconds per report."""
    height = fig.get_figheight()
    fig.subplots_adjust(left=left, right=0.98, top=1 - top_in / height, bottom=0.5 / height,
                        hspace=0.9 / max(height / 3.0, 1.0))


def _axes_style(ax: Axes, dates: bool, log_y: bool) -> None:
    """Few ticks, no minor ones: every tick is a Line2D and a Text, and on log and date axes
    they were most of the drawing time."""
    from matplotlib import dates as mdates
    from matplotlib import ticker

    if log_y:  # plain "%g" labels: the default 10^k labels go through mathtext
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(ticker.LogLocator(numticks=5))
        ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    if dates:
        locator = mdates.AutoDateLocator(minticks=3, maxticks=7)  # type: ignore[no-untyped-call]
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    ax.minorticks_off()


def _mark_x(data: ReportData, d: DriftMark) -> float:
    return float(_days(np.array([d.time]))[0]) if data.has_time else float(d.row)


def _thin(frame: pd.DataFrame) -> pd.DataFrame:
    """At most ``MAX_POINTS`` rows for line plots: in each of ``MAX_POINTS // 2`` equal
    buckets the first row and the highest-scoring one, so spikes survive the thinning
    (flags are drawn separately)."""
    n = len(frame)
    if n <= MAX_POINTS:
        return frame
    width = math.ceil(n / (MAX_POINTS // 2))
    score = np.nan_to_num(frame["score"].to_numpy(np.float64), nan=-np.inf)
    padded = np.full(width * math.ceil(n / width), -np.inf)
    padded[:n] = score
    starts = np.arange(0, padded.size, width)
    peaks = starts + padded.reshape(-1, width).argmax(axis=1)
    keep = np.unique(np.concatenate([starts, np.minimum(peaks, n - 1)]))
    return frame.iloc[keep]


def _shade_labels(ax: Axes, x: np.ndarray, labels: np.ndarray) -> None:
    spans = episodes(labels)
    if not spans:
        return
    # up to the next reading, so that a one-record episode is visible too
    ranges = [(x[a], x[min(b, len(x) - 1)] - x[a]) for a, b in spans]
    ax.broken_barh(ranges, (0, 1), transform=ax.get_xaxis_transform(), color="tab:orange",
                   alpha=0.3, lw=0)


def _every(idx: np.ndarray, limit: int) -> np.ndarray:
    return idx if idx.size <= limit else idx[:: math.ceil(idx.size / limit)]


def plot_group(ax: Axes, data: ReportData, group: str) -> None:
    """Score, threshold, flags, labelled episodes and drift events of one group."""
    frame = data.group_frame(group)
    x = _x(data, frame)
    thin = _thin(frame)
    x_thin = x[thin.index.to_numpy()]
    ax.plot(x_thin, thin["score"].to_numpy(), lw=0.6, color="tab:blue", label="score")
    ax.plot(x_thin, thin["threshold"].to_numpy(), lw=1.0, color="black", label="threshold")
    flagged = _every(np.flatnonzero(frame["is_anomaly"].to_numpy(np.bool_)), MAX_MARKERS)
    ax.plot(x[flagged], frame["score"].to_numpy()[flagged], ls="", marker="o", ms=2.5,
            color="tab:red", zorder=3, label="alert")
    _shade_labels(ax, x, frame["label"].to_numpy())
    for d in data.drift:
        if d.group == group:
            ax.axvline(_mark_x(data, d), color="tab:purple", ls="--", lw=1.0)
    positive = frame["score"].to_numpy(np.float64)
    _axes_style(ax, data.has_time, log_y=bool(np.nanmin(positive, initial=np.inf) > 0))
    ax.set_title(short(group) or "all records", fontsize=9, y=1.0)  # y: no tight-bbox pass
    ax.set_ylabel("score")


def overview_figure(data: ReportData, groups: Sequence[str]) -> Figure:
    """One panel per group (score and threshold over time)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 2.6 * len(groups) + 0.6))
    axes = fig.subplots(len(groups), 1, squeeze=False, sharex=data.has_time)
    for ax, group in zip(axes[:, 0], groups, strict=True):
        plot_group(ax, data, group)
    axes[0, 0].legend(loc="upper left", fontsize=8, ncols=3)
    fig.suptitle(data.title, fontsize=11)
    _margins(fig, left=0.07, top_in=0.75)
    return fig


def _timeline_groups(data: ReportData) -> list[str]:
    """Every group in order of appearance, or the ``MAX_TIMELINE_GROUPS`` with most alerts."""
    groups = data.groups()
    if len(groups) <= MAX_TIMELINE_GROUPS:
        return groups
    return [str(g) for g in data.per_group.index[:MAX_TIMELINE_GROUPS]]


def timeline_figure(data: ReportData) -> Figure:
    """Alerts (dots) and drift events (diamonds) per group over time."""
    from matplotlib.figure import Figure

    groups = _timeline_groups(data)
    fig = Figure(figsize=(11, 0.35 * len(groups) + 1.6))
    ax = fig.subplots()
    pos = {g: i for i, g in enumerate(groups)}
    flags = data.frame["is_anomaly"].to_numpy(np.bool_)
    rows = [r[flags[r]] for r in (data.row_index(g) for g in groups)]
    none = [np.zeros(0, np.int64)]
    ys = np.concatenate([np.full(r.size, float(i)) for i, r in enumerate(rows)] or none)
    shown = _every(np.arange(ys.size), 20 * MAX_MARKERS)
    flagged = data.frame.iloc[np.concatenate(rows or none)]
    xs = _x(data, flagged)
    ax.plot(xs[shown], ys[shown], ls="", marker="o", ms=2, color="tab:red", label="alert")
    marks = [d for d in data.drift if d.group in pos]
    if marks:
        ax.plot([_mark_x(data, d) for d in marks], [pos[d.group] for d in marks], ls="",
                marker="D", ms=6, color="tab:purple", label="drift / regime change")
    _axes_style(ax, data.has_time, log_y=False)
    ax.set_yticks(range(len(groups)), [short(g, 24) or "all" for g in groups], fontsize=7)
    ax.legend(loc="upper left", fontsize=8)
    more = len(data.groups()) - len(groups)
    ax.set_title("alert timeline" + (f" (the {len(groups)} groups with most alerts; "
                                     f"{more:,} more in the per-group table)" if more else ""),
                 y=1.0)
    _margins(fig, left=0.12)
    return fig


def histogram_figure(data: ReportData) -> Figure:
    """Scores after warm-up on a log axis, split by label when labels exist."""
    from matplotlib.figure import Figure

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
            counts, edges = np.histogram(scores[mask].to_numpy(), bins=bins)
            ax.stairs(counts, edges, fill=True, alpha=0.6, color=color, label=name)
    if len(frame):
        ax.axvline(float(frame["threshold"].median()), color="black", lw=1,
                   label="median threshold")
    if len(frame):
        from matplotlib import ticker

        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        _axes_style(ax, False, log_y=True)
        ax.legend(fontsize=8)
    ax.set_title("score histogram (after warm-up)", y=1.0)
    _margins(fig, left=0.1)
    return fig


def contributions_figure(data: ReportData) -> Figure:
    """Share of each feature in the squared reconstruction error of the top alerts."""
    import matplotlib as mpl
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure

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
    y = np.arange(len(alerts), dtype=np.float64)
    for j, name in enumerate(names):
        right = left + share[:, j]
        verts = np.stack([np.stack([left, y - 0.4], 1), np.stack([right, y - 0.4], 1),
                          np.stack([right, y + 0.4], 1), np.stack([left, y + 0.4], 1)], 1)
        ax.add_collection(PolyCollection(list(verts), facecolors=[cmap(j % 20)], label=name))
        left = right
    ax.set_xlim(0, 1)
    ax.set_ylim(len(alerts) - 0.5, -0.5)  # the top alert on top
    ax.minorticks_off()
    names_y = [f"{short(a.group, 24) or '-'} {data.row_name} {a.row}" for a in alerts]
    ax.set_yticks(range(len(alerts)), names_y, fontsize=7)
    ax.set_xlabel("share of squared error")
    ax.legend(fontsize=7, ncols=min(len(names), 6), loc="lower right")
    ax.set_title("per-feature contribution of the top alerts", y=1.0)
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
    return [str(g) for g in data.per_group.index[:MAX_GROUP_PLOTS]]


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
    if not data.has_time:
        return f"{t:g}"
    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat(" ")


def _capped(rows: list[dict[str, Any]], total: int, what: str) -> str:
    """A table of the first ``MAX_TABLE_ROWS`` of ``total`` rows, saying how many are left out."""
    more = total - MAX_TABLE_ROWS
    note = f"<p>{more:,} more {what} not shown.</p>" if more > 0 else ""
    return _table(rows[:MAX_TABLE_ROWS]) + note


def _group_rows(data: ReportData) -> list[dict[str, Any]]:
    table = data.per_group.iloc[:MAX_TABLE_ROWS + 1]
    return [{"group": short(str(g)) or "-", "records": int(rec), "alerts": int(al),
             "labelled rows": int(lab), "max score": float(top)}
            for g, rec, al, lab, top in zip(table.index, table["records"].to_numpy(),
                                            table["alerts"].to_numpy(),
                                            table["labelled"].to_numpy(),
                                            table["max_score"].to_numpy(), strict=True)]


def _group_table(data: ReportData) -> str:
    rows = _group_rows(data)
    more = len(data.per_group) - MAX_TABLE_ROWS
    if more <= 0:
        return _table(rows)
    rest = data.per_group.iloc[MAX_TABLE_ROWS:]
    return (_table(rows[:MAX_TABLE_ROWS]) + f"<p>{more:,} more groups not shown: "
            f"{int(rest['records'].sum()):,} records, {int(rest['alerts'].sum()):,} "
            "alerts.</p>")


def _sections(data: ReportData, overview: bytes) -> list[str]:
    facts = [{"item": k, "value": v} for k, v in data.facts.items()]
    metric_rows = [{"metric": k, "value": v} for k, v in (data.metrics or {}).items()]
    drift = [{"group": short(d.group), "time": _time_text(data, d.time), data.row_name: d.row,
              "kind": d.kind, "detector": d.detector, "action": d.action}
             for d in data.drift[: MAX_TABLE_ROWS + 1]]
    delays = [{"group": short(d.group), "start": _time_text(data, d.start_time) or d.start,
               "records": d.stop - d.start, "detected": d.detected,
               "delay_records": "" if d.delay_records is None else d.delay_records,
               "delay_s": "" if d.delay_seconds is None else d.delay_seconds}
              for d in data.delays[: MAX_TABLE_ROWS + 1]]
    bad = [{data.row_name: b.line, "reason": b.reason, "detail": b.detail}
           for b in data.bad_rows]
    top = [{"group": short(a.group), "time": _time_text(data, a.time), data.row_name: a.row,
            "score": a.score,
            "threshold": a.threshold,
            "top features": ", ".join(f"{n} ({v:.3g})" for n, v in a.contributions[:3])}
           for a in data.top_alerts]
    out = [f"<h1>{html.escape(data.title)}</h1>", "<h2>Summary</h2>", _table(facts)]
    if metric_rows:
        out += ["<h2>Detection quality (labelled rows after warm-up)</h2>", _table(metric_rows)]
    out += ["<h2>Score and threshold over time</h2>",
            _img(overview, "scores")]
    out += [f"<h2>Per group ({len(data.per_group):,}, most alerts first)</h2>",
            _group_table(data)]
    out += ["<h2>Alert timeline</h2>", _img(_png_bytes(timeline_figure(data)), "timeline")]
    out += [f"<h2>Drift and regime-change events ({len(data.drift):,})</h2>",
            _capped(drift, len(data.drift), "events")]
    out += ["<h2>Score histogram</h2>", _img(_png_bytes(histogram_figure(data)), "histogram")]
    if data.top_alerts:
        out += ["<h2>Top alerts</h2>", _table(top),
                _img(_png_bytes(contributions_figure(data)), "contributions")]
    if data.delays:
        out += ["<h2>Detection delay per labelled episode</h2>",
                _capped(delays, len(data.delays), "episodes")]
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
