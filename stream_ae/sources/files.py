"""Table files (CSV, JSON Lines, Parquet) -> raw blocks for the one decoder.

A file is read as partition 0 of a "topic" named after it; a row's offset is its line
number (CSV/JSONL: the 1-based line of the file where the row starts; Parquet: the
1-based row number). JSON Lines rows are handed over as their bytes, exactly like Kafka
messages; CSV and Parquet rows as mappings of their fields, with numeric text turned into
numbers and empty cells into None. :class:`stream_ae.decode.Decoder` then makes every row
a record or a dead letter, with the same reasons as for live messages. Rows that cannot
even be split into fields (a CSV row with the wrong field count) arrive as
:class:`~stream_ae.records.Unreadable` values.

>>> import pathlib, tempfile
>>> p = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
>>> _ = p.write_text("ts;a;b\\n1;1.5;2\\n2;x;3\\n3;4\\n4;;5\\n")
>>> src = FileSource(p, Columns(timestamp="ts"))
>>> blk = src.poll_blocks(100, 0.0)[0]
>>> (src.roles.features, blk.offsets, blk.values[0], blk.values[2].reason)
(('a', 'b'), [2, 3, 4, 5], {'ts': 1.0, 'a': 1.5, 'b': 2.0}, 'field_count')
"""

from __future__ import annotations

import csv
import io
import pathlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import orjson
import pandas as pd

from stream_ae.config import RecordFormat
from stream_ae.decode import MS_THRESHOLD, CleanColumns
from stream_ae.errors import ConfigError, InputFileError, SourceError
from stream_ae.records import RawBlock, Unreadable
from stream_ae.types import Bool

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
_ABSENT = "\x00absent"  # a field name no row holds: the role is not in this file
_ROLE_SAMPLE = 1000  # JSON Lines rows the column roles are guessed from


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


@dataclass(frozen=True)
class FileBlock(RawBlock):
    """A block of file rows, with each row's timestamp as written (predictions quote it)
    and, for a clean table chunk, its rows already parsed into columns (``columns``; the
    per-row ``values`` are then built only if something asks for them)."""

    timestamp_text: tuple[str, ...] | None = None
    has_key: bool = False
    bytes_read: int = 0
    columns: CleanColumns | None = None


class _LazyRows(Sequence[Any]):
    """The per-row field mappings of a table chunk, built on first access: a clean chunk is
    decoded from its columns and never needs them."""

    def __init__(self, n: int, build: Callable[[], list[Any]]) -> None:
        self._n = n
        self._build = build
        self._rows: list[Any] | None = None

    def __len__(self) -> int:
        return self._n

    def _all(self) -> list[Any]:
        if self._rows is None:
            self._rows = self._build()
        return self._rows

    def __getitem__(self, i: Any) -> Any:
        return self._all()[i]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._all())


def detect_format(path: pathlib.Path) -> Format:
    """The format a file name implies.

    >>> detect_format(pathlib.Path("x.ndjson"))
    'jsonl'
    """
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise InputFileError(f"cannot tell the format of {path}: use .csv, .jsonl or .parquet")
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


