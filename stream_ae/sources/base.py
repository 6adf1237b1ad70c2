"""The Source protocol every input adapter implements."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from stream_ae.records import RawMessage


@runtime_checkable
class Source(Protocol):
    """A stream of raw messages.

    ``position()`` maps ``(topic, partition)`` to the offset of the *next*
    record to read (not the last one read), for every partition this source
    has delivered from or been assigned.
    """

    def poll(self, max_n: int, timeout: float) -> list[RawMessage]: ...

    def position(self) -> Mapping[tuple[str, int], int]: ...

    def close(self) -> None: ...
