"""Backtests: files and historical topics through the same partition processor as the
service, with predictions, alerts, metrics and reports.

A file backtest reads CSV / JSON Lines / Parquet in large blocks (results do not depend on
how records are split into steps) as partition 0 of a topic named after the file; a topic
backtest replays every partition with its own processor. Both write one prediction row per
input row in input order, compute precision, recall, F1, ROC-AUC and per-episode detection
delays when labels exist, and write the same PNG and HTML reports.
"""

from __future__ import annotations

import math
import pathlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import structlog

from stream_ae.backtest.collect import BacktestSummary, ResultCollector, finish, rejected_rows
from stream_ae.backtest.console import progress_bar
from stream_ae.backtest.predictions import PredictionWriter, prediction_frame
from stream_ae.checkpoint import Checkpoint, CheckpointStore, read_checkpoint
from stream_ae.checkpoint.base import Store, build_store
from stream_ae.config import EngineConfig, Settings
from stream_ae.decode import FeatureSchema
from stream_ae.errors import ConfigError, SourceError
from stream_ae.extras import require
from stream_ae.outputs import Outputs
from stream_ae.processor import Detector, MakeEngine, PartitionProcessor, Processed
from stream_ae.report import BadRow
from stream_ae.sinks.base import BatchSink
from stream_ae.sinks.files import AlertFile
from stream_ae.sources.files import ALL_COLUMNS, Columns, FileSource, Format
from stream_ae.sources.replay import ReplayStart, TopicReplaySource
from stream_ae.types import TopicPartition as TP

log = structlog.get_logger()


def _engine_maker(config: EngineConfig) -> MakeEngine:
    from stream_ae.engine import Engine

    def make(names: Sequence[str]) -> Detector:
        return Engine(config, names)

    return make


@dataclass(frozen=True)
class FileInput:
    """A file to backtest and how to read it."""

    path: pathlib.Path
    columns: Columns = ALL_COLUMNS
    fmt: Format | None = None
    sep: str | None = None
    chunk_rows: int = 65_536


class Replay:
    """Processed blocks -> prediction rows, alerts and the collector (file or topic)."""

    def __init__(self, writer: PredictionWriter, alerts: BatchSink, file_layout: bool,
                 with_label: bool) -> None:
        self.writer = writer
        self.alerts = alerts
        self.file_layout = file_layout
        self.with_label = with_label
        self.collector: ResultCollector | None = None

    def add(self, p: Processed, names: Sequence[str]) -> None:
        if self.collector is None:
            self.collector = ResultCollector(names, row_name="line" if self.file_layout
                                             else "offset")
        self.alerts.write(p.outputs)
        self.writer.write(prediction_frame(p, self.file_layout, self.with_label))
        c, d = self.collector, p.decoded
        c.add_bad([BadRow(x.original.position.offset, x.reason, x.detail)
                   for x in d.dead_letters])
        if p.result is None:
            return
        groups = (list(d.batch.keys) if self.file_layout
                  else [k or f"partition {p.block.partition}" for k in d.batch.keys])
        labels = d.batch.labels if self.with_label else None
        c.add_step(groups, d.batch.timestamps, labels, d.offsets, p.result)
        c.add_bad(rejected_rows(d.offsets, p.result), rejected=True)


