"""Backtests: the live service's Engine over a file or a historical topic, with metrics and reports.

A file backtest reads CSV / JSON Lines / Parquet in large chunks (the engine's
results do not depend on how records are split into steps), writes one prediction
row per input row in input order, and, when labels exist, computes precision,
recall, F1, ROC-AUC and the detection delay of each labelled episode. Both file and
topic backtests fill a :class:`~stream_ae.report.ReportData` and write the same
PNG and HTML reports.
"""

from __future__ import annotations

import heapq
import math
import pathlib
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import structlog
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from stream_ae.checkpoint import CheckpointStore, read_checkpoint
from stream_ae.config import EngineConfig, KafkaConfig, Settings
from stream_ae.engine import Engine
from stream_ae.errors import ConfigError, ConfigMismatchError, SourceError
from stream_ae.evaluation import (
    EpisodeDelay,
    Metrics,
    classification_metrics,
    delay_summary,
    delays_by_group,
    evaluable,
)
from stream_ae.readers import ALL_COLUMNS, BadRow, Chunk, Columns, Format, TableReader
from stream_ae.records import F64, I64, Alert, Bool, StepResult
from stream_ae.report import DriftMark, ReportData, TopAlert, write_reports
from stream_ae.serde import (
    Decoded,
    Decoder,
    RawBlock,
    all_dead,
    build_alerts,
    encode_alert,
    infer_feature_names,
)
from stream_ae.sinks.kafka import KafkaSink
from stream_ae.sources.replay import ReplayStart, TopicReplaySource

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
    html: pathlib.Path
    png: pathlib.Path | None = None
    metrics: Metrics | None = None
    delay: Mapping[str, float] = field(default_factory=dict)
    bad_examples: tuple[BadRow, ...] = ()

    @property
    def records_per_s(self) -> float:
        return self.records / self.elapsed_s if self.elapsed_s > 0 else math.nan


# --------------------------------------------------------------------------- progress
@contextmanager
def progress_bar(description: str, total: float | None, enabled: bool = True
                 ) -> Iterator[Progress]:
    """A rich progress bar with ETA on stderr; silent when stderr is not a terminal."""
    console = Console(stderr=True)
    bar = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(),
        TextColumn("{task.fields[records]:,} records"), TimeElapsedColumn(),
        TextColumn("ETA"), TimeRemainingColumn(),
        console=console, disable=not (enabled and console.is_terminal),
    )
    with bar:
        bar.add_task(description, total=total, records=0)
        yield bar


# --------------------------------------------------------------------------- collecting
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
        self._top: list[tuple[float, int, TopAlert]] = []
        self._drift: list[DriftMark] = []
        self._bad: list[BadRow] = []
        self._unread = 0  # bad rows that never reached the engine (not in the frame)
        self._rejected = 0  # rows the engine rejected (in the frame, NaN score)

    def add_rows(self, groups: Sequence[str], times: F64, scores: F64, thresholds: F64,
                 flags: Bool, warmup: Bool, labels: I64, rows: I64) -> None:
        """Append rows (NaN score: not scored)."""
        for name, values in zip(self._cols, (list(groups), times, scores, thresholds, flags,
                                             warmup, labels, rows), strict=True):
            self._cols[name].append(np.asarray(values))

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
        cols = {k: (np.concatenate(v) if v else np.array([])) for k, v in self._cols.items()}
        frame = pd.DataFrame(cols)
        frame["group"] = frame["group"].astype(str)
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


# --------------------------------------------------------------------------- predictions
class PredictionWriter:
    """Appends prediction rows to a CSV file, header first.

    Examples
    --------
    >>> import tempfile
    >>> w = PredictionWriter(pathlib.Path(tempfile.mkdtemp()) / "p.csv")
    >>> w.write(pd.DataFrame({"score": [1.5]})); w.write(pd.DataFrame({"score": [2.0]}))
    >>> w.path.read_text().split()
    ['score', '1.5', '2.0']
    """

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self._started = False

    def write(self, frame: pd.DataFrame) -> None:
        if not self._started:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(self.path, mode="a" if self._started else "w", header=not self._started,
                     index=False)
        self._started = True


