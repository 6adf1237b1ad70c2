"""Bytes <-> records and published messages. Pure functions, no I/O.

Default JSON record layout (one object per message)::

    {"key": "pump-7", "ts": 1732540000.5, "temp": 71.2, "pressure": 3.1, ...}

* features: the fields named in ``engine.features.names`` (numbers); when that list is
  empty, the numeric fields of the first valid record, in order, minus key/timestamp/label;
* ``record.key_field`` (default ``key``): the sensor key; when absent, the message key;
* ``record.timestamp_field`` (default ``ts``): event time, epoch seconds, epoch milliseconds
  (values above 1e11) or ISO-8601; when absent, the message timestamp;
* ``record.label_field`` (optional): 0/1 ground truth, carried along for evaluation.

A message that cannot become a record is a value, not a crash: ``decode_block`` returns it
as a :class:`~stream_ae.records.DeadLetter` with one of the reasons in :data:`REASONS`.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from stream_ae.config import RecordFormat
from stream_ae.errors import DecodeError
from stream_ae.records import (
    F64,
    I64,
    Alert,
    Batch,
    DeadLetter,
    DriftEvent,
    Headers,
    RawMessage,
    SourcePosition,
    StepResult,
)
from stream_ae.schema import SCHEMA_VERSION

CONTENT_TYPE = "application/json"

#: dead-letter reasons produced by decoding (the engine adds ``rejected:<its reason>``)
REASONS = (
    "empty", "oversized", "invalid_json", "not_object", "missing_feature", "non_numeric",
    "non_finite", "bad_key", "bad_timestamp", "bad_label", "no_features",
)

_NUMBER = (int, float)
_MS_THRESHOLD = 1e11  # epoch values above this are milliseconds (1e11 s is the year 5138)


def _no_headers(_: int) -> Headers:
    return ()


class LazyColumn(Sequence[Any]):
    """A column whose items are computed on access from source objects.

    The Kafka source hands message keys and timestamps over this way: only the slow decode
    path (a record without key/timestamp fields) and dead letters read them.

    >>> col = LazyColumn([1, 2, 3], lambda x: x * 10)
    >>> (col[1], list(col[1:]), len(col))
    (20, [20, 30], 3)
    """

    def __init__(self, items: Sequence[Any], get: Callable[[Any], Any]) -> None:
        self.items = items
        self.get = get

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return LazyColumn(self.items[i], self.get)
        return self.get(self.items[i])


def _concat(cols: Sequence[Sequence[Any]]) -> Sequence[Any]:
    first = cols[0]
    if isinstance(first, LazyColumn) and all(
            isinstance(c, LazyColumn) and c.get is first.get for c in cols):
        return LazyColumn([x for c in cols for x in c.items], first.get)  # type: ignore[attr-defined]
    return [x for c in cols for x in c]


@dataclass(frozen=True)
class RawBlock:
    """Undecoded messages of one partition, columnar, in offset order.

    ``headers(i)`` is called only for dead letters (headers are rarely needed, so the
    Kafka source hands them over lazily).

    Examples
    --------
    >>> b = RawBlock("t", 0, [5], [b'{"x": 1}'], [None], [None])
    >>> b.message(0).position
    SourcePosition(topic='t', partition=0, offset=5)
    """

    topic: str
    partition: int
    offsets: Sequence[int]
    values: Sequence[bytes | None]
    keys: Sequence[bytes | None]
    timestamps_ms: Sequence[int | None]
    headers: Callable[[int], Headers] = field(default=_no_headers)

    def __len__(self) -> int:
        return len(self.offsets)

    def message(self, i: int) -> RawMessage:
        """Row ``i`` as a :class:`RawMessage` (for dead letters)."""
        pos = SourcePosition(self.topic, self.partition, self.offsets[i])
        return RawMessage(self.values[i], self.keys[i], self.headers(i), self.timestamps_ms[i], pos)

    @classmethod
    def concat(cls, blocks: Sequence[RawBlock]) -> RawBlock:
        """Blocks of one partition, in order, as one block.

        >>> a = RawBlock("t", 0, [1], [b"x"], [None], [None])
        >>> RawBlock.concat([a, RawBlock("t", 0, [2], [b"y"], [None], [None])]).offsets
        [1, 2]
        """
        if len(blocks) == 1:
            return blocks[0]
        bounds = list(itertools.accumulate(len(b) for b in blocks))

        def headers(i: int) -> Headers:
            j = next(k for k, end in enumerate(bounds) if i < end)
            return blocks[j].headers(i - (bounds[j - 1] if j else 0))

        first = blocks[0]
        return cls(
            first.topic, first.partition, [o for b in blocks for o in b.offsets],
            [v for b in blocks for v in b.values], _concat([b.keys for b in blocks]),
            _concat([b.timestamps_ms for b in blocks]), headers,
        )

    def tail(self, start: int) -> RawBlock:
        """Rows ``start:`` (a view over the same headers)."""
        if start <= 0:
            return self
        return RawBlock(self.topic, self.partition, self.offsets[start:], self.values[start:],
                        self.keys[start:], self.timestamps_ms[start:],
                        lambda i: self.headers(i + start))

    @classmethod
    def from_messages(cls, msgs: Sequence[RawMessage]) -> RawBlock:
        """Columns of messages that all come from one partition."""
        if not msgs:
            return cls("", 0, [], [], [], [])
        pos = msgs[0].position
        return cls(
            pos.topic, pos.partition, [m.position.offset for m in msgs], [m.value for m in msgs],
            [m.key for m in msgs], [m.timestamp_ms for m in msgs], lambda i: msgs[i].headers,
        )


def _one(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    name = names[0] if names else ""

    def pick(obj: Any) -> tuple[Any, ...]:
        return (obj[name],)

    return pick


@dataclass(frozen=True)
class Decoded:
    """The result of decoding a block: good rows as a batch, the rest as dead letters."""

    batch: Batch
    offsets: I64  # source offset of each batch row
    dead_letters: tuple[DeadLetter, ...]
    names: tuple[str, ...] = ()
    raw_values: F64 | None = None  # float64 feature values as received (alerts quote them)


@dataclass(frozen=True)
class Decoder:
    """Decode JSON messages into batches for the engine.

    Parameters
    ----------
    names
        Feature fields in model order.
    fmt
        Where key, timestamp and label live.
    missing
        ``"reject"``: a missing/null/non-finite feature makes a dead letter; ``"ffill"``:
        it becomes NaN and the engine carries the key's last value forward.

    Examples
    --------
    >>> d = Decoder(("a", "b"), RecordFormat())
    >>> blk = RawBlock("t", 0, [0, 1], [b'{"key": "k", "ts": 5, "a": 1, "b": 2}', b"oops"],
    ...                [None, None], [None, None])
    >>> out = d.decode(blk)
    >>> (out.batch.keys, out.batch.values.tolist(), [x.reason for x in out.dead_letters])
    (('k',), [[1.0, 2.0]], ['invalid_json'])
    """

    names: tuple[str, ...]
    fmt: RecordFormat
    missing: str = "reject"

    def decode(self, block: RawBlock) -> Decoded:
        """Decode every message of ``block``; never raises for bad input."""
        rows: list[Sequence[Any]] = []
        keys: list[str] = []
        stamps: list[float] = []
        labels: list[int] = []
        good: list[int] = []
        dead: list[DeadLetter] = []
        loads, max_bytes = orjson.loads, self.fmt.max_message_bytes
        pick = operator.itemgetter(*self.names) if len(self.names) > 1 else _one(self.names)
        kf, tf, plain = self.fmt.key_field, self.fmt.timestamp_field, self.fmt.label_field is None
        for i, value in enumerate(block.values):
            # fast path: the default layout (string key, float seconds, no label); anything
            # else, including every kind of bad input, takes the full path below
            try:
                obj = loads(value)  # type: ignore[arg-type]  # None raises TypeError
                row = pick(obj)
                key, stamp = obj[kf], obj[tf]
            except (ValueError, TypeError, KeyError):
                pass
            else:
                if (plain and type(key) is str and type(stamp) is float
                        and -_MS_THRESHOLD <= stamp <= _MS_THRESHOLD and value is not None
                        and len(value) <= max_bytes):
                    rows.append(row)
                    keys.append(key)
                    stamps.append(stamp)
                    labels.append(-1)
                    good.append(i)
                    continue
            try:
                decoded = self._decode_one(block, i)
            except DecodeError as exc:
                dead.append(dead_letter(block, i, exc.reason, exc.detail))
                continue
            row, key, stamp, label = decoded
            rows.append(row)
            keys.append(key)
            stamps.append(stamp)
            labels.append(label)
            good.append(i)
        return self._finish(block, rows, keys, stamps, labels, good, dead)

    def _decode_one(self, block: RawBlock, i: int) -> tuple[Sequence[Any], str, float, int]:
        obj = load_object(block.values[i], self.fmt.max_message_bytes)
        return (self._row(obj), record_key(obj, self.fmt.key_field, block.keys[i]),
                event_time(obj, self.fmt.timestamp_field, block.timestamps_ms[i]),
                record_label(obj, self.fmt.label_field))

    def _row(self, obj: dict[str, Any]) -> Sequence[Any]:
        try:
            return [obj[n] for n in self.names]
        except KeyError as exc:
            if self.missing == "ffill":
                return [obj.get(n) for n in self.names]
            raise DecodeError("missing_feature", f"field {exc.args[0]!r} is missing") from None

    def _finish(
        self, block: RawBlock, rows: list[Sequence[Any]], keys: list[str], stamps: list[float],
        labels: list[int], good: list[int], dead: list[DeadLetter],
    ) -> Decoded:
        if not set(map(type, itertools.chain.from_iterable(rows))) <= {int, float}:
            rows, keys, stamps, labels, good = _filter_rows(
                rows, keys, stamps, labels, good, self.missing, lambda i, r, d: dead.append(
                    dead_letter(block, i, r, d)))
        values = np.array(rows, dtype=np.float64).reshape(len(rows), len(self.names))
        with np.errstate(over="ignore"):
            values32 = values.astype(np.float32)
        if self.missing == "reject":
            ok = np.isfinite(values32).all(axis=1)
            if not ok.all():
                for j in np.flatnonzero(~ok):
                    dead.append(dead_letter(block, good[j], "non_finite", "NaN or infinite value"))
                values, values32, keep = values[ok], values32[ok], np.flatnonzero(ok)
                keys, stamps = [keys[j] for j in keep], [stamps[j] for j in keep]
                labels, good = [labels[j] for j in keep], [good[j] for j in keep]
        out = _assemble(block, values32, keys, stamps, labels, good, dead)
        return Decoded(out.batch, out.offsets, out.dead_letters, self.names, values)


def _filter_rows(
    rows: list[Sequence[Any]], keys: list[str], stamps: list[float], labels: list[int],
    good: list[int], missing: str, reject: Callable[[int, str, str], None],
) -> tuple[list[Sequence[Any]], list[str], list[float], list[int], list[int]]:
    """Slow path: drop rows holding non-numbers; map None to NaN under ffill."""
    out: tuple[list[Any], ...] = ([], [], [], [], [])
    for row, k, t, lab, i in zip(rows, keys, stamps, labels, good, strict=True):
        try:
            fixed = [_number(v, missing) for v in row]
        except DecodeError as exc:
            reject(i, exc.reason, exc.detail)
            continue
        for col, val in zip(out, (fixed, k, t, lab, i), strict=True):
            col.append(val)
    return out  # type: ignore[return-value]


def _number(v: Any, missing: str) -> float:
    if type(v) in _NUMBER:
        return float(v)
    if v is None:
        if missing == "ffill":
            return math.nan
        raise DecodeError("missing_feature", "feature is null")
    raise DecodeError("non_numeric", f"feature value {v!r:.40} is not a number")


def _assemble(
    block: RawBlock, values: np.ndarray[Any, Any], keys: list[str], stamps: list[float],
    labels: list[int], good: list[int], dead: list[DeadLetter],
) -> Decoded:
    lab = np.array(labels, dtype=np.int64) if any(x >= 0 for x in labels) else None
    batch = Batch(tuple(keys), np.array(stamps, dtype=np.float64), values, lab)
    offsets = np.array([block.offsets[i] for i in good], dtype=np.int64)
    dead.sort(key=lambda d: d.original.position.offset)
    return Decoded(batch, offsets, tuple(dead))


def load_object(value: bytes | None, max_bytes: int) -> dict[str, Any]:
    """Parse one message value into a JSON object; ``DecodeError`` otherwise.

    >>> load_object(b'{"a": NaN}', 100)["a"]
    nan
    """
    if not value:
        raise DecodeError("empty", "message has no value")
    if len(value) > max_bytes:
        raise DecodeError("oversized", f"{len(value)} bytes > {max_bytes}")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        obj = _load_lenient(value)  # NaN/Infinity literals: decided by the missing policy
    if not isinstance(obj, dict):
        raise DecodeError("not_object", f"JSON {type(obj).__name__}, expected an object")
    return obj


def _load_lenient(value: bytes) -> Any:
    try:
        return json.loads(value)
    except (ValueError, RecursionError) as exc:
        raise DecodeError("invalid_json", str(exc)[:200]) from None


def record_key(obj: Mapping[str, Any], key_field: str, msg_key: bytes | None) -> str:
    """The sensor key: the JSON field, else the message key, else ``""``.

    >>> record_key({}, "key", b"pump-1"), record_key({"key": 7}, "key", None)
    ('pump-1', '7')
    """
    k = obj.get(key_field)
    if k is None:
        return "" if msg_key is None else msg_key.decode("utf-8", "replace")
    if isinstance(k, str):
        return k
    if type(k) is int:
        return str(k)
    raise DecodeError("bad_key", f"key field holds {type(k).__name__}")


def event_time(obj: Mapping[str, Any], ts_field: str, msg_ts_ms: int | None) -> float:
    """Event time in epoch seconds: the JSON field, else the message timestamp, else NaN.

    >>> event_time({"ts": 1700000000000}, "ts", None), event_time({}, "ts", 2500)
    (1700000000.0, 2.5)
    """
    t = obj.get(ts_field)
    if t is None:
        return math.nan if msg_ts_ms is None else msg_ts_ms / 1000.0
    if type(t) in _NUMBER:
        t = float(t)
        if not math.isfinite(t):
            raise DecodeError("bad_timestamp", "timestamp is not finite")
        return t / 1000.0 if abs(t) > _MS_THRESHOLD else t
    if isinstance(t, str):
        try:
            parsed = dt.datetime.fromisoformat(t)
        except ValueError:
            raise DecodeError("bad_timestamp", f"cannot parse {t!r:.40}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        return parsed.timestamp()
    raise DecodeError("bad_timestamp", f"timestamp holds {type(t).__name__}")


def record_label(obj: Mapping[str, Any], label_field: str | None) -> int:
    """The 0/1 label, or -1 when there is none."""
    if label_field is None or obj.get(label_field) is None:
        return -1
    lab = obj[label_field]
    if lab in (0, 1) and type(lab) in (int, bool, float):
        return int(lab)
    raise DecodeError("bad_label", f"label {lab!r:.20} is not 0/1")


def infer_feature_names(block: RawBlock, fmt: RecordFormat) -> tuple[str, ...] | None:
    """Numeric fields of the first decodable object, minus key/timestamp/label; None if none.

    >>> blk = RawBlock("t", 0, [0], [b'{"key": "a", "ts": 1, "x": 1.5, "s": "on", "y": 2}'],
    ...                [None], [None])
    >>> infer_feature_names(blk, RecordFormat())
    ('x', 'y')
    """
    skip = {fmt.key_field, fmt.timestamp_field, fmt.label_field}
    for value in block.values:
        try:
            obj = load_object(value, fmt.max_message_bytes)
        except DecodeError:
            continue
        names = tuple(k for k, v in obj.items() if k not in skip and type(v) in _NUMBER)
        if names:
            return names
    return None


def dead_letter(block: RawBlock, i: int, reason: str, detail: str = "") -> DeadLetter:
    """Row ``i`` of ``block`` as a dead letter."""
    return DeadLetter(reason=reason, detail=detail, original=block.message(i))


def all_dead(block: RawBlock, reason: str, detail: str = "") -> Decoded:
    """Every message of ``block`` as a dead letter, nothing for the engine (e.g. while no
    feature names are known)."""
    dead = tuple(dead_letter(block, i, reason, detail) for i in range(len(block)))
    batch = Batch.from_arrays(np.zeros((0, 0), dtype=np.float32))
    return Decoded(batch, np.zeros(0, dtype=np.int64), dead)


def dead_letter_headers(d: DeadLetter, now: float) -> list[tuple[str, bytes]]:
    """The original headers plus ``stream-ae.*`` headers with the reason and coordinates.

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


