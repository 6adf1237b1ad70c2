"""Checkpoints <-> live partitions: where a partition starts, from where it publishes,
and when its state is saved.

On assignment a partition restores the newest checkpoint whose engine restores (older
ones when it does not) and starts reading at the checkpoint's position; offsets below the
committed offset were published before, so they are replayed without publishing
(catch-up). A checkpoint is saved only for state whose outputs are committed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog

from stream_ae.checkpoint import Checkpoint
from stream_ae.checkpoint.base import Store
from stream_ae.config import CheckpointConfig
from stream_ae.decode import FeatureSchema
from stream_ae.errors import ConfigMismatchError, SnapshotError
from stream_ae.processor import Detector, MakeEngine, PartitionProcessor
from stream_ae.sources.base import Assignment
from stream_ae.types import TopicPartition as TP

log = structlog.get_logger()

#: rebuilds an engine from snapshot bytes (``SnapshotError`` when it cannot)
RestoreEngine = Callable[[bytes], Detector]


@dataclass
class LivePartition:
    """A partition this instance owns: its processor and its checkpoint bookkeeping."""

    processor: PartitionProcessor
    publish_from: int  # offsets below this were published before: replay silently
    since_checkpoint: int = 0
    last_checkpoint: float = 0.0
    saved_position: int = -1

    @property
    def tp(self) -> TP:
        return (self.processor.topic, self.processor.partition)

    @property
    def position(self) -> int:
        return self.processor.position

    @property
    def catching_up(self) -> bool:
        return self.position < self.publish_from


class Restorer:
    """Restores assigned partitions from the checkpoint store and saves their state.

    Parameters
    ----------
    store
        Where checkpoints live.
    schema
        The stream's feature names (a checkpoint's names are adopted when none are set).
    make_engine, restore_engine
        Engine constructors.
    config
        Checkpoint intervals.
    clock
        Monotonic seconds.
    """

    def __init__(self, store: Store, schema: FeatureSchema, make_engine: MakeEngine,
                 restore_engine: RestoreEngine, config: CheckpointConfig,
                 clock: Callable[[], float]) -> None:
        self.store = store
        self.schema = schema
        self.make_engine = make_engine
        self.restore_engine = restore_engine
        self.config = config
        self.clock = clock
        self._ready: dict[TP, LivePartition] = {}
        self.frozen = False  # set after a failed batch: engines may be ahead of the commits

    # ------------------------------------------------------------------ restore
    def start_positions(self, assignments: Sequence[Assignment]) -> Mapping[TP, int]:
        """Restore each assigned partition; return where to start reading it. The restored
        partitions wait in :meth:`take` for the loop."""
        starts = {}
        for a in assignments:
            part = self._restore(a)
            self._ready[part.tp] = part
            starts[part.tp] = part.position
            log.info("partition_ready", topic=a.topic, partition=a.partition,
                     start=part.position, publish_from=part.publish_from,
                     catch_up=part.publish_from - part.position,
                     restored=part.processor.engine is not None)
        return starts

    def take(self, partitions: Sequence[TP]) -> list[LivePartition]:
        """The restored states of newly assigned ``partitions``."""
        return [self._ready.pop(tp) for tp in partitions if tp in self._ready]

    def _load(self, a: Assignment) -> tuple[Checkpoint | None, Detector | None]:
        for ckpt in self.store.valid(a.topic, a.partition):
            if ckpt.engine is None:
                return ckpt, None
            try:
                return ckpt, self.restore_engine(ckpt.engine)
            except ConfigMismatchError as exc:
                if self.config.on_config_mismatch != "reset":
                    raise  # stops the service: the operator decides (checkpoint inspect)
                log.warning("checkpoint_config_mismatch", topic=a.topic, partition=a.partition,
                            fields=list(exc.fields), action="reset")
                return None, None
            except SnapshotError as exc:
                log.warning("checkpoint_unusable", topic=a.topic, partition=a.partition,
                            position=ckpt.position, error=str(exc))
        return None, None

    def _restore(self, a: Assignment) -> LivePartition:
        ckpt, engine = self._load(a)
        if ckpt is None:
            start = a.committed if a.committed is not None else a.low
            if a.committed is not None:
                log.warning("no_checkpoint_fresh_engine", topic=a.topic, partition=a.partition,
                            committed=a.committed)
            part = self._live(a, None, start, start)
            self.save(part)  # the origin: a restart replays from here
            return part
        self.schema.adopt(ckpt.feature_names)
        committed = a.committed if a.committed is not None else ckpt.position
        if committed < ckpt.position:
            log.warning("checkpoint_ahead_of_commit", topic=a.topic, partition=a.partition,
                        checkpoint=ckpt.position, committed=committed)
        part = self._live(a, engine, ckpt.position, max(committed, ckpt.position))
        part.saved_position = ckpt.position
        return part

    def _live(self, a: Assignment, engine: Detector | None, start: int, publish_from: int
              ) -> LivePartition:
        proc = PartitionProcessor(a.topic, a.partition, self.schema, self.make_engine, engine,
                                  start)
        return LivePartition(proc, publish_from, last_checkpoint=self.clock())

    # ------------------------------------------------------------------ save
    def due(self, part: LivePartition) -> bool:
        """True when the partition has new state and an interval passed."""
        cfg = self.config
        return part.position != part.saved_position and (
            part.since_checkpoint >= cfg.interval_records
            or self.clock() - part.last_checkpoint >= cfg.interval_s)

    def save(self, part: LivePartition) -> None:
        """Checkpoint the partition's state (only state whose outputs are committed)."""
        if self.frozen:
            return
        eng = part.processor.engine
        meta = {"records_seen": eng.records_seen, "model_version": eng.model_version} if eng else {}
        self.store.save(Checkpoint(part.tp[0], part.tp[1], part.position,
                                   eng.snapshot() if eng else None, self.schema.names or (),
                                   meta=meta))
        part.saved_position = part.position
        part.since_checkpoint = 0
        part.last_checkpoint = self.clock()
