"""Tables on disk (CSV, JSON Lines, Parquet) -> columnar chunks of records.

Every good row keeps its line number (CSV/JSONL: the 1-based line of the file
where the row starts; Parquet: the 1-based row number) and every bad row becomes
a :class:`BadRow` with the line number and a reason, never an exception.
Unparsable or missing feature values become NaN, so the engine's
``features.missing`` policy decides about them as it does for live records.

>>> import pathlib, tempfile
>>> p = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
>>> _ = p.write_text("ts;a;b\\n1;1.5;2\\n2;x;3\\n3;4\\n4;;5\\n")
>>> reader = TableReader(p, Columns(timestamp="ts"))
>>> chunks = list(reader)
>>> (reader.feature_names, chunks[0].lines.tolist(), chunks[0].values.tolist())
(('a', 'b'), [2, 5], [[1.5, 2.0], [nan, 5.0]])
>>> [(b.line, b.reason) for b in chunks[0].bad]
[(3, 'bad_value'), (4, 'field_count')]
"""

from __future__ import annotations

import csv
import io
import pathlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import orjson
import pandas as pd

from stream_ae.errors import ConfigError, SourceError
from stream_ae.records import F64, I64, Batch, Bool

Format = Literal["csv", "jsonl", "parquet"]

_SUFFIXES: dict[str, Format] = {
    ".csv": "csv", ".tsv": "csv", ".txt": "csv",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".parquet": "parquet", ".pq": "parquet",
}
_SEPARATORS = (",", ";", "\t", "|")
_MISSING = frozenset({"", "nan", "NaN", "NA", "null", "None"})
# roles guessed from column names when not given: a label or a timestamp column taken for
# a feature would leak the answer or add a meaningless ramp
_TIME_GUESSES = ("ts", "timestamp", "time", "datetime", "date")
_LABEL_GUESSES = ("label", "anomaly", "is_anomaly")
_KEY_GUESSES = ("key",)
_MS_EPOCH = 1e11  # numeric timestamps above this are milliseconds


@dataclass(frozen=True, slots=True)
class Columns:
    """Which input columns hold the timestamp, the label, the key and the features.

    Unset roles are guessed from common column names (timestamp: ``ts``, ``timestamp``,
    ``time``, ``datetime``, ``date``; label: ``label``, ``anomaly``, ``is_anomaly``; key:
    ``key``). Empty ``features`` means every other column whose values are numbers.
    """

    timestamp: str | None = None
    label: str | None = None
    key: str | None = None
    features: tuple[str, ...] = ()


ALL_COLUMNS = Columns()  # no roles given: guess them, every numeric column a feature


@dataclass(frozen=True, slots=True)
class BadRow:
    """An input row that cannot become a record: where it is and why."""

    line: int
    reason: str
    detail: str


@dataclass(frozen=True)
class Chunk:
    """Good rows of one block of the input, columnar, plus the block's bad rows."""

    lines: I64
    keys: tuple[str, ...]
    timestamps: F64
    timestamp_text: tuple[str, ...] | None
    values: F64  # as read; the engine batch gets float32
    labels: I64 | None
    bad: tuple[BadRow, ...]
    bytes_read: int

    def __len__(self) -> int:
        return len(self.keys)

    def to_batch(self) -> Batch:
        """The good rows as an engine batch."""
        with np.errstate(over="ignore"):  # beyond float32: inf, then the missing-value policy
            values = self.values.astype(np.float32)
        return Batch(self.keys, self.timestamps, values, self.labels)


def detect_format(path: pathlib.Path) -> Format:
    """The format a file name implies.

    >>> detect_format(pathlib.Path("x.ndjson"))
    'jsonl'
    """
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(f"cannot tell the format of {path}: use .csv, .jsonl or .parquet")
    return fmt


def sniff_separator(sample: str) -> str:
    """The CSV field separator: the candidate seen most often in the header line.

    Header names rarely hold separators, so this is steadier than ``csv.Sniffer``
    on short or ragged samples.

    >>> sniff_separator("a;b;c\\n1;2;3\\n")
    ';'
    >>> sniff_separator("single\\n1\\n")
    ','
    """
    header = sample.splitlines()[0] if sample else ""
    best = max(_SEPARATORS, key=header.count)
    return best if header.count(best) else ","