def result_columns(n: int, res: StepResult | None) -> dict[str, Any]:
    """``score``, ``threshold``, ``is_anomaly``, ``warmup`` of ``n`` rows (NaN / 0 when the
    engine saw none of them) and their ``error`` (``rejected:<reason>`` or empty)."""
    error = [""] * n
    for row, reason in res.rejected if res is not None else ():
        error[row] = f"rejected:{reason}"
    nan = np.full(n, np.nan)
    return {
        "score": nan if res is None else res.scores,
        "threshold": nan if res is None else res.thresholds,
        "is_anomaly": np.zeros(n, np.int8) if res is None else res.is_anomaly.astype(np.int8),
        "warmup": np.zeros(n, np.int8) if res is None else res.warmup.astype(np.int8),
        "error": error,
    }


def file_predictions(chunk: Chunk, res: StepResult | None, roles: Columns) -> pd.DataFrame:
    """One row per input row of ``chunk`` (good and bad) in line order."""
    n = len(chunk)
    result = result_columns(n, res)
    error = result.pop("error")
    good: dict[str, Any] = {"line": chunk.lines}
    if roles.timestamp is not None:
        good["timestamp"] = chunk.timestamp_text or [""] * n
    if roles.key is not None:
        good["key"] = chunk.keys
    good.update(result)
    if roles.label is not None and chunk.labels is not None:
        good["label"] = chunk.labels
    good["error"] = error
    frame = pd.DataFrame(good)
    bad = pd.DataFrame({"line": [b.line for b in chunk.bad],
                        "error": [f"{b.reason}: {b.detail}" for b in chunk.bad]})
    return with_unscored(frame, bad, "line")


def with_unscored(frame: pd.DataFrame, bad: pd.DataFrame, order: str) -> pd.DataFrame:
    """Prediction rows plus rows that were never scored (``bad``: position and ``error``),
    in input order (by ``order``); labels as nullable integers (empty when unknown)."""
    if len(bad):
        bad = bad.assign(is_anomaly=0, warmup=0)
        frame = pd.concat([frame, bad], ignore_index=True).sort_values(order, kind="stable")
        frame[["is_anomaly", "warmup"]] = frame[["is_anomaly", "warmup"]].astype(np.int8)
    if "label" in frame:
        frame["label"] = frame["label"].astype("Int64")
    return frame


def rejected_rows(rows: I64, res: StepResult) -> list[BadRow]:
    """Rows the engine's feature stage rejected, as bad rows numbered by ``rows`` (lines or
    offsets)."""
    return [BadRow(int(rows[r]), f"rejected:{reason}", "") for r, reason in res.rejected]


# --------------------------------------------------------------------------- file backtest
@dataclass(frozen=True)
class FileInput:
    """A file to backtest and how to read it."""

    path: pathlib.Path
    columns: Columns = ALL_COLUMNS
    fmt: Format | None = None
    sep: str | None = None
    chunk_rows: int = 65_536


def run_file_backtest(settings: Settings, source: FileInput, output: pathlib.Path,
                      progress: bool = True) -> BacktestSummary:
    """Score every row of ``source`` with one engine; write predictions, PNG and HTML."""
    started = time.perf_counter()
    columns = source.columns
    if not columns.features and settings.engine.features.names:
        columns = replace(columns, features=settings.engine.features.names)
    reader = TableReader(source.path, columns, source.fmt, source.sep, source.chunk_rows)
    writer = PredictionWriter(output)
    engine: Engine | None = None
    collector: ResultCollector | None = None
    with progress_bar("backtest", reader.size_bytes(), progress) as bar:
        for chunk in reader:
            if engine is None:
                engine, collector = _start(settings, reader)
            assert collector is not None
            res = engine.step(chunk.to_batch()) if len(chunk) else None
            writer.write(file_predictions(chunk, res, reader.roles))
            _collect_chunk(collector, chunk, res)
            bar.update(bar.task_ids[0], completed=chunk.bytes_read, records=collector.records)
    if collector is None:
        raise SourceError(f"{source.path} holds no rows")
    return finish(collector, output, f"Backtest of {source.path.name}",
                  {"input": str(source.path), "features": ", ".join(reader.feature_names)},
                  started)


def _start(settings: Settings, reader: TableReader) -> tuple[Engine, ResultCollector]:
    engine = Engine(settings.engine, reader.feature_names)
    log.info("backtest_started", input=str(reader.path), features=list(reader.feature_names),
             timestamp=reader.roles.timestamp, label=reader.roles.label, key=reader.roles.key,
             warmup=settings.engine.training.warmup)
    return engine, ResultCollector(reader.feature_names, row_name="line")