def message_id(pos: SourcePosition) -> str:
    """Deterministic id of the output derived from a source record: ``topic/partition/offset``.

    >>> message_id(SourcePosition("sensors", 3, 42))
    'sensors/3/42'
    """
    return f"{pos.topic}/{pos.partition}/{pos.offset}"


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


def encode_event(e: DriftEvent, pos: SourcePosition, model_version: int, now: float) -> bytes:
    """A drift/regime event as ``schema.EventMessage`` JSON."""
    return orjson.dumps({
        "schema_version": SCHEMA_VERSION, "event_id": f"{message_id(pos)}/{e.kind}",
        "kind": e.kind, "detector": e.detector,
        "source": {"topic": pos.topic, "partition": pos.partition, "offset": pos.offset},
        "event_time": _finite_or_none(e.timestamp), "record_index": e.record_index,
        "level_before": _finite_or_none(e.level_before),
        "level_after": _finite_or_none(e.level_after),
        "action": e.action, "model_version": model_version, "detected_at": now,
    })


@dataclass(frozen=True)
class Decision:
    """What happened to offsets ``[start, end)`` of one partition, as published in one batch."""

    topic: str
    partition: int
    start: int
    end: int
    alerts: tuple[int, ...]
    dead_letters: tuple[int, ...]