class FileSource:
    """A CSV / JSONL / Parquet file as raw blocks of rows, in file order.

    Parameters
    ----------
    path
        The input file.
    columns
        Roles of the columns; unset timestamp/label/key roles are guessed from common names.
    fmt
        ``csv``, ``jsonl`` or ``parquet``; default from the file suffix.
    sep
        CSV separator; default sniffed from the first 64 KiB.
    chunk_rows
        Rows per block.
    max_message_bytes
        Record size limit (from ``record.max_message_bytes``), for :meth:`record_format`.
    max_key_length, max_fields
        Key and field-count limits (``record.max_key_length``, ``record.max_fields``), for
        :meth:`record_format`; JSON Lines objects with more fields are also left out of the
        sample the column roles are guessed from.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.jsonl"
    >>> _ = p.write_text('{"key": "d1", "x": 1}\\nnot json\\n{"key": "d2", "x": 2}\\n')
    >>> src = FileSource(p)
    >>> blk = src.poll_blocks(100, 0.0)[0]
    >>> (blk.offsets, src.roles.key, src.roles.features, src.done)
    ([1, 2, 3], 'key', ('x',), False)
    """

    def __init__(self, path: str | pathlib.Path, columns: Columns = ALL_COLUMNS,
                 fmt: Format | None = None, sep: str | None = None, chunk_rows: int = 65_536,
                 max_message_bytes: int = 1_000_000, max_key_length: int = 256,
                 max_fields: int = 1000) -> None:
        self.path = pathlib.Path(path)
        self.columns = columns
        self.fmt = fmt
        self.sep = sep
        self.chunk_rows = chunk_rows
        self.max_message_bytes = max_message_bytes
        self.max_key_length = max_key_length
        self.max_fields = max_fields
        self._roles: Columns | None = None
        self._blocks: Iterator[FileBlock] | None = None
        self._done = False

    @property
    def topic(self) -> str:
        """The name the file's rows are positioned under (partition 0)."""
        return self.path.name

    @property
    def done(self) -> bool:
        return self._done

    @property
    def roles(self) -> Columns:
        """The resolved column roles (after the first block)."""
        if self._roles is None:
            raise SourceError("column roles are known after the first block")
        return self._roles

    def record_format(self) -> RecordFormat:
        """Where the decoder finds key, timestamp and label in this file's rows."""
        r = self.roles
        return RecordFormat(key_field=r.key or _ABSENT, timestamp_field=r.timestamp or _ABSENT,
                            label_field=r.label, max_message_bytes=self.max_message_bytes,
                            max_key_length=self.max_key_length, max_fields=self.max_fields)

    def size_bytes(self) -> int:
        """Size of the input file, for progress bars."""
        try:
            return self.path.stat().st_size
        except OSError as exc:
            raise InputFileError(f"cannot read {self.path}: {exc}") from exc

    def open(self) -> None:
        fmt = self.fmt or detect_format(self.path)
        self._blocks = {"csv": self._csv_blocks, "jsonl": self._jsonl_blocks,
                        "parquet": self._parquet_blocks}[fmt]()

    def poll_blocks(self, max_n: int, timeout: float) -> list[RawBlock]:
        """The next block of rows (``chunk_rows`` of them; ``max_n`` is not applied:
        results do not depend on how rows are split); empty and ``done`` at the end."""
        if self._blocks is None:
            self.open()
        assert self._blocks is not None
        try:
            block = next(self._blocks, None)
        except OSError as exc:
            raise InputFileError(f"cannot read {self.path}: {exc}") from exc
        if block is None:
            self._done = True
            return []
        return [block]

    def close(self) -> None:
        self._blocks = None
        self._done = True

    def _csv_blocks(self) -> Iterator[FileBlock]:
        with self.path.open(newline="", encoding="utf-8", errors="replace") as fh:
            sep = self.sep or sniff_separator(fh.read(65_536))
            fh.seek(0)
            for raw in _csv_rows(fh, sep, self.chunk_rows):
                yield self._table_block(raw)

    def _parquet_blocks(self) -> Iterator[FileBlock]:
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(self.path)
        except Exception as exc:  # pyarrow raises ArrowInvalid / OSError subclasses
            raise InputFileError(f"cannot read parquet file {self.path}: {exc}") from exc
        total, row = pf.metadata.num_rows, 0
        size = self.size_bytes()
        for rb in pf.iter_batches(batch_size=self.chunk_rows):
            frame = rb.to_pandas()
            lines = list(range(row + 1, row + 1 + len(frame)))
            row += len(frame)
            yield self._table_block(_RawChunk(frame, lines, [], int(size * row / max(total, 1))))

    def _jsonl_blocks(self) -> Iterator[FileBlock]:
        with self.path.open("rb") as fh:
            for lines, values in _jsonl_rows(fh, self.chunk_rows):
                if self._roles is None:
                    self._roles = resolve_columns(_sample_frame(values, self.max_fields),
                                                  self.columns)
                n = len(lines)
                ts_text = None
                if self._roles.timestamp is not None:
                    ts_text = tuple(_json_field_text(v, self._roles.timestamp) for v in values)
                yield FileBlock(self.topic, 0, lines, values, [None] * n, [None] * n,
                                timestamp_text=ts_text, has_key=self._roles.key is not None,
                                bytes_read=_tell(fh))

    def _table_block(self, raw: _RawChunk) -> FileBlock:
        if self._roles is None:
            self._roles = resolve_columns(raw.frame, self.columns)
        clean = None if raw.bad else clean_columns(raw.frame, self._roles, self.max_key_length)
        if clean is not None:
            roles, frame, n = self._roles, raw.frame, len(raw.lines)
            text = _timestamp_text(frame, roles)
            return FileBlock(self.topic, 0, raw.lines,
                             _LazyRows(n, lambda: table_rows(frame, roles)[0]),
                             [None] * n, [None] * n,
                             timestamp_text=None if text is None else tuple(text),
                             has_key=roles.key is not None, bytes_read=raw.bytes_read,
                             columns=clean)
        rows, ts_text = table_rows(raw.frame, self._roles)
        lines, values = _merge_bad(raw.lines, rows, raw.bad)
        if ts_text is not None:
            _, ts_text = _merge_bad(raw.lines, ts_text, [(b[0], "") for b in raw.bad])
        n = len(lines)
        return FileBlock(self.topic, 0, lines, values, [None] * n, [None] * n,
                         timestamp_text=None if ts_text is None else tuple(ts_text),
                         has_key=self._roles.key is not None, bytes_read=raw.bytes_read)