def _collect_chunk(collector: ResultCollector, chunk: Chunk, res: StepResult | None) -> None:
    collector.add_bad(chunk.bad)
    if res is None:
        return
    collector.add_step(chunk.keys, chunk.timestamps, chunk.labels, chunk.lines, res)
    collector.add_bad(rejected_rows(chunk.lines, res), rejected=True)


def finish(collector: ResultCollector, output: pathlib.Path, title: str,
           facts: Mapping[str, Any], started: float) -> BacktestSummary:
    """Compute metrics, write the PNG and HTML beside ``output`` and summarise."""
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
             report=str(html_path))
    return summary


def settings_with(settings: Settings, features: Sequence[str] | None = None,
                  warmup: int | None = None) -> Settings:
    """``settings`` with CLI overrides of the feature list and the warm-up length, validated.

    >>> settings_with(Settings(), ["a", "b"], 10).engine.training.warmup
    10
    """
    data = settings.engine.model_dump()
    if features:
        data["features"]["names"] = tuple(features)
    if warmup is not None:
        data["training"]["warmup"] = warmup
    try:
        engine = EngineConfig.model_validate(data)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    return settings.model_copy(update={"engine": engine})


# --------------------------------------------------------------------------- topic backtest
@dataclass(frozen=True)
class TopicInput:
    """A historical topic to replay and where its alerts go.

    ``alerts_file`` defaults to ``<predictions>.alerts.jsonl``; ``alerts_topic`` (never the
    live alerts topic) publishes them instead.
    """

    topic: str
    start: ReplayStart = field(default_factory=ReplayStart)
    end: float | None = None
    from_checkpoint: pathlib.Path | None = None
    alerts_file: pathlib.Path | None = None
    alerts_topic: str | None = None


