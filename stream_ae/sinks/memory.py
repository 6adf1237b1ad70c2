"""A list-backed sink with the Kafka sink's transactional contract (tests; no Kafka)."""

from __future__ import annotations

from collections.abc import Mapping

from stream_ae.outputs import Decision, EventRecord, Outputs
from stream_ae.records import Alert, DeadLetter, Incident
from stream_ae.sources.base import OffsetCommitter
from stream_ae.types import TopicPartition as TP


class MemorySink:
    """Collects outputs in lists; ``commit`` moves the pending ones to the committed lists.

    Nothing is visible in ``alerts``/``dead_letters``/``events``/``decisions`` before
    ``commit``; ``abort`` drops it; offsets go to the ``committer`` (when given).

    Examples
    --------
    >>> sink = MemorySink()
    >>> sink.write(Outputs())
    >>> sink.commit({("t", 0): 5})
    >>> sink.offsets
    {('t', 0): 5}
    """

    def __init__(self, committer: OffsetCommitter | None = None) -> None:
        self.committer = committer
        self.alerts: list[Alert] = []
        self.dead_letters: list[DeadLetter] = []
        self.events: list[EventRecord] = []
        self.decisions: list[Decision] = []
        self.incidents: list[Incident] = []
        self.offsets: dict[TP, int] = {}
        self.commits = 0
        self._pending = Outputs()

    def open(self) -> None:
        """Nothing to connect."""

    def begin(self) -> None:
        """Nothing to open: pending outputs already wait for ``commit``."""

    def write(self, out: Outputs) -> None:
        self._pending.extend(out)

    def commit(self, offsets: Mapping[TP, int], timeout: float = 60.0) -> None:
        """Publish the pending outputs and record ``offsets`` (and pass them on)."""
        p, self._pending = self._pending, Outputs()
        self.alerts += p.alerts
        self.dead_letters += p.dead_letters
        self.events += p.events
        self.decisions += p.decisions
        self.incidents += p.incidents
        self.offsets.update(offsets)
        self.commits += 1
        if self.committer is not None and offsets:
            self.committer.commit(offsets)

    def abort(self) -> None:
        self._pending = Outputs()

    def flush(self, timeout: float = 10.0) -> None:
        """Nothing is buffered outside the pending outputs."""

    def close(self) -> None:
        self.abort()
