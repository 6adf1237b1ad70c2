"""When a batch is due: a deadline accumulator over polled blocks. Pure (injected clock)."""

from __future__ import annotations

from collections.abc import Callable, Collection

from stream_ae.records import RawBlock
from stream_ae.types import TopicPartition as TP


class Batcher:
    """Accumulates polled blocks until ``max_records`` or ``max_wait_s`` after the first one,
    or (``adaptive``) until the source has nothing more fetched.

    Adaptive batching takes what the load gives: when input is slow, the consumer's
    prefetch queue runs dry after a few records and the batch goes at once (latency is one
    processing cycle, not ``max_wait_s``); under load, the records that arrived while the
    last batch was processed and committed are waiting, so batches fill up to
    ``max_records`` and each transaction covers many records (throughput). Results do not
    depend on how records are split into batches, so this changes no decision.

    Parameters
    ----------
    max_records
        A batch is due once it holds this many records.
    max_wait_s
        ... or this long after its first record arrived (the latency bound).
    clock
        Monotonic seconds.
    adaptive
        ... or as soon as a poll finds nothing more fetched (see :meth:`add`).

    Examples
    --------
    >>> from stream_ae.testing import FixedClock
    >>> clock = FixedClock()
    >>> b = Batcher(max_records=10, max_wait_s=0.2, clock=clock, adaptive=False)
    >>> b.add([RawBlock("t", 0, [0, 1], [b"a", b"b"], [None] * 2, [None] * 2)])
    >>> (b.due(), b.want(), b.wait())
    (False, 8, 0.2)
    >>> clock.advance(0.2); b.due()
    True
    >>> [blk.offsets for blk in b.take()], b.pending
    ([[0, 1]], 0)
    >>> b = Batcher(max_records=10, max_wait_s=0.2, clock=clock)
    >>> b.add([RawBlock("t", 0, [5], [b"a"], [None], [None])], drained=True)
    >>> (b.due(), b.wait())
    (True, 0.0)
    """

    def __init__(self, max_records: int, max_wait_s: float, clock: Callable[[], float],
                 adaptive: bool = True) -> None:
        self.max_records = max_records
        self.max_wait_s = max_wait_s
        self.clock = clock
        self.adaptive = adaptive
        self._blocks: list[RawBlock] = []
        self._n = 0
        self._deadline = 0.0
        self._drained = False

    @property
    def pending(self) -> int:
        """Records waiting in the batch."""
        return self._n

    def want(self) -> int:
        """How many more records the batch takes."""
        return max(0, self.max_records - self._n)

    def wait(self) -> float:
        """How long the next poll may wait before the batch is due (0 once it is)."""
        if self.due():
            return 0.0
        return max(0.0, self._deadline - self.clock())

    def add(self, blocks: list[RawBlock], drained: bool = False) -> None:
        """Add polled blocks; the first record of an empty batch starts its deadline.
        ``drained``: the poll that gave them returned fewer records than asked for without
        waiting, so nothing more is fetched (adaptive mode: the batch is due)."""
        n = sum(len(b) for b in blocks)
        self._drained = drained and self.adaptive
        if not n:
            return
        if not self._n:
            self._deadline = self.clock() + self.max_wait_s
        self._blocks += blocks
        self._n += n

    def due(self) -> bool:
        """True when the batch is full, its deadline passed or (adaptive) the input is
        drained; never when empty."""
        return bool(self._n) and (self._n >= self.max_records or self._drained
                                  or self.clock() >= self._deadline)

    def take(self) -> list[RawBlock]:
        """The batch's blocks, emptying it."""
        out, self._blocks, self._n, self._drained = self._blocks, [], 0, False
        return out

    def drop(self, partitions: Collection[TP]) -> None:
        """Forget the blocks of ``partitions`` (revoked or lost: their records are re-read
        by the next owner from the committed offsets)."""
        self._blocks = [b for b in self._blocks if (b.topic, b.partition) not in partitions]
        self._n = sum(len(b) for b in self._blocks)
