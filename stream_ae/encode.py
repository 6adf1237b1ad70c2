"""Published messages -> bytes: alerts, events, decisions and dead letters. Pure.

The wire models (JSON Schemas for subscribers) are in :mod:`stream_ae.schema`; these
encoders build the same JSON directly because they run on the hot path, and
``tests/unit/test_schema.py`` checks that they agree.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from stream_ae.outputs import Decision, EventRecord, message_id
from stream_ae.records import Alert, DeadLetter, Headers, Incident, SourcePosition
from stream_ae.schema import SCHEMA_VERSION

CONTENT_TYPE = "application/json"


#: default producer ``message.max.bytes``: the default input limit plus 32 KiB
DEFAULT_OUTPUT_BYTES = 1_032_768
DEAD_LETTER_KEY_BYTES = 1024  # a longer original key is cut (it only picks a partition)
HEADER_VALUE_BYTES = 1024  # each original header value kept at most this long
DETAIL_BYTES = 500
_HEADER_NAME_CHARS = 256
_HEADER_OVERHEAD = 16  # per header: the varints and framing librdkafka counts
_MESSAGE_OVERHEAD = 512  # record and batch framing


@dataclass(frozen=True)
class OutMessage:
    """A message ready for a producer: value, key and headers."""

    value: bytes
    key: bytes | None
    headers: list[tuple[str, bytes]]

    @property
    def size(self) -> int:
        """Bytes the producer counts against ``message.max.bytes`` (an upper bound)."""
        return (len(self.value) + len(self.key or b"") + _headers_size(self.headers)
                + _MESSAGE_OVERHEAD)


def _headers_size(headers: Sequence[tuple[str, bytes]]) -> int:
    return sum(len(k.encode()) + len(v) + _HEADER_OVERHEAD for k, v in headers)


def _cut_text(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` UTF-8 bytes, on a character boundary."""
    return text.encode()[:max_bytes].decode("utf-8", "ignore")


def bounded_headers(headers: Headers, budget: int) -> tuple[list[tuple[str, bytes]], int]:
    """Original headers within ``budget`` bytes: names and values cut, the rest dropped;
    also how many were cut or dropped.

    >>> kept, changed = bounded_headers((("a", b"x" * 2000), ("b", b"1"), ("c", b"2")), 1060)
    >>> [(k, len(v)) for k, v in kept], changed
    ([('a', 1024), ('b', 1)], 2)
    """
    out: list[tuple[str, bytes]] = []
    cut, used = 0, 0
    for name, value in headers:
        k, v = name[:_HEADER_NAME_CHARS], value[:HEADER_VALUE_BYTES]
        used += len(k.encode()) + len(v) + _HEADER_OVERHEAD
        if used > budget:
            return out, cut + len(headers) - len(out)
        cut += (k, v) != (name, value)
        out.append((k, v))
    return out, cut