@dataclass
class _RawChunk:
    frame: pd.DataFrame
    lines: list[int]
    bad: list[tuple[int, Any]] = field(default_factory=list)  # (line, Unreadable)
    bytes_read: int = 0


def _merge_bad(lines: list[int], rows: Sequence[Any], bad: list[tuple[int, Any]]
               ) -> tuple[list[int], list[Any]]:
    """Good rows and unreadable rows in line order."""
    if not bad:
        return list(lines), list(rows)
    merged = sorted([*zip(lines, rows, strict=True), *bad], key=lambda x: x[0])
    return [m[0] for m in merged], [m[1] for m in merged]


def _csv_rows(fh: io.TextIOBase, sep: str, chunk_rows: int) -> Iterator[_RawChunk]:
    reader = csv.reader(fh, delimiter=sep)
    header = next(reader, None)
    if header is None:
        return
    header = [h.strip() for h in header]
    rows: list[list[str]] = []
    lines: list[int] = []
    bad: list[tuple[int, Any]] = []
    prev = reader.line_num
    for fields in reader:
        start, prev = prev + 1, reader.line_num
        if not fields:
            continue  # blank line
        if len(fields) != len(header):
            bad.append((start, Unreadable("field_count", f"{len(fields)} fields, the header "
                                          f"has {len(header)}", sep.join(fields).encode())))
        else:
            rows.append(fields)
            lines.append(start)
        if len(rows) >= chunk_rows:
            yield _RawChunk(pd.DataFrame(rows, columns=header, dtype=object), lines, bad,
                            _tell(fh))
            rows, lines, bad = [], [], []
    if rows or bad:
        yield _RawChunk(pd.DataFrame(rows, columns=header, dtype=object), lines, bad, _tell(fh))


def _jsonl_rows(fh: io.BufferedIOBase, chunk_rows: int) -> Iterator[tuple[list[int], list[bytes]]]:
    lines: list[int] = []
    values: list[bytes] = []
    for number, text in enumerate(fh, start=1):
        if not text.strip():
            continue
        lines.append(number)
        values.append(text.rstrip(b"\r\n"))
        if len(lines) >= chunk_rows:
            yield lines, values
            lines, values = [], []
    if lines:
        yield lines, values


def _sample_frame(values: Sequence[bytes], max_fields: int = 1000) -> pd.DataFrame:
    objs: list[dict[str, Any]] = []
    names: set[str] = set()  # the frame's columns: bounded, or hostile rows could explode it
    for v in values[:_ROLE_SAMPLE]:
        try:
            obj = orjson.loads(v)
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict) and len(names.union(obj)) <= max_fields:
            names.update(obj)
            objs.append(obj)
    return pd.DataFrame.from_records(objs)


def _json_field_text(value: bytes, name: str) -> str:
    try:
        obj = orjson.loads(value)
        v = obj.get(name) if isinstance(obj, dict) else None
    except orjson.JSONDecodeError:
        v = None
    return "" if v is None else str(v)


def _tell(fh: io.TextIOBase | io.BufferedIOBase) -> int:
    try:
        return int(fh.buffer.tell()) if hasattr(fh, "buffer") else int(fh.tell())
    except OSError:
        return 0


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


# --------------------------------------------------------------------------- rows
def table_rows(frame: pd.DataFrame, roles: Columns) -> tuple[list[dict[str, Any]],
                                                             list[str] | None]:
    """The rows of a table chunk as field mappings for the decoder (numbers as floats,
    missing cells as None, other text as it is), and the timestamp column as written.

    >>> f = pd.DataFrame({"ts": ["1", "2"], "x": ["1.5", "oops"], "k": ["a", ""]},
    ...                  dtype=object)
    >>> table_rows(f, Columns(timestamp="ts", key="k", features=("x",)))
    ([{'ts': 1.0, 'k': 'a', 'x': 1.5}, {'ts': 2.0, 'k': None, 'x': 'oops'}], ['1', '2'])
    """
    names = [n for n in (roles.timestamp, roles.key, roles.label) if n is not None]
    names += [f for f in roles.features if f not in names]
    cols: list[list[Any]] = []
    for name in names:
        col = frame[name] if name in frame.columns else pd.Series([None] * len(frame))
        cols.append(_key_values(col) if name == roles.key else _field_values(col))
    rows = [dict(zip(names, vals, strict=True)) for vals in zip(*cols, strict=True)]
    text = None
    if roles.timestamp is not None and roles.timestamp in frame.columns:
        col = frame[roles.timestamp]
        text = ["" if m else str(v) for v, m in zip(col.tolist(), _is_missing(col), strict=True)]
    return rows, text


