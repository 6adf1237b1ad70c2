"""The values that flow through stream_ae, in data-flow order.

``RawMessage`` (bytes from a source) -> ``SensorRecord`` (validated, one reading)
-> ``Batch`` (columnar numpy, what the engine eats) -> ``StepResult`` (what the
engine decided) -> ``Alert`` / ``DeadLetter`` / ``DriftEvent`` (what sinks publish).

All are frozen; numpy arrays inside are owned by the value and never mutated.
Wire formats (JSON schemas for subscribers) live in :mod:`stream_ae.schema`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from stream_ae.types import F32, F64, I64, Bool, Headers

__all__ = [
    "F32",
    "F64",
    "I64",
    "Alert",
    "Batch",
    "Bool",
    "DeadLetter",
    "DriftEvent",
    "Headers",
    "IncidentChange",
    "LazyColumn",
    "RawBlock",
    "RawMessage",
    "RawValue",
    "SensorContribution",
    "SensorRecord",
    "SourcePosition",
    "StepResult",
    "Unreadable",
]


@dataclass(frozen=True, slots=True)
class SourcePosition:
    """Where a record came from. ``offset`` is the record's own offset (or line/row number)."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A file row that could not even be split into fields (e.g. a CSV row with the wrong
    field count): the decoder dead-letters it with this reason."""

    reason: str
    detail: str
    raw: bytes = b""


#: one undecoded input row: message bytes, a table row already split into fields, or an
#: unreadable row
RawValue = bytes | Mapping[str, Any] | Unreadable | None


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One undecoded message as a source delivers it."""

    value: bytes | None
    key: bytes | None = None
    headers: Headers = ()
    timestamp_ms: int | None = None
    position: SourcePosition = SourcePosition("", 0, 0)


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

    Every input becomes one: Kafka messages and JSON Lines rows carry their bytes, table
    rows (CSV, Parquet) a mapping of their fields, and one decoder
    (:class:`stream_ae.decode.Decoder`) turns all of them into records or dead letters.

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
    values: Sequence[RawValue]
    keys: Sequence[bytes | None]
    timestamps_ms: Sequence[int | None]
    headers: Callable[[int], Headers] = field(default=_no_headers)

    def __len__(self) -> int:
        return len(self.offsets)

    def message(self, i: int) -> RawMessage:
        """Row ``i`` as a :class:`RawMessage` (for dead letters; a table row as JSON)."""
        pos = SourcePosition(self.topic, self.partition, self.offsets[i])
        value = self.values[i]
        if isinstance(value, Unreadable):
            value = value.raw
        elif value is not None and not isinstance(value, bytes):
            value = orjson.dumps(dict(value), default=str)
        return RawMessage(value, self.keys[i], self.headers(i), self.timestamps_ms[i], pos)

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


@dataclass(frozen=True, slots=True)
class SensorRecord:
    """One validated reading: a key, an event time, feature values in config order, a label.

    ``values`` may hold NaN only where the missing-value policy is ``ffill``;
    the engine's feature stage fills or rejects them before the model.
    """

    key: str
    timestamp: float  # event time, seconds since the epoch; NaN when unknown
    values: tuple[float, ...]
    label: int | None = None
    position: SourcePosition | None = None


@dataclass(frozen=True)
class Batch:
    """A columnar block of records for the engine, in arrival order.

    ``values`` is float32 of shape (n, d) with columns in ``EngineConfig``
    feature order; ``timestamps`` float64 seconds (NaN when unknown);
    ``labels`` -1 where unknown.
    """

    keys: tuple[str, ...]
    timestamps: F64
    values: F32
    labels: I64 | None = None
    ids: I64 | None = None  # source offsets (incident ids); None: the engine's record index

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def from_records(cls, records: Sequence[SensorRecord], n_features: int) -> Batch:
        """Stack records into a batch.

        >>> b = Batch.from_records([SensorRecord("a", 1.0, (1.0, 2.0))], 2)
        >>> (len(b), b.values.dtype.name, b.values.shape)
        (1, 'float32', (1, 2))
        """
        n = len(records)
        values = np.empty((n, n_features), dtype=np.float32)
        for i, r in enumerate(records):
            values[i] = r.values
        labels = None
        if any(r.label is not None for r in records):
            labels = np.array([-1 if r.label is None else r.label for r in records], dtype=np.int64)
        return cls(
            keys=tuple(r.key for r in records),
            timestamps=np.array([r.timestamp for r in records], dtype=np.float64),
            values=values,
            labels=labels,
        )

    @classmethod
    def from_arrays(
        cls,
        values: npt.ArrayLike,
        keys: Sequence[str] | None = None,
        timestamps: npt.ArrayLike | None = None,
        labels: npt.ArrayLike | None = None,
    ) -> Batch:
        """Build a batch from arrays; missing keys default to ``""``, timestamps to NaN.

        >>> Batch.from_arrays([[1.0, 2.0], [3.0, 4.0]]).keys
        ('', '')
        """
        v = np.ascontiguousarray(np.asarray(values, dtype=np.float32))
        if v.ndim != 2:
            raise ValueError(f"values must be 2-D, got shape {v.shape}")
        n = v.shape[0]
        ts = (
            np.full(n, np.nan, dtype=np.float64)
            if timestamps is None
            else np.asarray(timestamps, dtype=np.float64)
        )
        lab = None if labels is None else np.asarray(labels, dtype=np.int64)
        keys_t = tuple(keys) if keys is not None else ("",) * n
        return cls(keys=keys_t, timestamps=ts, values=v, labels=lab)

    def slice(self, start: int, stop: int) -> Batch:
        """Rows ``start:stop`` as a new batch (views, no copy)."""
        return Batch(
            keys=self.keys[start:stop],
            timestamps=self.timestamps[start:stop],
            values=self.values[start:stop],
            labels=None if self.labels is None else self.labels[start:stop],
            ids=None if self.ids is None else self.ids[start:stop],
        )


