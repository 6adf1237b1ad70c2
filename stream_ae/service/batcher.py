"""When a batch is due: a deadline accumulator over polled blocks. Pure (injected clock)."""

from __future__ import annotations

from collections.abc import Callable, Collection

from stream_ae.records import RawBlock
from stream_ae.types import TopicPartition as TP


class Batcher:
    """Accumulates polled blocks until ``max_records`` or ``max_wait_s`` after the first one.

    Parameters
    ----------
    max_records
        A batch is due once it holds this many records.
    max_wait_s
        ... or this long after its first record arrived (the latency bound).
    clock
        Monotonic seconds.

    Examples
    --------
    >>> from stream_ae.testing import FixedClock
    >>> clock = FixedClock()
    >>> b = Batcher(max_records=10, max_wait_s=0.2, clock=clock)
    >>> b.add([RawBlock("t", 0, [0, 1], [b"a", b"b"], [None] * 2, [None] * 2)])
    >>> (b.due(), b.want(), b.wait())
    (False, 8, 0.2)
    >>> clock.advance(0.2); b.due()
    True
    >>> [blk.offsets for blk in b.take()], b.pending
    ([[0, 1]], 0)
    """

    def __init__(self, max_records: int, max_wait_s: float, clock: Callable[[], float]) -> None:
        self.max_records = max_records
        self.max_wait_s = max_wait_s
        self.clock = clock
        self._blocks: list[RawBlock] = []
        self._n = 0
        self._deadline = 0.0

    @property
    def pending(self) -> int:
        """Records waiting in the batch."""
        return self._n

    def want(self) -> int:
        """How many more records the batch takes."""
        return max(0, self.max_records - self._n)

    def wait(self) -> float:
        """How long the next poll may wait before the batch is due (0 once it is)."""
        return max(0.0, self._deadline - self.clock())

    def add(self, blocks: list[RawBlock]) -> None:
        """Add polled blocks; the first record of an empty batch starts its deadline."""
        n = sum(len(b) for b in blocks)
        if not n:
            return
        if not self._n:
            self._deadline = self.clock() + self.max_wait_s
        self._blocks += blocks
        self._n += n

    def due(self) -> bool:
        """True when the batch is full or its deadline passed (never when empty)."""
        return bool(self._n) and (self._n >= self.max_records or self.clock() >= self._deadline)

    def take(self) -> list[RawBlock]:
        """The batch's blocks, emptying it."""
        out, self._blocks, self._n = self._blocks, [], 0
        return out

    def drop(self, partitions: Collection[TP]) -> None:
        """Forget the blocks of ``partitions`` (revoked or lost: their records are re-read
        by the next owner from the committed offsets)."""
        self._blocks = [b for b in self._blocks if (b.topic, b.partition) not in partitions]
        self._n = sum(len(b) for b in self._blocks)
