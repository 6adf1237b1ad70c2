"""A list-backed sink for tests and backtests: keeps everything it is given, in order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from stream_ae.records import Alert, DeadLetter, DriftEvent, SourcePosition
from stream_ae.serde import Decision
from stream_ae.sinks.kafka import OffsetCommitter

TP = tuple[str, int]


class MemorySink:
    """Collects outputs in lists; ``commit`` moves the pending ones to the committed lists.

    Mirrors the transactional contract of the Kafka sink: nothing is visible in
    ``alerts``/``dead_letters``/``events``/``decisions`` before ``commit``; ``abort`` drops it.

    Examples
    --------
    >>> sink = MemorySink()
    >>> sink.write(dead_letters=[])
    >>> sink.commit({("t", 0): 5}, None)
    >>> sink.offsets
    {('t', 0): 5}
    """

    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self.dead_letters: list[DeadLetter] = []
        self.events: list[tuple[DriftEvent, SourcePosition, int]] = []
        self.decisions: list[Decision] = []
        self.offsets: dict[TP, int] = {}
        self.commits = 0
        self._pending: tuple[list[Alert], list[DeadLetter], list[tuple[DriftEvent,
                                                                       SourcePosition, int]],
                             list[Decision]] = ([], [], [], [])

    def begin(self) -> None:
        """Nothing to open: pending outputs already wait for ``commit``."""

    def write(self, alerts: Sequence[Alert] = (), dead_letters: Sequence[DeadLetter] = (),
              events: Sequence[tuple[DriftEvent, SourcePosition, int]] = ()) -> None:
        self._pending[0].extend(alerts)
        self._pending[1].extend(dead_letters)
        self._pending[2].extend(events)

    def write_decisions(self, decisions: Sequence[Decision]) -> None:
        self._pending[3].extend(decisions)

    def commit(self, offsets: Mapping[TP, int], source: OffsetCommitter | None,
               timeout: float = 60.0) -> None:
        """Publish the pending outputs and record ``offsets`` (and pass them to ``source``)."""
        a, d, e, dec = self._pending
        self.alerts += a
        self.dead_letters += d
        self.events += e
        self.decisions += dec
        self._pending = ([], [], [], [])
        self.offsets.update(offsets)
        self.commits += 1
        if source is not None and offsets:
            source.commit(offsets)

    def abort(self) -> None:
        self._pending = ([], [], [], [])

    def flush(self, timeout: float = 10.0) -> None:
        """Nothing is buffered outside ``_pending``."""

    def close(self) -> None:
        self.abort()