def _timestamp_text(frame: pd.DataFrame, roles: Columns) -> list[str] | None:
    if roles.timestamp is None or roles.timestamp not in frame.columns:
        return None
    col = frame[roles.timestamp]
    return ["" if m else str(v) for v, m in zip(col.tolist(), _is_missing(col), strict=True)]


def clean_columns(frame: pd.DataFrame, roles: Columns, max_key_length: int = 256
                  ) -> CleanColumns | None:
    """The chunk as columns when every row is a valid record that the per-row path would
    decode to exactly these values (features numeric and finite, keys present, timestamps
    numbers or datetimes in seconds, labels 0/1); None otherwise (the rows then go one by
    one through the decoder, which dead-letters or repairs what it must).

    >>> f = pd.DataFrame({"ts": [1.0, 2.0], "k": ["a", "b"], "x": [1.5, 2.5]})
    >>> c = clean_columns(f, Columns(timestamp="ts", key="k", features=("x",)))
    >>> (c.keys, c.stamps.tolist(), c.values.tolist(), c.labels)
    (('a', 'b'), [1.0, 2.0], [[1.5], [2.5]], None)
    >>> clean_columns(f.assign(x=[1.5, None]), Columns(timestamp="ts", key="k",
    ...                                                features=("x",))) is None
    True
    """
    n = len(frame)
    if any(f not in frame.columns for f in roles.features):
        return None
    cols = [_clean_numbers(frame[f]) for f in roles.features]
    if any(c is None or not np.isfinite(c).all() for c in cols):
        return None
    stamps: Any = np.full(n, np.nan)
    if roles.timestamp is not None:
        stamps = _clean_numbers(frame[roles.timestamp]) if roles.timestamp in frame else None
        if stamps is None or (np.abs(stamps) > MS_THRESHOLD).any():
            return None  # milliseconds and odd values: the per-row path converts them
    keys: tuple[str, ...] = ("",) * n
    if roles.key is not None:
        if roles.key not in frame or _is_missing(frame[roles.key]).any():
            return None
        keys = tuple(map(str, frame[roles.key].tolist()))
        if max(map(len, keys), default=0) > max_key_length:
            return None  # the per-row path dead-letters the long keys
    labels = None
    if roles.label is not None:
        lab = _clean_numbers(frame[roles.label]) if roles.label in frame else None
        if lab is None or not np.isin(lab, (-1.0, 0.0, 1.0)).all():
            return None
        labels = lab.astype(np.int64) if (lab >= 0).any() else None
    present = [c for c in cols if c is not None]
    values = np.column_stack(present) if present else np.zeros((n, 0))
    return CleanColumns(tuple(roles.features), np.ascontiguousarray(values, np.float64), keys,
                        np.asarray(stamps, np.float64), labels)


def _clean_numbers(col: pd.Series) -> np.ndarray | None:
    """A column as float64 exactly as :func:`_field_values` reads it, None when any cell is
    missing or not a number."""
    if pd.api.types.is_bool_dtype(col):
        return None
    if pd.api.types.is_datetime64_any_dtype(col):
        if col.isna().any():
            return None
        utc = pd.to_datetime(col, utc=True)
        return np.asarray((utc - pd.Timestamp(0, tz="UTC")).dt.total_seconds(), np.float64)
    if not pd.api.types.is_numeric_dtype(col) and _is_missing(col).any():
        return None
    num = np.asarray(pd.to_numeric(col, errors="coerce"), dtype=np.float64)
    return None if np.isnan(num).any() else num


def _field_values(col: pd.Series) -> list[Any]:
    """Numbers as floats, missing as None, datetimes as epoch seconds, other text as is."""
    missing = _is_missing(col)
    if pd.api.types.is_datetime64_any_dtype(col):
        utc = pd.to_datetime(col, utc=True)
        secs = (utc - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(np.float64)
        return [None if m else float(x) for x, m in zip(secs, missing, strict=True)]
    if pd.api.types.is_bool_dtype(col):
        col = col.astype(float)
    num = np.asarray(pd.to_numeric(col, errors="coerce"), dtype=np.float64)
    numeric = ~np.isnan(num)
    if numeric.all():
        return num.tolist()  # type: ignore[no-any-return]
    raw = col.tolist()
    nums = num.tolist()
    return [n if ok else (None if m else r)
            for n, ok, m, r in zip(nums, numeric, missing, raw, strict=True)]


def _key_values(col: pd.Series) -> list[str | None]:
    return [None if m else str(v) for v, m in zip(col.tolist(), _is_missing(col), strict=True)]


def _is_missing(col: pd.Series) -> Bool:
    if pd.api.types.is_numeric_dtype(col):
        return np.asarray(col.isna(), dtype=np.bool_)
    as_text = col.astype(str).str.strip()
    return np.asarray(col.isna() | as_text.isin(_MISSING), dtype=np.bool_)