def encode_decision(d: Decision) -> bytes:
    """A decision as ``schema.DecisionMessage`` JSON."""
    return orjson.dumps({
        "schema_version": SCHEMA_VERSION, "topic": d.topic, "partition": d.partition,
        "start_offset": d.start, "end_offset": d.end, "alert_offsets": list(d.alerts),
        "dead_letter_offsets": list(d.dead_letters),
    })


def build_alerts(decoded: Decoded, result: StepResult, topic: str, partition: int,
                 now: float, from_offset: int = 0) -> list[Alert]:
    """One alert per flagged row of a partition's step at or past ``from_offset`` (rows
    below it are catch-up replays that were published before), in row order."""
    rows = np.flatnonzero(result.is_anomaly & (decoded.offsets >= from_offset))
    first_drift = min((e.batch_index for e in result.drift_events), default=len(result))
    raw = decoded.raw_values if decoded.raw_values is not None else decoded.batch.values
    out = []
    for r in map(int, rows):
        pos = SourcePosition(topic, partition, int(decoded.offsets[r]))
        out.append(Alert(
            alert_id=message_id(pos), key=decoded.batch.keys[r],
            timestamp=float(decoded.batch.timestamps[r]),
            features=dict(zip(decoded.names, raw[r].tolist(), strict=True)),
            score=float(result.scores[r]), threshold=float(result.thresholds[r]),
            top_features=tuple(result.top_features(r)), model_version=result.model_version
            if result.model_versions is None else int(result.model_versions[r]),
            position=pos, drift_recent=r >= first_drift, detected_at=now,
        ))
    return out
