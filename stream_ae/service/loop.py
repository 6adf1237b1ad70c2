"""The service loop: it only moves data.

Per cycle: poll the group source into the batcher and apply the ownership changes it
reports; when the batch is due, give each partition's block to its processor, publish the
outputs together with the consumed offsets (``sink.commit``: one transaction in
exactly-once mode), then checkpoint partitions that are due. A checkpoint is written only
after the outputs of the state it covers are committed, so on restart: load the
checkpoint, seek to its position, replay up to the committed offset without publishing
(catch-up), then continue live.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog

from stream_ae.metrics import Health, ServiceMetrics
from stream_ae.outputs import Outputs
from stream_ae.processor import Processed
from stream_ae.records import RawBlock
from stream_ae.service.batcher import Batcher
from stream_ae.service.restore import LivePartition, Restorer
from stream_ae.sinks.base import BatchSink
from stream_ae.sources.base import Assigned, GroupSource, Lost, OwnershipChange, Revoked
from stream_ae.types import TopicPartition as TP

log = structlog.get_logger()


class ServiceLoop:
    """Move records from a group source through per-partition processors to a sink.

    Parameters
    ----------
    source, sink
        The outside world (Kafka adapters in production, memory ones in tests); the source
        must ask ``restorer.start_positions`` where to start assigned partitions.
    restorer
        Restores assigned partitions and saves checkpoints.
    batcher
        Decides when a batch is due.
    metrics, health
        Optional observability hooks.
    wall
        Wall clock for ``detected_at``.

    Examples
    --------
    >>> import tempfile
    >>> from structlog.testing import capture_logs
    >>> from stream_ae.config import Settings
    >>> from stream_ae.service.main import build_loop
    >>> from stream_ae.sinks.memory import MemorySink
    >>> from stream_ae.sources.memory import MemoryGroupSource
    >>> from stream_ae.testing import ThresholdEngine
    >>> settings = Settings(checkpoint={"directory": tempfile.mkdtemp()})
    >>> src = MemoryGroupSource({("s", 0): [b'{"x": 1}', b'{"x": 9}', b"bad"]})
    >>> sink = MemorySink(src.committer())
    >>> loop = build_loop(settings, src, sink, (lambda n: ThresholdEngine(n, limit=5.0),
    ...                                         ThresholdEngine.restore))
    >>> with capture_logs():
    ...     loop.run_until_idle()
    >>> [a.alert_id for a in sink.alerts], [d.reason for d in sink.dead_letters], sink.offsets
    (['s/0/1'], ['invalid_json'], {('s', 0): 3})
    """

    def __init__(self, source: GroupSource, sink: BatchSink, restorer: Restorer,
                 batcher: Batcher, metrics: ServiceMetrics | None = None,
                 health: Health | None = None, wall: Callable[[], float] = time.time) -> None:
        self.source = source
        self.sink = sink
        self.restorer = restorer
        self.batcher = batcher
        self.metrics = metrics
        self.health = health
        self.wall = wall
        self._parts: dict[TP, LivePartition] = {}
        self._committed: dict[TP, int] = {}
        #: committed offsets when a batch failed (None: none failed); see ``run_restarting``
        self.failed_at: dict[TP, int] | None = None

    # ------------------------------------------------------------------ lifecycle
    def run(self, stop: threading.Event) -> None:
        """Process until ``stop`` is set; then finish the batch, commit, checkpoint, close."""
        self.open()
        try:
            while not stop.is_set():
                self.cycle()
            self.flush()
            self.checkpoint_all(force=True)
        finally:
            self.close()

    def run_until_idle(self, idle_polls: int = 2) -> None:
        """Process until the source returns nothing ``idle_polls`` times (tests, backfills)."""
        self.open()
        try:
            idle = 0
            while idle < idle_polls:
                idle = 0 if self.cycle(idle_timeout=0.0) else idle + 1
            self.flush()
            self.checkpoint_all(force=True)
        finally:
            self.close()

    def open(self) -> None:
        """Open the sink, the checkpoint store and the source (assignments may arrive now)."""
        self.sink.open()
        self.restorer.store.open()
        self.source.open()
        self._apply(self.source.take_changes())

    def close(self) -> None:
        """Leave the group (checkpointing clean partitions) and close the sink."""
        try:
            self.source.close()  # leaves the group
            self._apply(self.source.take_changes())  # checkpoints what is clean
        finally:
            self.sink.close()
            self.restorer.store.close()
            if self.health is not None:
                self.health.ready = False
            log.info("runner_stopped")

    def positions(self) -> dict[TP, int]:
        """Next offset per owned partition; everything below it is processed and committed."""
        return {tp: part.position for tp, part in self._parts.items()}

    # ------------------------------------------------------------------ the loop
    def cycle(self, idle_timeout: float = 0.2) -> int:
        """Poll once, process the batch when it is due; return the records polled."""
        b = self.batcher
        if b.pending:  # fill the batch until it is full or due
            want, wait = b.want(), b.wait()
            blocks = self.source.poll_blocks(want, wait)
        else:
            # a poll for n messages waits for all n: wait for the first one only, then take
            # what is already fetched, so the latency bound starts at the first arrival
            blocks = self.source.poll_blocks(1, idle_timeout)
            want, wait = b.max_records - 1, 0.0
            if blocks:
                blocks += self.source.poll_blocks(want, wait)
        got = sum(len(blk) for blk in blocks)
        # nothing more fetched: a zero-wait poll came back short (adaptive batching)
        drained = wait == 0.0 and got - (0 if b.pending else 1) < want
        self._apply(self.source.take_changes())
        blocks = [blk for blk in blocks if (blk.topic, blk.partition) in self._parts]
        n = sum(len(blk) for blk in blocks)
        b.add(blocks, drained=drained)
        if b.due() or (b.pending and not n and idle_timeout == 0.0):
            self.flush()
        self.checkpoint_all(force=False)
        if self.health is not None:
            lags = self._lags()
            self.health.tick(self._backlog(lags), lags)
        return n

    def _lags(self) -> dict[TP, int | None]:
        """Each owned partition's records waiting beyond its position (None: unknown)."""
        return {tp: self.source.lag(tp, part.position) for tp, part in self._parts.items()}

    def _backlog(self, lags: dict[TP, int | None]) -> bool | None:
        """Whether there is input to process: True (pending records or lag > 0), False (all
        owned partitions caught up), None (unknown: nothing owned, or a lag unknown)."""
        if self.batcher.pending:
            return True
        if not lags:
            return None
        if any(lag for lag in lags.values() if lag is not None):
            return True
        return None if None in lags.values() else False

    def flush(self) -> None:
        """Process the pending batch now."""
        blocks = self.batcher.take()
        if blocks:
            try:
                self._process(blocks)
            except BaseException:
                # engines may have advanced past what is committed: never checkpoint them
                # now; the restart recovers from the last checkpoint and the committed offsets
                self.failed_at = dict(self._committed)
                self.restorer.frozen = True
                self._parts.clear()
                raise

    def _process(self, blocks: list[RawBlock]) -> None:
        t0 = time.monotonic()
        grouped: dict[TP, list[RawBlock]] = {}
        for blk in blocks:
            grouped.setdefault((blk.topic, blk.partition), []).append(blk)
        out, offsets, stepped = Outputs(), {}, []
        now = self.wall()
        for tp, parts in grouped.items():
            part = self._parts[tp]
            done = part.processor.process(RawBlock.concat(parts), part.publish_from, now)
            if done is None:
                continue
            out.extend(done.outputs)
            part.since_checkpoint += len(done.block)
            if part.position > part.publish_from:
                offsets[tp] = part.position
            stepped.append(part)
            self._observe(part, done)
        if offsets or not out.empty():
            self.sink.begin()
            self.sink.write(out)
            self.sink.commit(offsets)
            self._committed.update(offsets)
            if self.metrics is not None:
                self.metrics.count_outputs(out)
        for part in stepped:
            if self.restorer.due(part):
                self.restorer.save(part)
        self._update_ready()
        if self.health is not None:  # a replay of what was processed before is not progress
            self.health.progress(self.positions())
        if self.metrics is not None:
            self.metrics.batch_latency.observe(time.monotonic() - t0)
            self.metrics.batch_records.observe(sum(len(blk) for blk in blocks))

    def _observe(self, part: LivePartition, done: Processed) -> None:
        m = self.metrics
        if m is None:
            return
        topic, partition = part.tp
        m.records_in.labels(topic, str(partition)).inc(len(done.block))
        res = done.result
        if res is not None and len(res):
            m.observe_scores(topic, partition, res.scores, float(res.thresholds[-1]))
        lag = self.source.lag(part.tp, part.position)
        if lag is not None:
            m.lag.labels(topic, str(partition)).set(lag)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_all(self, force: bool) -> None:
        """Checkpoint every partition that is due (``force``: every one with new records)."""
        for part in list(self._parts.values()):
            if (force and part.position != part.saved_position) or self.restorer.due(part):
                self.restorer.save(part)
            if self.metrics is not None:
                age = self.restorer.clock() - part.last_checkpoint
                self.metrics.checkpoint_age.labels(part.tp[0], str(part.tp[1])).set(age)

    # ------------------------------------------------------------------ ownership
    def _apply(self, changes: list[OwnershipChange]) -> None:
        for change in changes:
            if isinstance(change, Assigned):
                for part in self.restorer.take(change.partitions):
                    self._parts[part.tp] = part
                    self._committed[part.tp] = part.publish_from
            elif isinstance(change, Revoked | Lost):
                self._drop(change.partitions, checkpoint=isinstance(change, Revoked))
            self._update_ready()

    def _update_ready(self) -> None:
        """Ready once assigned and no partition is catching up (replaying up to its committed
        offset without publishing): until then its alerts are not live."""
        if self.health is not None:
            self.health.ready = not any(p.catching_up for p in self._parts.values())

    def _drop(self, partitions: tuple[TP, ...], checkpoint: bool) -> None:
        gone = set(partitions)
        self.batcher.drop(gone)
        for tp in gone:
            part = self._parts.pop(tp, None)
            if part is not None and checkpoint and part.position != part.saved_position:
                self.restorer.save(part)
            if self.metrics is not None:
                self.metrics.forget(*tp)
