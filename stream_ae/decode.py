"""Raw blocks -> engine batches and dead letters: the one decoder of every input. Pure.

Kafka messages, replayed messages and rows of JSON Lines files reach it as bytes; rows
of CSV and Parquet files as mappings of their fields (the file reader only splits the
file into fields and turns numeric text into numbers). From there every input takes
the same path, with one timestamp parser and one set of dead-letter reasons.

Default JSON record layout (one object per message)::

    {"key": "pump-7", "ts": 1732540000.5, "temp": 71.2, "pressure": 3.1, ...}

* features: the fields named in ``engine.features.names`` (numbers); when that list is
  empty, the numeric fields of the first valid record, in order, minus key/timestamp/label;
* ``record.key_field`` (default ``key``): the sensor key; when absent, the message key;
* ``record.timestamp_field`` (default ``ts``): event time, epoch seconds, epoch milliseconds
  (absolute values above 1e11) or ISO-8601; when absent, the message timestamp;
* ``record.label_field`` (optional): 0/1 ground truth, carried along for evaluation.

A message that cannot become a record is a value, not a crash: :meth:`Decoder.decode`
returns it as a :class:`~stream_ae.records.DeadLetter` with one of the reasons in
:data:`REASONS`.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import structlog

from stream_ae.config import RecordFormat
from stream_ae.errors import DecodeError
from stream_ae.records import Batch, DeadLetter, RawBlock, RawValue, Unreadable
from stream_ae.types import F64, I64

log = structlog.get_logger()

#: dead-letter reasons produced by decoding (the engine adds ``rejected:<its reason>``)
REASONS = (
    "empty", "oversized", "invalid_json", "not_object", "field_count", "missing_feature",
    "non_numeric", "non_finite", "bad_key", "bad_timestamp", "bad_label", "no_features",
    "key_too_long", "too_many_fields", "field_name_too_long",
)

_NUMBER = (int, float)
MS_THRESHOLD = 1e11  # epoch values above this are milliseconds (1e11 s is the year 5138)


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
class CleanColumns:
    """Rows of a block already parsed into columns, every one of them a valid record (a
    table chunk with numeric, finite features, keys, timestamps in seconds and 0/1 labels):
    the decoder takes them as they are instead of one row at a time. A source attaches
    them only where the per-row path would decode every row to exactly these values."""

    names: tuple[str, ...]
    values: F64  # (rows, features), finite
    keys: tuple[str, ...]
    stamps: F64
    labels: I64 | None  # None: no label column (or no known label)


@dataclass(frozen=True)
class Decoder:
    """Decode raw blocks into batches for the engine.

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
    >>> blk = RawBlock("t", 0, [0, 1, 2], [b'{"key": "k", "ts": 5, "a": 1, "b": 2}', b"oops",
    ...                {"key": "k", "ts": 6.0, "a": 3.0, "b": None}], [None] * 3, [None] * 3)
    >>> out = d.decode(blk)
    >>> (out.batch.keys, out.batch.values.tolist(), [x.reason for x in out.dead_letters])
    (('k',), [[1.0, 2.0]], ['invalid_json', 'missing_feature'])
    """

    names: tuple[str, ...]
    fmt: RecordFormat
    missing: str = "reject"

    def decode(self, block: RawBlock) -> Decoded:
        """Decode every row of ``block``; never raises for bad input."""
        clean = getattr(block, "columns", None)
        if isinstance(clean, CleanColumns) and clean.names == self.names:
            done = self._decode_clean(block, clean)
            if done is not None:
                return done
        rows: list[Sequence[Any]] = []
        keys: list[str] = []
        stamps: list[float] = []
        labels: list[int] = []
        good: list[int] = []
        dead: list[DeadLetter] = []
        fast = self._fast_path()
        for i, value in enumerate(block.values):
            # fast path: string key, float seconds, a 0/1 label or none; anything else,
            # including every kind of bad input, takes the full path below
            hit = fast(value)
            if hit is None:
                try:
                    hit = self._decode_one(block, i)
                except DecodeError as exc:
                    dead.append(dead_letter(block, i, exc.reason, exc.detail))
                    continue
            rows.append(hit[0])
            keys.append(hit[1])
            stamps.append(hit[2])
            labels.append(hit[3])
            good.append(i)
        return self._finish(block, rows, keys, stamps, labels, good, dead)

    def _decode_clean(self, block: RawBlock, c: CleanColumns) -> Decoded | None:
        """The batch of pre-parsed columns (None when a value overflows float32: the row
        path decides about those)."""
        with np.errstate(over="ignore"):
            values32 = c.values.astype(np.float32)
        if self.missing == "reject" and not np.isfinite(values32).all():
            return None
        offsets = np.asarray(block.offsets, dtype=np.int64)
        batch = Batch(c.keys, c.stamps, values32, c.labels, offsets)
        return Decoded(batch, offsets, (), self.names, c.values)

    def _fast_path(self) -> Callable[[RawValue], tuple[Sequence[Any], str, float, int] | None]:
        loads, max_bytes = orjson.loads, self.fmt.max_message_bytes
        max_key, max_fields = self.fmt.max_key_length, self.fmt.max_fields
        pick = operator.itemgetter(*self.names) if len(self.names) > 1 else _one(self.names)
        kf, tf, lf = self.fmt.key_field, self.fmt.timestamp_field, self.fmt.label_field

        def fast(value: RawValue) -> tuple[Sequence[Any], str, float, int] | None:
            try:
                if type(value) is bytes:
                    if len(value) > max_bytes:
                        return None
                    obj = loads(value)
                elif isinstance(value, Mapping):
                    obj = value
                else:
                    return None
                row = pick(obj)
                key, stamp = obj[kf], obj[tf]
                label = -1 if lf is None else obj[lf]
            except (ValueError, TypeError, KeyError):
                return None
            if (type(key) is str and type(stamp) is float
                    and -MS_THRESHOLD <= stamp <= MS_THRESHOLD and label in (-1, 0, 1)
                    and type(label) in _NUMBER and len(key) <= max_key
                    and len(obj) <= max_fields):
                return row, key, stamp, int(label)
            return None

        return fast

    def _decode_one(self, block: RawBlock, i: int) -> tuple[Sequence[Any], str, float, int]:
        obj = load_bounded(block.values[i], self.fmt)
        return (self._row(obj), bounded_key(obj, self.fmt, block.keys[i]),
                event_time(obj, self.fmt.timestamp_field, block.timestamps_ms[i]),
                record_label(obj, self.fmt.label_field))

    def _row(self, obj: Mapping[str, Any]) -> Sequence[Any]:
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
        lab = np.array(labels, dtype=np.int64) if any(x >= 0 for x in labels) else None
        offsets = np.array([block.offsets[i] for i in good], dtype=np.int64)
        batch = Batch(tuple(keys), np.array(stamps, dtype=np.float64), values32, lab, offsets)
        dead.sort(key=lambda d: d.original.position.offset)
        return Decoded(batch, offsets, tuple(dead), self.names, values)


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


def load_object(value: RawValue, max_bytes: int) -> Mapping[str, Any]:
    """Parse one raw value into a JSON object (a table row is one already);
    ``DecodeError`` otherwise.

    >>> load_object(b'{"a": NaN}', 100)["a"]
    nan
    """
    if isinstance(value, Unreadable):
        raise DecodeError(value.reason, value.detail)
    if value is not None and not isinstance(value, bytes):
        return value
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


def load_bounded(value: RawValue, fmt: RecordFormat) -> Mapping[str, Any]:
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
    """The sensor key: the field, else the message key, else ``""``.

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
    """Event time in epoch seconds: the field, else the message timestamp, else NaN.

    >>> event_time({"ts": 1700000000000}, "ts", None), event_time({}, "ts", 2500)
    (1700000000.0, 2.5)
    """
    t = obj.get(ts_field)
    if t is None:
        return math.nan if msg_ts_ms is None else msg_ts_ms / 1000.0
    return parse_time_value(t)


