"""Published messages -> bytes: alerts, events, decisions and dead-letter headers. Pure.

The wire models (JSON Schemas for subscribers) are in :mod:`stream_ae.schema`; these
encoders build the same JSON directly because they run on the hot path, and
``tests/unit/test_schema.py`` checks that they agree.
"""

from __future__ import annotations

import math

import orjson

from stream_ae.outputs import Decision, EventRecord, message_id
from stream_ae.records import Alert, DeadLetter, SourcePosition
from stream_ae.schema import SCHEMA_VERSION

CONTENT_TYPE = "application/json"


def dead_letter_headers(d: DeadLetter, now: float) -> list[tuple[str, bytes]]:
    """The original headers plus ``stream-ae.*`` headers with the reason and coordinates.

    >>> from stream_ae.records import RawMessage
    >>> m = RawMessage(b"x", None, (("h", b"1"),), None, SourcePosition("t", 2, 9))
    >>> [k for k, _ in dead_letter_headers(DeadLetter("invalid_json", "", m), 0.0)][:3]
    ['h', 'stream-ae.reason', 'stream-ae.detail']
    """
    p = d.original.position
    own = {
        "stream-ae.reason": d.reason, "stream-ae.detail": d.detail[:500],
        "stream-ae.source-topic": p.topic, "stream-ae.source-partition": str(p.partition),
        "stream-ae.source-offset": str(p.offset), "stream-ae.schema-version": SCHEMA_VERSION,
        "stream-ae.failed-at": f"{now:.3f}", **d.extra,
    }
    return [*d.original.headers, *((k, v.encode()) for k, v in own.items())]


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
        "score": a.score, "threshold": a.threshold,
        "top_features": [{"name": n, "error": e} for n, e in a.top_features],
        "context": {"warmup": False, "drift_recent": a.drift_recent},
        "model_version": a.model_version, "detected_at": a.detected_at,
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
