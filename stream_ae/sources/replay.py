"""Replay sources: table files and historical topics, with the :class:`Source` protocol.

``FileSource`` turns each good row of a CSV / JSONL / Parquet file into a JSON
message in the default record layout (key, ts, features, label), positioned at
its line number. ``TopicReplaySource`` reads every partition of a topic from a
start (the beginning, an offset, or a time) to an end (the end of each partition,
or a time) with an isolated assign-mode reader: no consumer group, no commits.
It wraps :class:`~stream_ae.sources.kafka.KafkaTopicReader`, the only consumer code.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

import orjson
import pandas as pd
import structlog

from stream_ae.config import KafkaConfig
from stream_ae.errors import ConfigError, SourceError
from stream_ae.readers import (
    ALL_COLUMNS,
    BadRow,
    Chunk,
    Columns,
    Format,
    TableReader,
    parse_timestamps,
)
from stream_ae.records import RawMessage, SourcePosition
from stream_ae.serde import RawBlock
from stream_ae.sources.kafka import KafkaTopicReader

log = structlog.get_logger()

TP = tuple[str, int]
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
    secs, wrong = parse_timestamps(pd.Series([text], dtype=object))
    if wrong[0] or not math.isfinite(secs[0]):
        raise ConfigError(f"not a time: {text!r} (use ISO-8601 or epoch seconds)")
    return float(secs[0])


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


class FileSource:
    """The good rows of a table file as JSON messages (default record layout), in file order.

    The message offset is the row's line number; bad rows are kept in ``bad_rows``.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
    >>> _ = p.write_text("key,ts,x\\nd1,10,1.5\\nd2,11,oops\\nd1,12,2.5\\n")
    >>> src = FileSource(p)
    >>> [m.value for m in src.poll(10, 0.0)]
    [b'{"key":"d1","ts":10.0,"x":1.5}', b'{"key":"d1","ts":12.0,"x":2.5}']
    >>> (src.position(), [b.line for b in src.bad_rows])
    ({('t.csv', 0): 5}, [3])
    """

    def __init__(self, path: str | pathlib.Path, columns: Columns = ALL_COLUMNS,
                 fmt: Format | None = None, sep: str | None = None, chunk_rows: int = 8192
                 ) -> None:
        self.path = pathlib.Path(path)
        self.columns = columns
        self.fmt = fmt
        self.sep = sep
        self.chunk_rows = chunk_rows
        self._reader: TableReader | None = None
        self._chunks: Iterator[Chunk] | None = None
        self._pending: list[RawMessage] = []
        self._next_line = 1
        self.bad_rows: list[BadRow] = []
        self.done = False

    @property
    def topic(self) -> str:
        return self.path.name

    def poll(self, max_n: int, timeout: float) -> list[RawMessage]:
        """Up to ``max_n`` messages; empty (and ``done``) at the end of the file."""
        if self._chunks is None:
            self._reader = TableReader(self.path, self.columns, self.fmt, self.sep,
                                       self.chunk_rows)
            self._chunks = iter(self._reader)
        while len(self._pending) < max_n and not self.done:
            chunk = next(self._chunks, None)
            if chunk is None:
                self.done = True
                break
            self._pending.extend(self._messages(chunk))
        out, self._pending = self._pending[:max_n], self._pending[max_n:]
        if out:
            self._next_line = out[-1].position.offset + 1
        if self.done and not self._pending:
            self._next_line = max([self._next_line, *(b.line + 1 for b in self.bad_rows)])
        return out

    def _messages(self, chunk: Chunk) -> list[RawMessage]:
        self.bad_rows.extend(chunk.bad)
        assert self._reader is not None
        roles, out = self._reader.roles, []
        for i in range(len(chunk)):
            obj: dict[str, object] = {"key": chunk.keys[i]} if roles.key else {}
            if roles.timestamp:
                obj["ts"] = float(chunk.timestamps[i])
            obj.update(zip(roles.features, (float(v) for v in chunk.values[i]), strict=True))
            if chunk.labels is not None and chunk.labels[i] >= 0:
                obj["label"] = int(chunk.labels[i])
            pos = SourcePosition(self.topic, 0, int(chunk.lines[i]))
            key = chunk.keys[i].encode() if roles.key else None
            out.append(RawMessage(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY), key,
                                  position=pos))
        return out

    def position(self) -> Mapping[TP, int]:
        return {(self.topic, 0): self._next_line}

    def close(self) -> None:
        self._chunks = None
        self.done = True
