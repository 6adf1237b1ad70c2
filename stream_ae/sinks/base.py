"""The protocol every batch sink implements (``KafkaSink``, ``MemorySink``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from stream_ae.outputs import Outputs
from stream_ae.types import TopicPartition as TP


@runtime_checkable
class BatchSink(Protocol):
    """Publishes one batch's outputs atomically with the input offsets they cover.

    ``begin`` opens the batch, ``write`` queues outputs, ``commit(offsets)`` makes them
    durable together with ``offsets`` (one Kafka transaction in exactly-once mode),
    ``abort`` discards them.
    """

    def open(self) -> None: ...

    def begin(self) -> None: ...

    def write(self, out: Outputs) -> None: ...

    def commit(self, offsets: Mapping[TP, int], timeout: float = 20.0) -> None: ...

    def abort(self) -> None: ...

    def flush(self, timeout: float = 10.0) -> None: ...

    def close(self) -> None: ...
