"""An in-memory consumer group of one member, with the contract of
:class:`~stream_ae.sources.kafka.KafkaGroupSource` (tests and examples; no Kafka)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from stream_ae.records import RawBlock
from stream_ae.sources.base import (
    Assigned,
    Assignment,
    Lost,
    OwnershipChange,
    Revoked,
    StartPositions,
)
from stream_ae.types import TopicPartition as TP


class MemoryGroupSource:
    """A one-member consumer group over in-memory partitions.

    ``open()`` assigns every partition (asking ``start_positions`` where to start);
    ``committer().commit`` records offsets as a group coordinator would;
    ``revoke``/``assign``/``lose`` simulate rebalances.

    Examples
    --------
    >>> src = MemoryGroupSource({("t", 0): [b"a", b"b"]})
    >>> src.open()
    >>> ([b.offsets for b in src.poll_blocks(10, 0.0)], src.take_changes())
    ([[0, 1]], [Assigned(partitions=(('t', 0),))])
    """

    def __init__(self, data: Mapping[TP, Sequence[bytes | None]],
                 committed: dict[TP, int] | None = None, max_per_poll: int = 1 << 30,
                 start_positions: StartPositions | None = None) -> None:
        self.data = data
        # the group coordinator's offsets: a dict handed in is shared (and updated by
        # ``committer().commit``), so the next member of the group starts where this one ended
        self.committed = committed if committed is not None else {}
        self.max_per_poll = max_per_poll
        self.start_positions = start_positions
        self._positions: dict[TP, int] = {}
        self._changes: list[OwnershipChange] = []

    def open(self) -> None:
        self.assign(list(self.data))

    def assign(self, tps: Sequence[TP]) -> None:
        """Assign ``tps``, starting where ``start_positions`` says."""
        assignments = [Assignment(t, p, self.committed.get((t, p)), 0) for t, p in tps]
        starts = self.start_positions(assignments) if self.start_positions else {}
        for tp in tps:
            self._positions[tp] = starts.get(tp, self.committed.get(tp, 0))
        self._changes.append(Assigned(tuple(tps)))

    def revoke(self, tps: Sequence[TP]) -> None:
        self._changes.append(Revoked(tuple(tps)))
        for tp in tps:
            self._positions.pop(tp, None)

    def lose(self, tps: Sequence[TP]) -> None:
        self._changes.append(Lost(tuple(tps)))
        for tp in tps:
            self._positions.pop(tp, None)

    def take_changes(self) -> list[OwnershipChange]:
        out, self._changes = self._changes, []
        return out

    def poll_blocks(self, max_n: int, timeout: float) -> list[RawBlock]:
        out = []
        budget = min(max_n, self.max_per_poll)
        for tp, pos in self._positions.items():
            rows = list(self.data[tp][pos:pos + budget])
            if rows:
                offs = list(range(pos, pos + len(rows)))
                out.append(RawBlock(tp[0], tp[1], offs, rows, [None] * len(rows),
                                    [None] * len(rows)))
                self._positions[tp] = pos + len(rows)
                budget -= len(rows)
        return out

    def committer(self) -> MemoryCommitter:
        return MemoryCommitter(self.committed)

    def lag(self, tp: TP, position: int) -> int | None:
        return len(self.data[tp]) - position

    def close(self) -> None:
        self.revoke(list(self._positions))


class MemoryCommitter:
    """Records committed offsets in a dict (the memory source's group coordinator)."""

    def __init__(self, committed: dict[TP, int]) -> None:
        self.committed = committed

    def group_metadata(self) -> object:
        return None

    def commit(self, offsets: Mapping[TP, int]) -> None:
        self.committed.update(offsets)