def run_file_backtest(settings: Settings, source: FileInput, output: pathlib.Path,
                      progress: bool = True, report: bool = True) -> BacktestSummary:
    """Score every row of ``source`` with one engine; write predictions and, with
    ``report``, the PNG and HTML (the ``report`` extra)."""
    if report:
        require("matplotlib", "backtest reports (--no-report skips them)")
    started = time.perf_counter()
    columns = source.columns
    if not columns.features and settings.engine.features.names:
        columns = Columns(columns.timestamp, columns.label, columns.key,
                          settings.engine.features.names)
    r = settings.record
    src = FileSource(source.path, columns, source.fmt, source.sep, source.chunk_rows,
                     r.max_message_bytes, r.max_key_length, r.max_fields)
    proc: PartitionProcessor | None = None
    replay: Replay | None = None
    alerts = AlertFile(output.with_suffix(".alerts.jsonl"))
    try:
        with progress_bar("backtest", src.size_bytes(), progress) as bar:
            src.open()
            while not src.done:
                for block in src.poll_blocks(source.chunk_rows, 0.0):
                    if proc is None:
                        proc, replay = _file_start(settings, src, output, alerts)
                    assert replay is not None
                    done = proc.process(block, 0, time.time())
                    if done is not None:
                        replay.add(done, src.roles.features)
                    bar(getattr(block, "bytes_read", 0),
                        replay.collector.records if replay.collector else 0)
    finally:
        alerts.close()
        if replay is not None:
            replay.writer.close()
    if replay is None or replay.collector is None:
        raise SourceError(f"{source.path} holds no rows")
    return finish(replay.collector, output, f"Backtest of {source.path.name}",
                  {"input": str(source.path), "features": ", ".join(src.roles.features)},
                  started, report)


def _file_start(settings: Settings, src: FileSource, output: pathlib.Path, alerts: AlertFile
                ) -> tuple[PartitionProcessor, Replay]:
    roles = src.roles
    schema = FeatureSchema(src.record_format(), roles.features,
                           settings.engine.features.missing)
    log.info("backtest_started", input=str(src.path), features=list(roles.features),
             timestamp=roles.timestamp, label=roles.label, key=roles.key,
             warmup=settings.engine.training.warmup)
    proc = PartitionProcessor(src.topic, 0, schema, _engine_maker(settings.engine))
    return proc, Replay(PredictionWriter(output), alerts, True, roles.label is not None)


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
    #: start from the newest checkpoints in the configured store (``checkpoint.store``:
    #: directory, kafka or s3) instead of the files at ``from_checkpoint``
    from_store: bool = False


def _restored(settings: Settings, inp: TopicInput
              ) -> tuple[dict[int, Detector], tuple[str, ...] | None, dict[int, int] | None]:
    """Engines, feature names and start offsets from ``--from-checkpoint`` (a file or a
    checkpoint directory) or ``--from-store`` (the configured store)."""
    from stream_ae.engine import restore_under

    if inp.from_checkpoint is None and not inp.from_store:
        return {}, None, None
    if inp.from_checkpoint is not None and inp.from_store:
        raise ConfigError("give --from-checkpoint or --from-store, not both")
    ckpts, where = _checkpoints(settings, inp)
    if not ckpts:
        raise ConfigError(f"no checkpoint of topic {inp.topic} at {where}")
    engines: dict[int, Detector] = {}
    for c in ckpts:
        if c.engine is not None:
            # a candidate's decision settings apply; learned-state changes follow the policy
            engines[c.partition] = restore_under(c.engine, settings.engine,
                                                 settings.checkpoint.on_config_mismatch)
    offsets = {c.partition: c.position for c in ckpts} if inp.start.kind == "beginning" else None
    log.info("backtest_from_checkpoint", path=where, partitions=sorted(engines),
             start_offsets=offsets)
    return engines, ckpts[0].feature_names or None, offsets


def _checkpoints(settings: Settings, inp: TopicInput) -> tuple[list[Checkpoint], str]:
    """The newest valid checkpoint of each partition of ``inp.topic``, and where from."""
    path = inp.from_checkpoint
    if path is not None and path.is_file():
        return [read_checkpoint(path)], str(path)
    store: Store = CheckpointStore(path) if path is not None else build_store(settings)
    where = str(path) if path is not None else f"the {settings.checkpoint.store} store"
    store.open()
    try:
        found = (store.load(inp.topic, p) for p in sorted(store.partitions(inp.topic)))
        return [c for c in found if c is not None], where
    finally:
        store.close()