class AlertFile:
    """Alerts as JSON lines (the alert wire format), one file per backtest."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self._fh: Any = None
        self.count = 0

    def write(self, alerts: Sequence[Alert]) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("wb")
        for a in alerts:
            self._fh.write(encode_alert(a) + b"\n")
        self.count += len(alerts)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class AlertTopic:
    """Alerts to a dedicated topic through the Kafka sink (at-least-once, no offsets)."""

    def __init__(self, kafka: KafkaConfig, topic: str) -> None:
        if topic == kafka.alerts_topic:
            raise ConfigError(f"{topic!r} is the live alerts topic: a backtest never writes "
                              "there; name another --alerts-topic or use an alerts file")
        self.sink = KafkaSink(kafka.model_copy(update={
            "alerts_topic": topic, "guarantee": "at_least_once", "events_topic": None}))
        self.count = 0

    def write(self, alerts: Sequence[Alert]) -> None:
        if self.count == 0 and alerts:
            self.sink.open()
        if alerts:
            self.sink.write(alerts=alerts)
            self.count += len(alerts)

    def close(self) -> None:
        if self.count:
            self.sink.flush(30.0)
            self.sink.close()


def _restored(settings: Settings, inp: TopicInput
              ) -> tuple[dict[int, Engine], tuple[str, ...] | None, dict[int, int] | None]:
    """Engines, feature names and start offsets from ``--from-checkpoint`` (file or store)."""
    if inp.from_checkpoint is None:
        return {}, None, None
    path = inp.from_checkpoint
    if path.is_file():
        ckpts = [read_checkpoint(path)]
    else:
        parts = sorted(int(p.name) for p in (path / inp.topic).glob("*") if p.name.isdigit())
        store = CheckpointStore(path)
        ckpts = [c for c in (store.load(inp.topic, p) for p in parts) if c is not None]
    if not ckpts:
        raise ConfigError(f"no checkpoint of topic {inp.topic} at {path}")
    engines = {c.partition: _restore_under(settings, c.engine) for c in ckpts
               if c.engine is not None}
    offsets = {c.partition: c.position for c in ckpts} if inp.start.kind == "beginning" else None
    log.info("backtest_from_checkpoint", path=str(path), partitions=sorted(engines),
             start_offsets=offsets)
    return engines, ckpts[0].feature_names or None, offsets


def _restore_under(settings: Settings, blob: bytes) -> Engine:
    """A checkpoint's engine under the configured settings (a candidate's thresholds apply);
    learned-state contradictions raise unless ``on_config_mismatch`` is 'keep_stored'."""
    try:
        return Engine.restore(blob, settings.engine)
    except ConfigMismatchError as exc:
        if settings.checkpoint.on_config_mismatch != "keep_stored":
            raise
        log.warning("checkpoint_config_mismatch", fields=list(exc.fields), action="keep_stored")
        return Engine.restore(blob)


class TimeProgress:
    """How far a replay got, from record timestamps (topics have no reliable row count:
    some brokers report wrong high watermarks).

    Each partition's fraction is its latest record time between the start (the start time,
    or the first record seen) and the end (the end time, or when the replay began); the
    replay's fraction is their mean.

    >>> p = TimeProgress(start=None, end=100.0)
    >>> p.update(0, [0, 40_000]); p.update(1, [20_000, 60_000])
    >>> p.fraction
    0.5
    """

    def __init__(self, start: float | None, end: float) -> None:
        self.start = start
        self.end = end
        self._latest: dict[int, float] = {}

    def update(self, partition: int, timestamps_ms: Sequence[int | None]) -> None:
        stamps = [t / 1000.0 for t in timestamps_ms if t is not None]
        if not stamps:
            return
        if self.start is None:
            self.start = min(stamps)
        self._latest[partition] = max(self._latest.get(partition, -math.inf), max(stamps))

    @property
    def fraction(self) -> float:
        if self.start is None or not self._latest or self.end <= self.start:
            return 0.0
        span = self.end - self.start
        return float(np.mean([min(max((t - self.start) / span, 0.0), 1.0)
                              for t in self._latest.values()]))


class TopicReplay:
    """Steps one engine per partition over replayed blocks and records everything.

    Parameters
    ----------
    settings
        The service settings (engine, record format).
    writer
        Where prediction rows go.
    alerts
        Where alerts go (:class:`AlertFile` or :class:`AlertTopic`).
    engines
        Engines restored from a checkpoint, by partition.
    names
        Raw feature names (None: from the settings, else from the first records).
    """

    def __init__(self, settings: Settings, writer: PredictionWriter, alerts: AlertFile |
                 AlertTopic, engines: dict[int, Engine] | None = None,
                 names: tuple[str, ...] | None = None) -> None:
        self.settings = settings
        self.writer = writer
        self.alerts = alerts
        self.engines = dict(engines or {})
        self.names = names or settings.engine.features.names or None
        self._decoder: Decoder | None = None
        self.collector: ResultCollector | None = None

    def step(self, block: RawBlock) -> None:
        decoded = self._decode(block)
        res = None
        if len(decoded.batch):
            engine = self.engines.get(block.partition)
            if engine is None:
                assert self.names is not None
                engine = self.engines[block.partition] = Engine(self.settings.engine, self.names)
            res = engine.step(decoded.batch)
            self.alerts.write(build_alerts(decoded, res, block.topic, block.partition,
                                           time.time()))
        self.writer.write(topic_predictions(block.partition, decoded, res,
                                            self.settings.record.label_field is not None))
        self._collect(block.partition, decoded, res)

    def _decode(self, block: RawBlock) -> Decoded:
        if self._decoder is None:
            self.names = self.names or infer_feature_names(block, self.settings.record)
            if self.names is None:
                return all_dead(block, "no_features")
            self._decoder = Decoder(self.names, self.settings.record,
                                    self.settings.engine.features.missing)
            self.collector = ResultCollector(self.names, row_name="offset")
            log.info("backtest_features", names=list(self.names))
        return self._decoder.decode(block)

    def _collect(self, partition: int, decoded: Decoded, res: StepResult | None) -> None:
        if self.collector is None:
            self.collector = ResultCollector(self.names or (), row_name="offset")
        bad = [BadRow(d.original.position.offset, d.reason, d.detail)
               for d in decoded.dead_letters]
        self.collector.add_bad(bad)
        if res is None:
            return
        groups = [k or f"partition {partition}" for k in decoded.batch.keys]
        labels = decoded.batch.labels if self.settings.record.label_field else None
        self.collector.add_step(groups, decoded.batch.timestamps, labels, decoded.offsets, res)
        self.collector.add_bad(rejected_rows(decoded.offsets, res), rejected=True)


def topic_predictions(partition: int, decoded: Decoded, res: StepResult | None,
                      with_label: bool) -> pd.DataFrame:
    """Prediction rows of one partition's block (good and dead-lettered) in offset order."""
    b, n = decoded.batch, len(decoded.batch)
    result = result_columns(n, res)
    error = result.pop("error")
    cols: dict[str, Any] = {
        "partition": partition, "offset": decoded.offsets, "key": list(b.keys),
        "timestamp": b.timestamps, **result,
    }
    if with_label:
        cols["label"] = b.labels if b.labels is not None else np.full(n, -1)
    frame = pd.DataFrame({**cols, "error": error})
    dead = pd.DataFrame({
        "partition": partition,
        "offset": [d.original.position.offset for d in decoded.dead_letters],
        "error": [f"{d.reason}: {d.detail}" for d in decoded.dead_letters]})
    return with_unscored(frame, dead, "offset")


