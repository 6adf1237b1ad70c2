"""What sources deliver and the protocols they implement (no client library here).

Two kinds of source feed the one processing path (:mod:`stream_ae.processor`):

* a **group source** (:class:`GroupSource`: ``KafkaGroupSource``, ``MemoryGroupSource``)
  owns partitions of a consumer group, delivers per-partition :class:`RawBlock` s, reports
  ownership changes as values, and hands out the :class:`OffsetCommitter` a sink commits
  through;
* a **block reader** (:class:`BlockReader`: ``TopicReplaySource``, ``FileSource``) reads
  history to its end: a topic from a start to an end, or a table file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from stream_ae.records import RawBlock
from stream_ae.types import TopicPartition as TP


@dataclass(frozen=True)
class Assignment:
    """A partition given to this instance: its committed offset (None if none) and low mark."""

    topic: str
    partition: int
    committed: int | None
    low: int


#: answers where to start reading each newly assigned partition
StartPositions = Callable[[Sequence[Assignment]], Mapping[TP, int]]


@dataclass(frozen=True)
class Assigned:
    """Partitions this instance now owns (their start positions were already decided)."""

    partitions: tuple[TP, ...]


@dataclass(frozen=True)
class Revoked:
    """Partitions handed over in a rebalance: their committed state may be checkpointed."""

    partitions: tuple[TP, ...]


@dataclass(frozen=True)
class Lost:
    """Partitions that already belong to someone else: drop them without a checkpoint."""

    partitions: tuple[TP, ...]


OwnershipChange = Assigned | Revoked | Lost


class OffsetCommitter(Protocol):
    """Commits consumed offsets: what a sink needs of the consumer, and nothing more."""

    def group_metadata(self) -> object:
        """For ``Producer.send_offsets_to_transaction`` (None where there is no group)."""
        ...

    def commit(self, offsets: Mapping[TP, int]) -> None:
        """Commit next-to-read offsets (at-least-once mode)."""
        ...


@runtime_checkable
class GroupSource(Protocol):
    """Partitions of a consumer group, as per-partition blocks in offset order."""

    start_positions: StartPositions | None

    def open(self) -> None: ...

    def poll_blocks(self, max_n: int, timeout: float) -> list[RawBlock]: ...

    def take_changes(self) -> list[OwnershipChange]: ...

    def committer(self) -> OffsetCommitter: ...

    def lag(self, tp: TP, position: int) -> int | None: ...

    def close(self) -> None: ...


@runtime_checkable
class BlockReader(Protocol):
    """History read to its end as per-partition blocks (``done`` once everything is read)."""

    @property
    def done(self) -> bool: ...

    def open(self) -> None: ...

    def poll_blocks(self, max_n: int, timeout: float) -> list[RawBlock]: ...

    def close(self) -> None: ...