@dataclass(frozen=True, slots=True)
class DriftEvent:
    """The drift monitor (or the sustained-alarm policy) decided that normal behaviour changed.

    ``kind`` is ``"drift"`` (river detector on the score stream) or
    ``"regime_change"`` (a sustained alarm run was re-learned as the new normal).
    ``record_index`` counts records seen by the engine since it was created.
    """

    kind: str
    detector: str
    record_index: int
    batch_index: int  # row in the batch passed to Engine.step
    timestamp: float
    level_before: float
    level_after: float
    action: str


@dataclass(frozen=True, slots=True)
class SensorContribution:
    """One sensor's part in a flagged record: its reading, the model's expectation (both in
    the sensor's own units), high or low, its share of the record's error, and the lag
    (records back) of its input that carried the most error."""

    name: str
    observed: float
    expected: float
    direction: str  # "high" | "low"
    share: float
    lag: int


@dataclass(frozen=True, slots=True)
class IncidentChange:
    """A lifecycle transition of an incident, at batch row ``row`` of a step.

    ``kind`` is ``opened``, ``updated`` or ``resolved``; ``opened_offset`` the source offset
    (record id) of its first flagged record; ``reason`` (resolved) ``quiet``,
    ``new_normal`` or ``evicted``.
    """

    kind: str
    key: str
    opened_offset: int
    row: int
    start_time: float
    end_time: float
    peak_grade: float
    records: int
    flagged: int
    top_sensors: tuple[tuple[str, float], ...]
    reason: str = ""


@dataclass(frozen=True)
class StepResult:
    """What ``Engine.step`` decided for each row of the batch, in batch order.

    Rows rejected by the feature stage (non-finite values under the ``reject``
    policy, or ``ffill`` with nothing to carry forward) have NaN score, are not
    anomalies and are listed in ``rejected`` as ``(row, reason)``.
    """

    scores: F64
    thresholds: F64
    is_anomaly: Bool
    warmup: Bool
    feature_errors: F32  # (n, len(feature_names)) squared error per model input column
    feature_names: tuple[str, ...]
    drift_events: tuple[DriftEvent, ...] = ()
    rejected: tuple[tuple[int, str], ...] = ()
    model_version: int = 0
    grades: F64 | None = None  # calibrated surprise in [0, 1] (None: the engine has none)
    incident: I64 | None = None  # opened_offset of each row's incident, -1 for none
    incidents: tuple[IncidentChange, ...] = ()
    model_versions: I64 | None = None  # learning steps taken when each row was scored
    drift_recent: Bool | None = None  # a drift/regime event shortly before the row
    explanations: Mapping[int, tuple[SensorContribution, ...]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.scores)

    def version(self, row: int) -> int:
        """The model version that scored ``row``."""
        return int(self.model_versions[row]) if self.model_versions is not None else \
            self.model_version

    def top_features(self, row: int, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` model inputs with the largest reconstruction error for ``row``."""
        err = self.feature_errors[row]
        order = np.argsort(-err, kind="stable")[:k]
        return [(self.feature_names[j], float(err[j])) for j in order]


@dataclass(frozen=True, slots=True)
class Alert:
    """A flagged record, ready for the alerts sink (the wire model is ``schema.AlertMessage``)."""

    alert_id: str
    key: str
    timestamp: float
    features: Mapping[str, float]
    score: float
    threshold: float
    top_features: tuple[SensorContribution, ...]
    model_version: int
    position: SourcePosition | None = None
    drift_recent: bool = False
    detected_at: float = 0.0
    grade: float = 0.0
    incident_id: str = ""


@dataclass(frozen=True, slots=True)
class Incident:
    """An incident lifecycle message, ready for the incidents sink (``schema.IncidentMessage``)."""

    incident_id: str
    change: IncidentChange
    position: SourcePosition  # the record that caused this message
    model_version: int
    detected_at: float = 0.0


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that could not become a scored record, with the reason."""

    reason: str
    detail: str
    original: RawMessage
    extra: Mapping[str, str] = field(default_factory=dict)