def _alert_sink(settings: Settings, inp: TopicInput, output: pathlib.Path) -> BatchSink:
    if not inp.alerts_topic:
        return AlertFile(inp.alerts_file or output.with_suffix(".alerts.jsonl"))
    if inp.alerts_topic == settings.kafka.alerts_topic:
        raise ConfigError(f"{inp.alerts_topic!r} is the live alerts topic: a backtest never "
                          "writes there; name another --alerts-topic or use an alerts file")
    from stream_ae.sinks.kafka import KafkaSink

    kafka = settings.kafka.model_copy(update={
        "alerts_topic": inp.alerts_topic, "guarantee": "at_least_once", "events_topic": None,
        "dead_letter_topic": f"{inp.alerts_topic}.dead-letters"})
    return _AlertsOnly(KafkaSink(kafka))


class _AlertsOnly:
    """A Kafka sink that publishes only the alerts of what it is given (a replay's topic)."""

    def __init__(self, sink: BatchSink) -> None:
        self.sink = sink
        self.count = 0

    def open(self) -> None:
        self.sink.open()

    def begin(self) -> None:
        self.sink.begin()

    def write(self, out: Outputs) -> None:
        self.sink.write(Outputs(alerts=out.alerts))
        self.count += len(out.alerts)

    def commit(self, offsets: Mapping[TP, int], timeout: float = 20.0) -> None:
        self.sink.commit({}, timeout)

    def abort(self) -> None:
        self.sink.abort()

    def flush(self, timeout: float = 10.0) -> None:
        self.sink.flush(timeout)

    def close(self) -> None:
        self.sink.flush(30.0)
        self.sink.close()


def run_topic_backtest(settings: Settings, inp: TopicInput, output: pathlib.Path,
                       progress: bool = True, report: bool = True) -> BacktestSummary:
    """Replay ``inp.topic`` through one processor per partition; predictions, alerts and,
    with ``report``, the PNG and HTML (the ``report`` extra)."""
    if report:
        require("matplotlib", "backtest reports (--no-report skips them)")
    started = time.perf_counter()
    engines, names, offsets = _restored(settings, inp)
    schema = FeatureSchema(settings.record, names or settings.engine.features.names,
                           settings.engine.features.missing)
    alerts = _alert_sink(settings, inp, output)
    replay = Replay(PredictionWriter(output), alerts, False,
                    settings.record.label_field is not None)
    procs: dict[int, PartitionProcessor] = {}
    make = _engine_maker(settings.engine)
    source = TopicReplaySource(settings.kafka, inp.topic, inp.start, inp.end, offsets)
    alerts.open()
    source.open()
    clock = TimeProgress(inp.start.value if inp.start.kind == "time" else None,
                         inp.end or time.time())
    try:
        with progress_bar(f"replay {inp.topic}", 1.0, progress) as bar:
            while not source.done:
                for block in source.poll_blocks(settings.batching.max_records, 0.5):
                    proc = procs.get(block.partition)
                    if proc is None:
                        proc = procs[block.partition] = PartitionProcessor(
                            block.topic, block.partition, schema, make,
                            engines.get(block.partition), block.offsets[0])
                    done = proc.process(block, 0, time.time())
                    if done is not None:
                        replay.add(done, schema.names or ())
                        alerts.commit({})
                    clock.update(block.partition, block.timestamps_ms)
                seen = replay.collector.records if replay.collector else 0
                bar(clock.fraction, seen)
    finally:
        source.close()
        alerts.close()
        replay.writer.close()
    if replay.collector is None or replay.collector.records == 0:
        raise SourceError(f"no records in topic {inp.topic} between the given start and end")
    where = inp.alerts_topic or str(getattr(alerts, "path", ""))
    return finish(replay.collector, output, f"Replay of topic {inp.topic}",
                  {"topic": inp.topic, "start": f"{inp.start.kind} {inp.start.value:g}",
                   "end": "end of partitions" if inp.end is None else inp.end,
                   "partitions": ", ".join(map(str, sorted(procs))),
                   "features": ", ".join(schema.names or ()), "alerts written to": where,
                   "records dropped after the end": source.dropped_after_end}, started, report)


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
