"""The Sink protocol every output adapter implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from stream_ae.records import Alert, DeadLetter, DriftEvent


@runtime_checkable
class Sink(Protocol):
    """Takes alerts, dead letters and drift events; ``flush`` makes them durable."""

    def write(
        self,
        alerts: Sequence[Alert] = (),
        dead_letters: Sequence[DeadLetter] = (),
        events: Sequence[DriftEvent] = (),
    ) -> None: ...

    def flush(self, timeout: float = 10.0) -> None: ...

    def close(self) -> None: ...