def dead_letter_message(d: DeadLetter, now: float, max_bytes: int = DEFAULT_OUTPUT_BYTES
                        ) -> OutMessage:
    """The dead-letter message of ``d``: the original value, key and headers plus
    ``stream-ae.*`` headers with the reason and coordinates, within ``max_bytes`` (the
    producer's ``message.max.bytes``, at least 16 KiB).

    Everything is bounded: the detail, each original header, the original headers together
    (an eighth of ``max_bytes``) and the key. A value that does not fit is cut to the prefix
    that does, with ``stream-ae.truncated: true``, ``stream-ae.original-size`` and
    ``stream-ae.original-sha256``. The bytes depend only on ``d`` and ``now``
    (``stream-ae.failed-at``).

    >>> from stream_ae.records import RawMessage
    >>> m = RawMessage(b"x" * 50_000, None, (("h", b"1"),), None, SourcePosition("t", 2, 9))
    >>> out = dead_letter_message(DeadLetter("oversized", "", m), 0.0, max_bytes=20_000)
    >>> h = dict(out.headers)
    >>> (h["stream-ae.truncated"], h["stream-ae.original-size"], out.size <= 20_000)
    (b'true', b'50000', True)
    >>> len(out.value) > 18_000
    True
    """
    o, p = d.original, d.original.position
    originals, changed = bounded_headers(o.headers, max_bytes // 8)
    own = {
        "stream-ae.reason": d.reason, "stream-ae.detail": _cut_text(d.detail, DETAIL_BYTES),
        "stream-ae.source-topic": p.topic, "stream-ae.source-partition": str(p.partition),
        "stream-ae.source-offset": str(p.offset), "stream-ae.schema-version": SCHEMA_VERSION,
        "stream-ae.failed-at": f"{now:.3f}", **d.extra,
    }
    key = o.key
    if key is not None and len(key) > DEAD_LETTER_KEY_BYTES:
        own["stream-ae.original-key-size"], key = str(len(key)), key[:DEAD_LETTER_KEY_BYTES]
    if changed:
        own["stream-ae.headers-truncated"] = str(changed)
    msg = OutMessage(o.value or b"", key, [*originals, *((k, v.encode()) for k, v in own.items())])
    if msg.size <= max_bytes:
        return msg
    value = msg.value
    headers = [*msg.headers, ("stream-ae.truncated", b"true"),
               ("stream-ae.original-size", str(len(value)).encode()),
               ("stream-ae.original-sha256", hashlib.sha256(value).hexdigest().encode())]
    room = max_bytes - OutMessage(b"", key, headers).size
    return OutMessage(value[:max(room, 0)], key, headers)


def dead_letter_headers(d: DeadLetter, now: float) -> list[tuple[str, bytes]]:
    """The headers of :func:`dead_letter_message` (default size limit).

    >>> from stream_ae.records import RawMessage
    >>> m = RawMessage(b"x", None, (("h", b"1"),), None, SourcePosition("t", 2, 9))
    >>> [k for k, _ in dead_letter_headers(DeadLetter("invalid_json", "", m), 0.0)][:3]
    ['h', 'stream-ae.reason', 'stream-ae.detail']
    """
    return dead_letter_message(d, now).headers


def output_headers() -> list[tuple[str, bytes]]:
    """Headers of every alert/event/decision message."""
    return [("stream-ae.schema-version", SCHEMA_VERSION.encode()),
            ("content-type", CONTENT_TYPE.encode())]


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def encode_alert(a: Alert) -> bytes:
    """An alert as ``schema.AlertMessage`` JSON (built directly: this is on the hot path)."""
    pos = a.position or SourcePosition("", 0, 0)
    return orjson.dumps({
        "schema_version": SCHEMA_VERSION, "alert_id": a.alert_id,
        "source": {"topic": pos.topic, "partition": pos.partition, "offset": pos.offset},
        "key": a.key, "event_time": _finite_or_none(a.timestamp),
        "features": {k: _finite_or_none(v) for k, v in a.features.items()},
        "score": a.score, "threshold": _finite_or_none(a.threshold),
        "grade": a.grade, "incident_id": a.incident_id,
        "top_features": [{"name": c.name, "observed": _finite_or_none(c.observed),
                          "expected": _finite_or_none(c.expected), "direction": c.direction,
                          "share": c.share, "lag": c.lag} for c in a.top_features],
        "context": {"warmup": False, "drift_recent": a.drift_recent},
        "model_version": a.model_version, "detected_at": a.detected_at,
    })


def encode_incident(i: Incident) -> bytes:
    """An incident lifecycle message as ``schema.IncidentMessage`` JSON."""
    c, pos = i.change, i.position
    return orjson.dumps({
        "schema_version": SCHEMA_VERSION, "incident_id": i.incident_id, "status": c.kind,
        "key": c.key,
        "source": {"topic": pos.topic, "partition": pos.partition, "offset": pos.offset},
        "start_time": _finite_or_none(c.start_time), "end_time": _finite_or_none(c.end_time),
        "peak_grade": c.peak_grade if math.isfinite(c.peak_grade) else 0.0,
        "records": c.records, "flagged": c.flagged,
        "top_sensors": [{"name": n, "share": sh} for n, sh in c.top_sensors],
        "reason": "" if c.kind != "resolved" else c.reason,
        "model_version": i.model_version, "detected_at": i.detected_at,
    })


def encode_event(rec: EventRecord, now: float) -> bytes:
    """A drift/regime event as ``schema.EventMessage`` JSON."""
    e, pos, model_version = rec.event, rec.position, rec.model_version
    return orjson.dumps({
        "schema_version": SCHEMA_VERSION, "event_id": f"{message_id(pos)}/{e.kind}",
        "kind": e.kind, "detector": e.detector,
        "source": {"topic": pos.topic, "partition": pos.partition, "offset": pos.offset},
        "event_time": _finite_or_none(e.timestamp), "record_index": e.record_index,
        "level_before": _finite_or_none(e.level_before),
        "level_after": _finite_or_none(e.level_after),
        "action": e.action, "model_version": model_version, "detected_at": now,
    })


def encode_decision(d: Decision) -> bytes:
    """A decision as ``schema.DecisionMessage`` JSON."""
    return orjson.dumps({
        "schema_version": SCHEMA_VERSION, "topic": d.topic, "partition": d.partition,
        "start_offset": d.start, "end_offset": d.end, "alert_offsets": list(d.alerts),
        "dead_letter_offsets": list(d.dead_letters),
    })