class TableReader:
    """Iterate over a CSV / JSONL / Parquet file in columnar chunks.

    Parameters
    ----------
    path
        The input file.
    columns
        Roles of the columns; unset timestamp/label roles are guessed from common names.
    fmt
        ``csv``, ``jsonl`` or ``parquet``; default from the file suffix.
    sep
        CSV separator; default sniffed from the first 64 KiB.
    chunk_rows
        Rows per chunk.
    max_key_length
        Rows whose key is longer (characters) are bad rows (``key_too_long``), as
        ``record.max_key_length`` does for messages.
    max_fields
        JSON Lines: an object with more fields, or one that would take a chunk's distinct
        field names beyond this, is a bad row (``too_many_fields``), as
        ``record.max_fields`` does for messages.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.jsonl"
    >>> _ = p.write_text('{"key": "d1", "x": 1}\\nnot json\\n{"key": "d2", "x": 2}\\n')
    >>> r = TableReader(p, Columns(key="key"))
    >>> c = next(iter(r))
    >>> (c.keys, c.values[:, 0].tolist(), c.bad[0].reason)
    (('d1', 'd2'), [1.0, 2.0], 'invalid_json')
    """

    def __init__(
        self,
        path: str | pathlib.Path,
        columns: Columns = ALL_COLUMNS,
        fmt: Format | None = None,
        sep: str | None = None,
        chunk_rows: int = 65_536,
        max_key_length: int = 256,
        max_fields: int = 1000,
    ) -> None:
        self.path = pathlib.Path(path)
        self.columns = columns
        self.fmt = fmt
        self.sep = sep
        self.chunk_rows = chunk_rows
        self.max_key_length = max_key_length
        self.max_fields = max_fields
        self._roles: Columns | None = None

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Feature columns in model order (known once the first chunk was read)."""
        if self._roles is None:
            raise SourceError("feature names are known after the first chunk")
        return self._roles.features

    @property
    def roles(self) -> Columns:
        """The resolved column roles (after the first chunk)."""
        if self._roles is None:
            raise SourceError("column roles are known after the first chunk")
        return self._roles

    def size_bytes(self) -> int:
        """Size of the input file, for progress bars."""
        return self.path.stat().st_size

    def __iter__(self) -> Iterator[Chunk]:
        fmt = self.fmt or detect_format(self.path)
        raw_chunks = {"csv": self._csv_chunks, "jsonl": self._jsonl_chunks,
                      "parquet": self._parquet_chunks}[fmt]()
        try:
            for raw in raw_chunks:
                if self._roles is None:
                    self._roles = resolve_columns(raw.frame, self.columns)
                yield columnize(raw, self._roles, self.max_key_length)
        except OSError as exc:
            raise SourceError(f"cannot read {self.path}: {exc}") from exc

    def _csv_chunks(self) -> Iterator[_RawChunk]:
        with self.path.open(newline="", encoding="utf-8", errors="replace") as fh:
            sep = self.sep or sniff_separator(fh.read(65_536))
            fh.seek(0)
            yield from _csv_rows(fh, sep, self.chunk_rows)

    def _jsonl_chunks(self) -> Iterator[_RawChunk]:
        with self.path.open("rb") as fh:
            yield from _jsonl_rows(fh, self.chunk_rows, self.max_fields)

    def _parquet_chunks(self) -> Iterator[_RawChunk]:
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(self.path)
        except Exception as exc:  # pyarrow raises ArrowInvalid / OSError subclasses
            raise SourceError(f"cannot read parquet file {self.path}: {exc}") from exc
        total, row = pf.metadata.num_rows, 0
        size = self.size_bytes()
        for rb in pf.iter_batches(batch_size=self.chunk_rows):
            frame = rb.to_pandas()
            lines = np.arange(row + 1, row + 1 + len(frame), dtype=np.int64)
            row += len(frame)
            yield _RawChunk(frame, lines, [], int(size * row / max(total, 1)))


@dataclass
class _RawChunk:
    frame: pd.DataFrame
    lines: I64
    bad: list[BadRow]
    bytes_read: int


def _csv_rows(fh: io.TextIOBase, sep: str, chunk_rows: int) -> Iterator[_RawChunk]:
    reader = csv.reader(fh, delimiter=sep)
    header = next(reader, None)
    if header is None:
        return
    header = [h.strip() for h in header]
    rows: list[list[str]] = []
    lines: list[int] = []
    bad: list[BadRow] = []
    prev = reader.line_num
    for fields in reader:
        start, prev = prev + 1, reader.line_num
        if not fields:
            continue  # blank line
        if len(fields) != len(header):
            bad.append(BadRow(start, "field_count",
                              f"{len(fields)} fields, the header has {len(header)}"))
        else:
            rows.append(fields)
            lines.append(start)
        if len(rows) >= chunk_rows:
            yield _csv_chunk(rows, header, lines, bad, fh)
            rows, lines, bad = [], [], []
    if rows or bad:
        yield _csv_chunk(rows, header, lines, bad, fh)


def _csv_chunk(rows: list[list[str]], header: list[str], lines: list[int], bad: list[BadRow],
               fh: io.TextIOBase) -> _RawChunk:
    frame = pd.DataFrame(rows, columns=header, dtype=object)
    return _RawChunk(frame, np.array(lines, dtype=np.int64), bad, _tell(fh))


def _tell(fh: io.TextIOBase | io.BufferedIOBase) -> int:
    try:
        return int(fh.buffer.tell()) if hasattr(fh, "buffer") else int(fh.tell())
    except OSError:
        return 0


def _jsonl_rows(fh: io.BufferedIOBase, chunk_rows: int, max_fields: int = 1000
                ) -> Iterator[_RawChunk]:
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    bad: list[BadRow] = []
    fields: set[str] = set()  # the chunk's columns: bounded, or the frame could explode
    for number, text in enumerate(fh, start=1):
        if not text.strip():
            continue
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            bad.append(BadRow(number, "invalid_json", str(exc)))
            continue
        if not isinstance(obj, dict):
            bad.append(BadRow(number, "not_an_object", f"a JSON {type(obj).__name__}"))
            continue
        if len(obj) > max_fields or len(fields.union(obj)) > max_fields:
            bad.append(BadRow(number, "too_many_fields", f"more than {max_fields} fields"))
            continue
        fields.update(obj)
        rows.append(obj)
        lines.append(number)
        if len(rows) >= chunk_rows:
            yield _RawChunk(pd.DataFrame.from_records(rows), np.array(lines, np.int64), bad,
                            _tell(fh))
            rows, lines, bad, fields = [], [], [], set()
    if rows or bad:
        yield _RawChunk(pd.DataFrame.from_records(rows), np.array(lines, np.int64), bad, _tell(fh))


# --------------------------------------------------------------------------- roles
def resolve_columns(frame: pd.DataFrame, wanted: Columns) -> Columns:
    """Fill in unset roles from the first chunk: guessed timestamp/label, numeric features."""
    names = [str(c) for c in frame.columns]
    for role in ("timestamp", "label", "key"):
        col = getattr(wanted, role)
        if col is not None and col not in names:
            raise ConfigError(f"{role} column {col!r} is not in the input (columns: {names})")
    ts = wanted.timestamp or _first_present(names, _TIME_GUESSES)
    label = wanted.label or _first_present(names, _LABEL_GUESSES)
    key = wanted.key or _first_present(names, _KEY_GUESSES)
    taken = {ts, label, key}
    if wanted.features:
        missing = [f for f in wanted.features if f not in names]
        if missing:
            raise ConfigError(f"feature columns {missing} are not in the input (columns: {names})")
        features = tuple(wanted.features)
    else:
        features = tuple(c for c in names if c not in taken and _mostly_numeric(frame[c]))
    if not features:
        raise ConfigError(f"no numeric feature columns in the input (columns: {names})")
    return Columns(timestamp=ts, label=label, key=key, features=features)


def _first_present(names: Sequence[str], guesses: Sequence[str]) -> str | None:
    lower = {n.lower(): n for n in names}
    return next((lower[g] for g in guesses if g in lower), None)


def _mostly_numeric(col: pd.Series) -> bool:
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_datetime64_any_dtype(col):
        return False
    if pd.api.types.is_numeric_dtype(col):
        return True
    present = col[~_is_missing(col)]
    if len(present) == 0:
        return False
    parsed = pd.to_numeric(present, errors="coerce")
    return bool(parsed.notna().mean() >= 0.5)


# --------------------------------------------------------------------------- columns
def columnize(raw: _RawChunk, roles: Columns, max_key_length: int = 256) -> Chunk:
    """Turn one raw chunk into typed arrays; rows with bad fields join ``bad``."""
    frame, n = raw.frame, len(raw.frame)
    bad_mask = np.zeros(n, dtype=np.bool_)
    reasons: dict[int, BadRow] = {}
    values = np.empty((n, len(roles.features)), dtype=np.float64)
    for j, name in enumerate(roles.features):
        col = frame[name] if name in frame.columns else pd.Series([None] * n, dtype=object)
        values[:, j], wrong = _parse_numbers(col)
        _mark(wrong, raw.lines, bad_mask, reasons, "bad_value", f"{name} is not a number", col)
    timestamps, text = _timestamps(frame, roles.timestamp, raw.lines, bad_mask, reasons)
    labels = _labels(frame, roles.label, raw.lines, bad_mask, reasons)
    keys = _keys(frame, roles.key, n)
    too_long = np.fromiter((len(k) > max_key_length for k in keys), np.bool_, n)
    if too_long.any():
        _mark(too_long, raw.lines, bad_mask, reasons, "key_too_long",
              f"key longer than {max_key_length} characters", pd.Series(
                  [k[:40] for k in keys], dtype=object))
    keep = ~bad_mask
    return Chunk(
        lines=raw.lines[keep],
        keys=tuple(k for k, ok in zip(keys, keep, strict=True) if ok),
        timestamps=timestamps[keep],
        timestamp_text=None if text is None else tuple(t for t, ok in
                                                       zip(text, keep, strict=True) if ok),
        values=np.ascontiguousarray(values[keep]),
        labels=None if labels is None else labels[keep],
        bad=tuple(sorted([*raw.bad, *reasons.values()], key=lambda b: b.line)),
        bytes_read=raw.bytes_read,
    )


def _is_missing(col: pd.Series) -> Bool:
    if pd.api.types.is_numeric_dtype(col):
        return np.asarray(col.isna(), dtype=np.bool_)
    as_text = col.astype(str).str.strip()
    return np.asarray(col.isna() | as_text.isin(_MISSING), dtype=np.bool_)


def _parse_numbers(col: pd.Series) -> tuple[F64, Bool]:
    """Values as float64 (NaN when missing) and a mask of present values that are not numbers."""
    if pd.api.types.is_bool_dtype(col):
        col = col.astype(float)
    parsed = pd.to_numeric(col, errors="coerce")
    out: F64 = np.asarray(parsed, dtype=np.float64)
    wrong: Bool = np.isnan(out) & ~_is_missing(col)
    return out, wrong


def _mark(wrong: Bool, lines: I64, bad_mask: Bool, reasons: dict[int, BadRow], reason: str,
          detail: str, col: pd.Series) -> None:
    for i in np.flatnonzero(wrong & ~bad_mask):
        reasons[int(i)] = BadRow(int(lines[i]), reason, f"{detail}: {col.iloc[i]!r}")
    bad_mask |= wrong


def _keys(frame: pd.DataFrame, key: str | None, n: int) -> list[str]:
    if key is None or key not in frame.columns:
        return [""] * n
    col = frame[key]
    return ["" if m else str(v) for v, m in zip(col.tolist(), _is_missing(col), strict=True)]


def _labels(frame: pd.DataFrame, label: str | None, lines: I64, bad_mask: Bool,
            reasons: dict[int, BadRow]) -> I64 | None:
    if label is None or label not in frame.columns:
        return None
    col = frame[label]
    parsed, wrong = _parse_numbers(col)
    _mark(wrong, lines, bad_mask, reasons, "bad_label", f"label {label} is not 0/1", col)
    out = np.where(np.isnan(parsed), -1, (parsed != 0).astype(np.int64))
    return np.asarray(out, dtype=np.int64)


def _timestamps(frame: pd.DataFrame, ts: str | None, lines: I64, bad_mask: Bool,
                reasons: dict[int, BadRow]) -> tuple[F64, list[str] | None]:
    n = len(frame)
    if ts is None or ts not in frame.columns:
        return np.full(n, np.nan), None
    col = frame[ts]
    secs, wrong = parse_timestamps(col)
    _mark(wrong, lines, bad_mask, reasons, "bad_timestamp", f"{ts} is not a time", col)
    text = ["" if m else str(v) for v, m in zip(col.tolist(), _is_missing(col), strict=True)]
    return secs, text


def parse_timestamps(col: pd.Series) -> tuple[F64, Bool]:
    """Epoch seconds (numbers; milliseconds above 1e11) or ISO-8601 text -> float seconds.

    Returns the seconds (NaN when missing) and a mask of present values that are not times.

    >>> secs, wrong = parse_timestamps(pd.Series(["1700000000", "1700000000500",
    ...                                           "2023-11-14T22:13:20Z", "soon", ""]))
    >>> (secs[:3].tolist(), wrong.tolist())
    ([1700000000.0, 1700000000.5, 1700000000.0], [False, False, False, True, False])
    """
    missing = _is_missing(col)
    if pd.api.types.is_datetime64_any_dtype(col):
        utc = pd.to_datetime(col, utc=True)
        secs: F64 = np.asarray((utc - pd.Timestamp(0, tz="UTC")).dt.total_seconds(), np.float64)
        return secs, np.zeros(len(col), dtype=np.bool_)
    num = np.asarray(pd.to_numeric(col, errors="coerce"), dtype=np.float64)
    num = np.where(num > _MS_EPOCH, num / 1000.0, num)
    text_rows = np.isnan(num) & ~missing
    if text_rows.any():
        text = col[text_rows].astype(str)
        when = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
        delta = (when - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
        num[text_rows] = delta.to_numpy(np.float64)
    wrong: Bool = np.isnan(num) & ~missing
    return np.asarray(num, dtype=np.float64), wrong