def parse_time_value(t: Any) -> float:
    """One time value (epoch seconds, epoch milliseconds above 1e11 in absolute value, or
    ISO-8601 text; naive times are UTC) as epoch seconds; ``DecodeError`` otherwise.

    >>> parse_time_value("2023-11-14T22:13:20Z"), parse_time_value(1700000000500)
    (1700000000.0, 1700000000.5)
    """
    if type(t) in _NUMBER:
        secs = float(t)
        if not math.isfinite(secs):
            raise DecodeError("bad_timestamp", "timestamp is not finite")
        return secs / 1000.0 if abs(secs) > MS_THRESHOLD else secs
    if isinstance(t, str):
        try:
            parsed = dt.datetime.fromisoformat(t.strip())
        except ValueError:
            raise DecodeError("bad_timestamp", f"cannot parse {t!r:.40}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        return float(parsed.timestamp())
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


class FeatureSchema:
    """The feature names of a stream and the decoder for them, shared by its partitions.

    Names come from the configuration or, when it lists none, from the first decodable
    record of any partition (or from a checkpoint, :meth:`adopt`); until then every row is
    a dead letter with the reason it could not name them (``no_features`` when it is an
    object without numeric fields), whatever the batch it came in.

    Parameters
    ----------
    fmt
        Where key, timestamp and label live.
    names
        Configured feature names (empty: infer).
    missing
        The missing-value policy (``engine.features.missing``).

    Examples
    --------
    >>> s = FeatureSchema(RecordFormat())
    >>> blk = RawBlock("t", 0, [0], [b'{"key": "a", "ts": 1.0, "x": 1.5}'], [None], [None])
    >>> (s.decode(blk).batch.values.tolist(), s.names)
    ([[1.5]], ('x',))
    """

    def __init__(self, fmt: RecordFormat, names: Sequence[str] = (), missing: str = "reject"
                 ) -> None:
        self.fmt = fmt
        self.missing = missing
        self._names: tuple[str, ...] | None = tuple(names) or None
        self._decoder: Decoder | None = None

    @property
    def names(self) -> tuple[str, ...] | None:
        """The feature names, once known."""
        return self._names

    def adopt(self, names: Sequence[str]) -> None:
        """Take names stored with a checkpoint (unless decoding already began)."""
        names = tuple(names)
        if not names or self._decoder is not None:
            return
        if self._names is not None and self._names != names:
            log.warning("checkpoint_feature_names_differ", configured=list(self._names),
                        checkpoint=list(names))
        self._names = names

    def decode(self, block: RawBlock) -> Decoded:
        """Decode ``block`` (inferring the names from it when none are known yet)."""
        if self._decoder is None:
            if self._names is None:  # from the first row that can name them
                self._decoder, decoded = decode_inferring(block, self.fmt, self.missing)
                if self._decoder is not None:
                    self._names = self._decoder.names
                    log.info("feature_names", names=list(self._names))
                return decoded
            self._decoder = Decoder(self._names, self.fmt, self.missing)
        return self._decoder.decode(block)
