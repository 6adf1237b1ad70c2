"""The service loop: source -> serde -> engine (one per partition) -> sink; checkpoints.

Per batch: poll messages across polls until ``batching.max_records`` or ``max_wait_ms``
after the first one; decode each partition's block; step its engine; publish alerts,
dead letters, events (and decisions) together with the consumed offsets
(``sink.commit``: one transaction in exactly-once mode); then checkpoint partitions that
are due. A checkpoint is written only after the outputs of the state it covers are
committed, so on restart: load the checkpoint, seek to its position, replay up to the
committed offset without publishing (catch-up), then continue live.
"""

from __future__ import annotations

import bisect
import gc
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Protocol

import structlog

from stream_ae.checkpoint import Checkpoint
from stream_ae.checkpoint.base import Store, build_store
from stream_ae.config import Settings
from stream_ae.errors import (
    ConfigMismatchError,
    FencedError,
    SinkError,
    SnapshotError,
    SourceError,
    StoreError,
)
from stream_ae.metrics import Health, ServiceMetrics
from stream_ae.records import Alert, Batch, DeadLetter, DriftEvent, SourcePosition, StepResult
from stream_ae.serde import (
    Decision,
    Decoded,
    Decoder,
    RawBlock,
    all_dead,
    build_alerts,
    dead_letter,
    infer_feature_names,
)
from stream_ae.sources.kafka import Assignment

log = structlog.get_logger()

TP = tuple[str, int]
Event = tuple[DriftEvent, SourcePosition, int]


class EngineLike(Protocol):
    """What the runner needs from ``stream_ae.engine.Engine``."""

    records_seen: int
    model_version: int

    def step(self, batch: Batch) -> StepResult: ...

    def snapshot(self) -> bytes: ...


class GroupSource(Protocol):
    """A consumer-group source (``KafkaGroupSource``, ``testing.MemoryGroupSource``)."""

    listener: Any

    def open(self) -> None: ...

    def poll_blocks(self, max_n: int, timeout: float) -> list[RawBlock]: ...

    def group_metadata(self) -> object: ...

    def commit(self, offsets: Mapping[TP, int]) -> None: ...

    def lag(self, tp: TP, position: int) -> int | None: ...

    def close(self) -> None: ...


class BatchSink(Protocol):
    """A sink with batch commit (``KafkaSink``, ``MemorySink``)."""

    def begin(self) -> None: ...

    def write(self, alerts: Sequence[Alert] = (), dead_letters: Sequence[DeadLetter] = (),
              events: Sequence[Event] = ()) -> None: ...

    def write_decisions(self, decisions: Sequence[Decision]) -> None: ...

    def commit(self, offsets: Mapping[TP, int], source: Any, timeout: float = 60.0) -> None: ...

    def abort(self) -> None: ...

    def close(self) -> None: ...


def default_engine_factory(settings: Settings) -> tuple[Callable[[Sequence[str]], EngineLike],
                                                        Callable[[bytes], EngineLike]]:
    """Build and restore real engines (imported lazily: the engine pulls in torch)."""
    from stream_ae.engine import Engine

    def make(names: Sequence[str]) -> EngineLike:
        return Engine(settings.engine, names)  # type: ignore[return-value]

    def restore(blob: bytes) -> EngineLike:
        """Under the configured engine settings; a contradiction of the stored learned state
        raises ``ConfigMismatchError`` unless ``on_config_mismatch`` is 'keep_stored'."""
        try:
            return Engine.restore(blob, settings.engine)  # type: ignore[return-value]
        except ConfigMismatchError as exc:
            if settings.checkpoint.on_config_mismatch != "keep_stored":
                raise
            log.warning("checkpoint_config_mismatch", fields=list(exc.fields),
                        action="keep_stored")
            return Engine.restore(blob)  # type: ignore[return-value]

    return make, restore


EngineFactory = tuple[Callable[[Sequence[str]], EngineLike], Callable[[bytes], EngineLike]]


