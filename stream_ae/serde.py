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
import hashlib
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
    "non_finite", "bad_key", "bad_timestamp", "bad_label", "no_features", "key_too_long",
    "too_many_fields", "field_name_too_long",
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
        max_key, max_fields = self.fmt.max_key_length, self.fmt.max_fields
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
                        and len(value) <= max_bytes and len(key) <= max_key
                        and len(obj) <= max_fields):
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
        obj = load_bounded(block.values[i], self.fmt)
        return (self._row(obj), bounded_key(obj, self.fmt, block.keys[i]),
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


def load_bounded(value: bytes | None, fmt: RecordFormat) -> dict[str, Any]:
    """:func:`load_object` within ``fmt``'s size and field-count limits.

    >>> load_bounded(b'{"a": 1, "b": 2}', RecordFormat(max_fields=1))
    Traceback (most recent call last):
    ...
    stream_ae.errors.DecodeError: too_many_fields: 2 fields > 1
    """
    obj = load_object(value, fmt.max_message_bytes)
    if len(obj) > fmt.max_fields:
        raise DecodeError("too_many_fields", f"{len(obj)} fields > {fmt.max_fields}")
    return obj


def bounded_key(obj: Mapping[str, Any], fmt: RecordFormat, msg_key: bytes | None) -> str:
    """:func:`record_key` no longer than ``fmt.max_key_length`` characters."""
    key = record_key(obj, fmt.key_field, msg_key)
    if len(key) > fmt.max_key_length:
        raise DecodeError("key_too_long", f"key of {len(key)} characters > {fmt.max_key_length}")
    return key


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

    Objects beyond ``fmt``'s limits (too many fields, too long names) are not used.

    >>> blk = RawBlock("t", 0, [0], [b'{"key": "a", "ts": 1, "x": 1.5, "s": "on", "y": 2}'],
    ...                [None], [None])
    >>> infer_feature_names(blk, RecordFormat())
    ('x', 'y')
    """
    found = find_template(block, fmt)
    return None if found is None else found[1]


def find_template(block: RawBlock, fmt: RecordFormat) -> tuple[int, tuple[str, ...]] | None:
    """Row and feature names of the first row that can name the features; None if none."""
    for i, value in enumerate(block.values):
        try:
            return i, template_names(load_bounded(value, fmt), fmt)
        except DecodeError:
            continue
    return None


def template_names(obj: Mapping[str, Any], fmt: RecordFormat) -> tuple[str, ...]:
    """The feature names an object gives: its numeric fields minus key/timestamp/label.

    >>> template_names({"key": "k", "ts": 1.0, "temperature": 2}, RecordFormat(
    ...     max_field_name_length=5))
    Traceback (most recent call last):
    ...
    stream_ae.errors.DecodeError: field_name_too_long: a field name of 11 characters > 5
    """
    skip = {fmt.key_field, fmt.timestamp_field, fmt.label_field}
    names = tuple(k for k, v in obj.items() if k not in skip and type(v) in _NUMBER)
    if not names:
        raise DecodeError("no_features", "no numeric fields and no feature names known yet")
    longest = max(map(len, names))
    if longest > fmt.max_field_name_length:
        raise DecodeError("field_name_too_long", f"a field name of {longest} characters > "
                          f"{fmt.max_field_name_length}")
    return names


def decode_inferring(block: RawBlock, fmt: RecordFormat, missing: str = "reject"
                     ) -> tuple[Decoder | None, Decoded]:
    """Decode a block while no feature names are known: they come from the block's first
    row that can name them (:func:`find_template`). Rows before it are dead letters with the
    reason they could not name the features, as they would be in a batch of their own, so
    a dead letter does not depend on how the stream was split into batches.

    >>> blk = RawBlock("t", 0, [0, 1], [b"{oops", b'{"x": 1}'], [None, None], [None, None])
    >>> dec, out = decode_inferring(blk, RecordFormat())
    >>> dec.names, out.batch.values.tolist(), [d.reason for d in out.dead_letters]
    (('x',), [[1.0]], ['invalid_json'])
    """
    found = find_template(block, fmt)
    stop = len(block) if found is None else found[0]
    dead = tuple(_unnamed(block, i, fmt) for i in range(stop))
    if found is None:
        batch = Batch.from_arrays(np.zeros((0, 0), dtype=np.float32))
        return None, Decoded(batch, np.zeros(0, dtype=np.int64), dead)
    decoder = Decoder(found[1], fmt, missing)
    rest = decoder.decode(block.tail(stop))
    return decoder, Decoded(rest.batch, rest.offsets, dead + rest.dead_letters, rest.names,
                            rest.raw_values)


def _unnamed(block: RawBlock, i: int, fmt: RecordFormat) -> DeadLetter:
    try:
        template_names(load_bounded(block.values[i], fmt), fmt)
    except DecodeError as exc:
        return dead_letter(block, i, exc.reason, exc.detail)
    raise AssertionError("a row before the template names the features")  # pragma: no cover


def dead_letter(block: RawBlock, i: int, reason: str, detail: str = "") -> DeadLetter:
    """Row ``i`` of ``block`` as a dead letter."""
    return DeadLetter(reason=reason, detail=detail, original=block.message(i))


def all_dead(block: RawBlock, reason: str, detail: str = "") -> Decoded:
    """Every message of ``block`` as a dead letter, nothing for the engine (e.g. while no
    feature names are known)."""
    dead = tuple(dead_letter(block, i, reason, detail) for i in range(len(block)))
    batch = Batch.from_arrays(np.zeros((0, 0), dtype=np.float32))
    return Decoded(batch, np.zeros(0, dtype=np.int64), dead)


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

    >>> m = RawMessage(b"x", None, (("h", b"1"),), None, SourcePosition("t", 2, 9))
    >>> [k for k, _ in dead_letter_headers(DeadLetter("invalid_json", "", m), 0.0)][:3]
    ['h', 'stream-ae.reason', 'stream-ae.detail']
    """
    return dead_letter_message(d, now).headers


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
            top_features=tuple(result.top_features(r)), model_version=result.model_version,
            position=pos, drift_recent=r >= first_drift, detected_at=now,
        ))
    return out