def run_topic_backtest(settings: Settings, inp: TopicInput, output: pathlib.Path,
                       progress: bool = True) -> BacktestSummary:
    """Replay ``inp.topic`` through one engine per partition; predictions, alerts, reports."""
    started = time.perf_counter()
    engines, names, offsets = _restored(settings, inp)
    alerts: AlertFile | AlertTopic = (
        AlertTopic(settings.kafka, inp.alerts_topic) if inp.alerts_topic
        else AlertFile(inp.alerts_file or output.with_suffix(".alerts.jsonl")))
    replay = TopicReplay(settings, PredictionWriter(output), alerts, engines, names)
    source = TopicReplaySource(settings.kafka, inp.topic, inp.start, inp.end, offsets)
    source.open()
    clock = TimeProgress(inp.start.value if inp.start.kind == "time" else None,
                         inp.end or time.time())
    try:
        with progress_bar(f"replay {inp.topic}", 1.0, progress) as bar:
            while not source.done:
                for block in source.poll_blocks(settings.batching.max_records, 0.5):
                    replay.step(block)
                    clock.update(block.partition, block.timestamps_ms)
                seen = replay.collector.records if replay.collector else 0
                bar.update(bar.task_ids[0], completed=clock.fraction, records=seen)
    finally:
        source.close()
        alerts.close()
    if replay.collector is None or replay.collector.records == 0:
        raise SourceError(f"no records in topic {inp.topic} between the given start and end")
    where = inp.alerts_topic or str(getattr(alerts, "path", ""))
    return finish(replay.collector, output, f"Replay of topic {inp.topic}",
                  {"topic": inp.topic, "start": f"{inp.start.kind} {inp.start.value:g}",
                   "end": "end of partitions" if inp.end is None else inp.end,
                   "partitions": ", ".join(map(str, sorted(replay.engines))),
                   "features": ", ".join(replay.names or ()), "alerts written to": where,
                   "records dropped after the end": source.dropped_after_end}, started)


# --------------------------------------------------------------------------- console
def summary_table(summary: BacktestSummary) -> Table:
    """The summary (and metrics, when labels exist) as a rich table for the terminal."""
    table = Table(title="backtest", show_header=False)
    rows: list[tuple[str, Any]] = [
        ("records", summary.records), ("scored", summary.scored), ("alerts", summary.alerts),
        ("bad rows", summary.bad_rows), ("drift events", summary.drift_events),
        ("records/s", round(summary.records_per_s)), ("predictions", summary.predictions),
        ("report", summary.html), ("plot", summary.png),
    ]
    if summary.metrics is not None:
        m = summary.metrics
        rows += [("precision", m.precision), ("recall", m.recall), ("F1", m.f1),
                 ("ROC-AUC", m.roc_auc), ("labelled anomalies", m.positives)]
        rows += [(k.replace("_", " "), v) for k, v in summary.delay.items()]
    for name, value in rows:
        table.add_row(name, f"{value:.4f}" if isinstance(value, float) else str(value))
    return table


def print_summary(summary: BacktestSummary, console: Console | None = None) -> None:
    """Print the summary table and the first bad rows (line and reason)."""
    console = console or Console()
    console.print(summary_table(summary))
    for b in summary.bad_examples:
        console.print(f"bad row at line/offset {b.line}: {b.reason} {b.detail}")