def prewarm_engine(settings: Settings) -> EngineFactory:
    """The real engine factories, after paying the engine's one-time lazy imports (torch
    optimizer, river) now, before joining the group, not inside the first batch. The
    throwaway engine is discarded."""
    make, restore = default_engine_factory(settings)
    make(("warm-up",)).step(Batch.from_arrays([[0.0]]))
    return make, restore


@dataclass
class _Partition:
    """Mutable per-partition state owned by the runner."""

    topic: str
    partition: int
    position: int  # next offset the engine state covers
    publish_from: int  # offsets below this were published before: replay silently
    engine: EngineLike | None = None
    since_checkpoint: int = 0
    last_checkpoint: float = 0.0
    saved_position: int = -1

    @property
    def tp(self) -> TP:
        return (self.topic, self.partition)


@dataclass
class _Outputs:
    alerts: list[Alert] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    offsets: dict[TP, int] = field(default_factory=dict)

    def empty(self) -> bool:
        return not (self.alerts or self.dead or self.events or self.decisions or self.offsets)


class Runner:
    """Move records from a group source through per-partition engines to a sink.

    Parameters
    ----------
    settings
        Batching, checkpoint, record-format and engine settings.
    source, sink, store
        The outside world (Kafka adapters in production, memory ones in tests).
    make_engine, restore_engine
        Engine constructors (default: ``stream_ae.engine.Engine``).
    metrics, health
        Optional observability hooks.
    clock, wall
        Monotonic clock for batching/checkpoint intervals; wall clock for ``detected_at``.

    Examples
    --------
    >>> from stream_ae.testing import MemoryGroupSource, ThresholdEngine
    >>> from stream_ae.sinks.memory import MemorySink
    >>> import tempfile
    >>> from structlog.testing import capture_logs
    >>> from stream_ae.checkpoint import CheckpointStore
    >>> src = MemoryGroupSource({("s", 0): [b'{"x": 1}', b'{"x": 9}', b"bad"]})
    >>> sink = MemorySink()
    >>> r = Runner(Settings(), src, sink, CheckpointStore(tempfile.mkdtemp()),
    ...            make_engine=lambda names: ThresholdEngine(names, limit=5.0),
    ...            restore_engine=ThresholdEngine.restore)
    >>> with capture_logs():
    ...     r.run_until_idle()
    >>> [a.alert_id for a in sink.alerts], [d.reason for d in sink.dead_letters]
    (['s/0/1'], ['invalid_json'])
    """

    def __init__(
        self, settings: Settings, source: GroupSource, sink: BatchSink, store: Store,
        make_engine: Callable[[Sequence[str]], EngineLike] | None = None,
        restore_engine: Callable[[bytes], EngineLike] | None = None,
        metrics: ServiceMetrics | None = None, health: Health | None = None,
        clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.source = source
        self.sink = sink
        self.store = store
        self.make_engine = make_engine
        self.restore_engine = restore_engine
        self.metrics = metrics
        self.health = health
        self.clock = clock
        self.wall = wall
        self._parts: dict[TP, _Partition] = {}
        self._pending: list[RawBlock] = []
        self._pending_n = 0
        self._deadline = 0.0
        self._names: tuple[str, ...] | None = settings.engine.features.names or None
        self._decoder: Decoder | None = None
        self._tainted = False

    # ------------------------------------------------------------------ lifecycle
    def run(self, stop: threading.Event) -> None:
        """Process until ``stop`` is set; then finish the batch, commit, checkpoint, close."""
        self._open()
        try:
            while not stop.is_set():
                self.cycle()
            self.flush_pending()
            self.checkpoint_all(force=True)
        finally:
            self._close()

    def run_until_idle(self, idle_polls: int = 2) -> None:
        """Process until the source returns nothing ``idle_polls`` times (tests, backfills)."""
        self._open()
        try:
            idle = 0
            while idle < idle_polls:
                idle = 0 if self.cycle(idle_timeout=0.0) else idle + 1
            self.flush_pending()
            self.checkpoint_all(force=True)
        finally:
            self._close()

    def _open(self) -> None:
        if self.make_engine is None or self.restore_engine is None:
            self.make_engine, self.restore_engine = prewarm_engine(self.settings)
        self.source.listener = self
        opener = getattr(self.sink, "open", None)
        if callable(opener):
            opener()
        self.store.open()
        self.source.open()

    def _close(self) -> None:
        try:
            self.source.close()  # leaves the group: on_revoke checkpoints what is clean
        finally:
            self.sink.close()
            self.store.close()
            if self.health is not None:
                self.health.ready = False
            log.info("runner_stopped")

    def positions(self) -> dict[TP, int]:
        """Next offset per owned partition; everything below it is processed and committed."""
        return {tp: part.position for tp, part in list(self._parts.items())}

    # ------------------------------------------------------------------ the loop
    def cycle(self, idle_timeout: float = 0.2) -> int:
        """Poll once, process the pending batch when full or due; return records polled."""
        cfg = self.settings.batching
        if self._pending:  # fill the batch until it is full or its deadline passes
            timeout = max(0.0, self._deadline - self.clock())
            blocks = self.source.poll_blocks(cfg.max_records - self._pending_n, timeout)
        else:
            # a poll for n messages waits for all n: wait for the first one only, then take
            # what is already fetched, so the latency bound starts at the first arrival
            blocks = self.source.poll_blocks(1, idle_timeout)
            if blocks:
                self._deadline = self.clock() + cfg.max_wait_ms / 1000.0
                blocks += self.source.poll_blocks(cfg.max_records - 1, 0.0)
        n = sum(len(b) for b in blocks)
        self._pending += blocks
        self._pending_n += n
        if self._pending and (self._pending_n >= cfg.max_records or self.clock() >= self._deadline
                              or (not n and idle_timeout == 0.0)):
            self.flush_pending()
        self.checkpoint_all(force=False)
        if self.health is not None:
            self.health.tick()
        return n

    def flush_pending(self) -> None:
        """Process the pending blocks as one batch."""
        blocks, self._pending, self._pending_n = self._pending, [], 0
        if blocks:
            self._process(blocks)

    def _process(self, blocks: list[RawBlock]) -> None:
        try:
            self._process_batch(blocks)
        except BaseException:
            # engines may have advanced past what is committed: never checkpoint them now;
            # the restart recovers from the last checkpoint and the committed offsets
            self._tainted = True
            self._parts.clear()
            raise

    def _process_batch(self, blocks: list[RawBlock]) -> None:
        t0 = self.clock()
        grouped: dict[TP, list[RawBlock]] = {}
        for b in blocks:
            grouped.setdefault((b.topic, b.partition), []).append(b)
        out = _Outputs()
        stepped = []
        for tp, parts in grouped.items():
            part = self._parts.get(tp)
            if part is not None:
                self._step_partition(part, RawBlock.concat(parts), out)
                stepped.append(part)
        if not out.empty():
            self._publish(out)
        for part in stepped:
            self._checkpoint_if_due(part)
        self._update_ready()
        if self.metrics is not None:
            self.metrics.batch_latency.observe(self.clock() - t0)
            self.metrics.batch_records.observe(sum(len(b) for b in blocks))

    def _publish(self, out: _Outputs) -> None:
        self.sink.begin()
        self.sink.write(out.alerts, out.dead, out.events)
        self.sink.write_decisions(out.decisions)
        self.sink.commit(out.offsets, self.source)
        if self.metrics is not None:
            self._count_outputs(out)

    def _count_outputs(self, out: _Outputs) -> None:
        m = self.metrics
        assert m is not None
        for a in out.alerts:
            p = a.position or SourcePosition("", 0, 0)
            m.alerts.labels(p.topic, str(p.partition)).inc()
        for d in out.dead:
            p = d.original.position
            m.dead_letters.labels(p.topic, str(p.partition), d.reason).inc()
        for e, p, _ in out.events:
            m.drift_events.labels(p.topic, str(p.partition), e.kind).inc()

    # ------------------------------------------------------------------ one partition
    def _step_partition(self, part: _Partition, block: RawBlock, out: _Outputs) -> None:
        block = block.tail(bisect.bisect_left(block.offsets, part.position))
        if not len(block):
            return
        decoded = self._decode(block)
        result = None
        if len(decoded.batch):
            if part.engine is None:
                part.engine = self._new_engine()
            result = part.engine.step(decoded.batch)
        live = part.publish_from
        _collect(part, block, decoded, result, live, self.wall(), out)
        part.position = block.offsets[-1] + 1
        part.since_checkpoint += len(block)
        if part.position > live:
            out.offsets[part.tp] = part.position
        self._observe(part, block, result)

    def _decode(self, block: RawBlock) -> Decoded:
        if self._decoder is None:
            self._names = self._names or infer_feature_names(block, self.settings.record)
            if self._names is None:  # nothing decodable yet: every message is a dead letter
                return all_dead(block, "no_features", "no feature names known yet")
            self._decoder = Decoder(self._names, self.settings.record,
                                    self.settings.engine.features.missing)
            log.info("feature_names", names=list(self._names))
        return self._decoder.decode(block)

    def _new_engine(self) -> EngineLike:
        assert self.make_engine is not None and self._names is not None
        return self.make_engine(self._names)

    def _observe(self, part: _Partition, block: RawBlock, result: StepResult | None) -> None:
        m = self.metrics
        if m is None:
            return
        labels = (part.topic, str(part.partition))
        m.records_in.labels(*labels).inc(len(block))
        if result is not None and len(result):
            m.observe_scores(part.topic, part.partition, result.scores,
                             float(result.thresholds[-1]))
        lag = self.source.lag(part.tp, part.position)
        if lag is not None:
            m.lag.labels(*labels).set(lag)

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_if_due(self, part: _Partition) -> None:
        cfg = self.settings.checkpoint
        due = (part.since_checkpoint >= cfg.interval_records
               or self.clock() - part.last_checkpoint >= cfg.interval_s)
        if due and part.position != part.saved_position:
            self._checkpoint(part)

    def checkpoint_all(self, force: bool) -> None:
        """Checkpoint every partition that is due (``force``: every one with new records)."""
        for part in list(self._parts.values()):
            if force and part.position != part.saved_position:
                self._checkpoint(part)
            elif not force:
                self._checkpoint_if_due(part)
            if self.metrics is not None:
                age = self.clock() - part.last_checkpoint
                self.metrics.checkpoint_age.labels(part.topic, str(part.partition)).set(age)

    def _checkpoint(self, part: _Partition) -> None:
        if self._tainted:
            return
        eng = part.engine
        meta = {"records_seen": eng.records_seen, "model_version": eng.model_version} if eng else {}
        self.store.save(Checkpoint(part.topic, part.partition, part.position,
                                   eng.snapshot() if eng else None, self._names or (),
                                   meta=meta))
        part.saved_position = part.position
        part.since_checkpoint = 0
        part.last_checkpoint = self.clock()

    # ------------------------------------------------------------------ rebalance
    def on_assign(self, assignments: Sequence[Assignment]) -> Mapping[TP, int]:
        """Restore each partition from its checkpoint; return where to start reading."""
        starts = {}
        for a in assignments:
            part = self._restore(a)
            self._parts[part.tp] = part
            starts[part.tp] = part.position
            log.info("partition_ready", topic=a.topic, partition=a.partition,
                     start=part.position, publish_from=part.publish_from,
                     catch_up=part.publish_from - part.position, restored=part.engine is not None)
        self._update_ready()
        return starts

    def _update_ready(self) -> None:
        """Ready once assigned and no partition is catching up (replaying up to its committed
        offset without publishing): until then its alerts are not live."""
        if self.health is not None:
            behind = [p for p in self._parts.values() if p.position < p.publish_from]
            self.health.ready = not behind

    def _load(self, a: Assignment) -> tuple[Checkpoint | None, EngineLike | None]:
        """The newest checkpoint whose engine restores (older ones when it does not)."""
        for ckpt in self.store.valid(a.topic, a.partition):
            if ckpt.engine is None:
                return ckpt, None
            assert self.restore_engine is not None
            try:
                return ckpt, self.restore_engine(ckpt.engine)
            except ConfigMismatchError as exc:
                if self.settings.checkpoint.on_config_mismatch != "reset":
                    raise  # stops the service: the operator decides (checkpoint inspect)
                log.warning("checkpoint_config_mismatch", topic=a.topic, partition=a.partition,
                            fields=list(exc.fields), action="reset")
                return None, None
            except SnapshotError as exc:
                log.warning("checkpoint_unusable", topic=a.topic, partition=a.partition,
                            position=ckpt.position, error=str(exc))
        return None, None

    def _restore(self, a: Assignment) -> _Partition:
        ckpt, engine = self._load(a)
        if ckpt is None:
            start = a.committed if a.committed is not None else a.low
            if a.committed is not None:
                log.warning("no_checkpoint_fresh_engine", topic=a.topic, partition=a.partition,
                            committed=a.committed)
            part = _Partition(a.topic, a.partition, start, start, last_checkpoint=self.clock())
            self._checkpoint(part)  # the origin: a restart replays from here
            return part
        self._adopt_names(ckpt)
        committed = a.committed if a.committed is not None else ckpt.position
        if committed < ckpt.position:
            log.warning("checkpoint_ahead_of_commit", topic=a.topic, partition=a.partition,
                        checkpoint=ckpt.position, committed=committed)
        return _Partition(a.topic, a.partition, ckpt.position, max(committed, ckpt.position),
                          engine, last_checkpoint=self.clock(), saved_position=ckpt.position)

    def _adopt_names(self, ckpt: Checkpoint) -> None:
        if not ckpt.feature_names:
            return
        if self._names is not None and self._names != ckpt.feature_names:
            log.warning("checkpoint_feature_names_differ", configured=list(self._names),
                        checkpoint=list(ckpt.feature_names))
        if self._decoder is None:
            self._names = ckpt.feature_names

    def on_revoke(self, partitions: Sequence[TP]) -> None:
        """Drop uncommitted input of the partitions, checkpoint them, hand them over."""
        self._drop(partitions, checkpoint=True)

    def on_lost(self, partitions: Sequence[TP]) -> None:
        """Partitions already belong to someone else: drop them without a checkpoint."""
        self._drop(partitions, checkpoint=False)

    def _drop(self, partitions: Sequence[TP], checkpoint: bool) -> None:
        gone = set(partitions)
        self._pending = [b for b in self._pending if (b.topic, b.partition) not in gone]
        self._pending_n = sum(len(b) for b in self._pending)
        for tp in gone:
            part = self._parts.pop(tp, None)
            if part is not None and checkpoint and part.position != part.saved_position:
                self._checkpoint(part)
            if self.metrics is not None:
                self.metrics.forget(*tp)
        self._update_ready()


def _collect(part: _Partition, block: RawBlock, decoded: Decoded, result: StepResult | None,
             live: int, now: float, out: _Outputs) -> None:
    """Add the live (offset >= ``live``) outputs of one partition's step to ``out``."""
    offsets = decoded.offsets
    alerts: list[int] = []
    dead = [d for d in decoded.dead_letters if d.original.position.offset >= live]
    if result is not None:
        alerts = _alerts(part, decoded, result, live, now, out)
        dead = _rejected(block, decoded, result, live) + dead
        versions = result.model_versions
        out.events += [(e, SourcePosition(part.topic, part.partition, int(offsets[e.batch_index])),
                        result.model_version if versions is None
                        else int(versions[e.batch_index]))
                       for e in result.drift_events if offsets[e.batch_index] >= live]
    out.dead += dead
    end = block.offsets[-1] + 1
    if end > live:
        # a partition is collected once per batch: its dead letters are the ones added here
        dead_offsets = sorted(d.original.position.offset for d in dead)
        out.decisions.append(Decision(part.topic, part.partition, max(block.offsets[0], live),
                                      end, tuple(alerts), tuple(dead_offsets)))


def _alerts(part: _Partition, decoded: Decoded, result: StepResult, live: int, now: float,
            out: _Outputs) -> list[int]:
    alerts = build_alerts(decoded, result, part.topic, part.partition, now, from_offset=live)
    out.alerts.extend(alerts)
    return [a.position.offset for a in alerts if a.position is not None]


def _rejected(block: RawBlock, decoded: Decoded, result: StepResult, live: int
              ) -> list[DeadLetter]:
    out = []
    for row, reason in result.rejected:
        offset = int(decoded.offsets[row])
        if offset >= live:
            i = bisect.bisect_left(block.offsets, offset)
            out.append(dead_letter(block, i, f"rejected:{reason}", "rejected by the engine"))
    return out


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGTERM/SIGINT set ``stop``: the loop finishes its batch, commits, checkpoints, exits."""

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("shutdown_requested", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def tune_gc() -> None:
    """Freeze start-up objects and collect young garbage less often.

    The hot loop allocates many short-lived objects (messages, dicts, small arrays) and
    Python's default thresholds collect every 700 allocations, which costs a large share
    of the loop (PERFORMANCE_NOTES). Called once by ``run_service`` (process-wide setting).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def build_runner(settings: Settings, decisions_topic: str | None = None,
                 metrics: ServiceMetrics | None = None, health: Health | None = None,
                 engines: EngineFactory | None = None) -> Runner:
    """The production runner: Kafka group source, Kafka sink, checkpoint store; ``engines``
    (make, restore) defaults to the real engine, warmed up when the runner opens."""
    make, restore = engines or (None, None)
    from stream_ae.sinks.kafka import KafkaSink
    from stream_ae.sources.kafka import KafkaGroupSource

    return Runner(settings, KafkaGroupSource(settings.kafka, None),
                  KafkaSink(settings.kafka, decisions_topic), build_store(settings),
                  metrics=metrics, health=health, make_engine=make, restore_engine=restore)


def run_service(settings: Settings, decisions_topic: str | None = None,
                stop: threading.Event | None = None) -> None:
    """Wire the Kafka adapters, checkpoint store, metrics endpoint and signals; run until stopped.

    The prometheus registry is created here, per process (no import-time state).
    """
    from prometheus_client import CollectorRegistry

    from stream_ae.metrics import MetricsServer

    # one torch thread leaves the other core to librdkafka (PERFORMANCE_NOTES); must precede
    # the first torch import, which happens when the first engine is built
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        install_signal_handlers(stop)
    registry = CollectorRegistry()
    health = Health()
    server = None
    if settings.metrics.enabled:
        server = MetricsServer(registry, health, settings.metrics.host, settings.metrics.port)
        log.info("metrics_listening", host=settings.metrics.host, port=server.start())
    metrics = ServiceMetrics(registry)
    log.info("service_starting", group_id=settings.kafka.group_id,
             topics=list(settings.kafka.input_topics), guarantee=settings.kafka.guarantee)
    engines = prewarm_engine(settings)  # before the GC freeze: torch's import state is frozen
    tune_gc()
    try:
        _run_restarting(settings, decisions_topic, metrics, health, stop, engines)
    finally:
        if server is not None:
            server.stop()


def _run_restarting(settings: Settings, decisions_topic: str | None, metrics: ServiceMetrics,
                    health: Health, stop: threading.Event, engines: EngineFactory | None = None,
                    backoff_s: float = 2.0) -> None:
    """Run; after a Kafka failure (e.g. a transaction lost in a broker outage) start over
    with fresh clients: engines are restored from their checkpoints and replay up to the
    committed offsets, exactly as after a process restart. A fenced instance stops."""
    while not stop.is_set():
        runner = build_runner(settings, decisions_topic, metrics, health, engines)
        try:
            runner.run(stop)
            return
        except FencedError:
            raise
        except (SinkError, SourceError, StoreError) as exc:
            log.error("service_restarting", error=str(exc), backoff_s=backoff_s)
            stop.wait(backoff_s)
