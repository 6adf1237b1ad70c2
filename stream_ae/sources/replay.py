"""Replaying a historical topic (a :class:`~stream_ae.sources.base.BlockReader`).

``TopicReplaySource`` reads every partition of a topic from a
start (the beginning, an offset, or a time) to an end (the end of each partition,
or a time) with an isolated assign-mode reader: no consumer group, no commits.
It wraps :class:`~stream_ae.sources.kafka.KafkaTopicReader`, the only consumer code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import structlog

from stream_ae.config import KafkaConfig
from stream_ae.decode import parse_time_value
from stream_ae.errors import ConfigError, DecodeError, SourceError
from stream_ae.records import RawBlock, RawMessage
from stream_ae.sources.kafka import KafkaTopicReader
from stream_ae.types import TopicPartition as TP

log = structlog.get_logger()
_OFFSET_LIMIT = 1_000_000_000  # digits below this are offsets, above epoch seconds


@dataclass(frozen=True, slots=True)
class ReplayStart:
    """Where a replay starts: ``beginning``, an ``offset`` on every partition, or a ``time``."""

    kind: Literal["beginning", "offset", "time"] = "beginning"
    value: float = 0.0


def parse_start(text: str | None) -> ReplayStart:
    """``beginning``, an offset (digits below 1e9) or a time (ISO-8601 or epoch seconds/ms).

    >>> parse_start("beginning"), parse_start("1500")
    (ReplayStart(kind='beginning', value=0.0), ReplayStart(kind='offset', value=1500.0))
    >>> parse_start("2025-01-01T00:00:00Z")
    ReplayStart(kind='time', value=1735689600.0)
    """
    if text is None or text.strip().lower() in ("", "beginning", "earliest"):
        return ReplayStart()
    text = text.strip()
    if text.isdigit() and int(text) < _OFFSET_LIMIT:
        return ReplayStart("offset", float(int(text)))
    return ReplayStart("time", parse_time(text))


def parse_end(text: str | None) -> float | None:
    """``end`` (None: the end of each partition) or a time; returns epoch seconds.

    >>> parse_end("end") is None, parse_end("1735689600")
    (True, 1735689600.0)
    """
    if text is None or text.strip().lower() in ("", "end", "latest"):
        return None
    return parse_time(text.strip())


def parse_time(text: str) -> float:
    """Epoch seconds (milliseconds above 1e11) or ISO-8601 text -> epoch seconds."""
    value: float | str
    try:
        value = float(text)
    except ValueError:
        value = text
    try:
        return parse_time_value(value)
    except DecodeError:
        raise ConfigError(f"not a time: {text!r} (use ISO-8601 or epoch seconds)") from None


class TopicReplaySource:
    """Every partition of ``topic`` from ``start`` to ``end`` (seconds; None: partition ends).

    Records stamped before a start time are skipped too (``offsets_for_times`` may land
    early on brokers that ignore record timestamps), and records at or after ``end`` are
    dropped; reading stops when every partition reported its end (partition EOF).

    Parameters
    ----------
    kafka
        Connection settings; nothing is committed and no group is joined.
    topic
        The historical topic.
    start
        Where to start; see :func:`parse_start`.
    end
        Epoch seconds to stop at, or None for the current end of every partition.
    start_offsets
        Per-partition offsets (a checkpoint's positions) that override ``start``.

    Examples
    --------
    >>> src = TopicReplaySource(KafkaConfig(), "sensors", parse_start("10"))
    >>> src.done
    False
    """

    def __init__(self, kafka: KafkaConfig, topic: str, start: ReplayStart = ReplayStart(),
                 end: float | None = None, start_offsets: Mapping[int, int] | None = None
                 ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.start = start
        self.end = end
        self.start_offsets = start_offsets
        self._reader: KafkaTopicReader | None = None
        self._dropped = 0

    def open(self) -> None:
        """Assign every partition at its start position."""
        self._reader = self._make_reader()
        self._reader.open()
        log.info("replay_opened", topic=self.topic, start=self.start.kind,
                 start_value=self.start.value, end=self.end)

    def _make_reader(self) -> KafkaTopicReader:
        if self.start_offsets is not None:
            return KafkaTopicReader(self.kafka, self.topic, start_offsets=self.start_offsets)
        if self.start.kind == "time":
            return KafkaTopicReader(self.kafka, self.topic,
                                    start_timestamp_ms=int(self.start.value * 1000))
        if self.start.kind == "offset":
            return KafkaTopicReader(self.kafka, self.topic,
                                    default_offset=int(self.start.value))
        return KafkaTopicReader(self.kafka, self.topic)

    @property
    def reader(self) -> KafkaTopicReader:
        if self._reader is None:
            raise SourceError("replay source is not open")
        return self._reader

    @property
    def done(self) -> bool:
        """Every partition reached its end."""
        return self._reader is not None and self._reader.done

    @property
    def dropped_after_end(self) -> int:
        return self._dropped

    def poll(self, max_n: int, timeout: float) -> list[RawMessage]:
        msgs = self.reader.poll(max_n, timeout)
        if self.end is None:
            return msgs
        end_ms = self.end * 1000
        kept = [m for m in msgs if m.timestamp_ms is None or m.timestamp_ms < end_ms]
        self._dropped += len(msgs) - len(kept)
        return kept

    def poll_blocks(self, max_n: int, timeout: float) -> list[RawBlock]:
        """Like ``poll``, grouped into one columnar block per partition (offset order)."""
        by_partition: dict[int, list[RawMessage]] = {}
        for m in self.poll(max_n, timeout):
            by_partition.setdefault(m.position.partition, []).append(m)
        return [RawBlock.from_messages(ms) for ms in by_partition.values()]

    def position(self) -> Mapping[TP, int]:
        return self.reader.position()

    def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
