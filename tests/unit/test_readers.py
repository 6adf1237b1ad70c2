"""Readers: the same table as CSV, JSON Lines and Parquet gives the same chunks."""

from __future__ import annotations

import pathlib

import numpy as np
import orjson
import pandas as pd
import pytest

from stream_ae.errors import ConfigError
from stream_ae.readers import BadRow, Columns, TableReader, parse_timestamps, sniff_separator
from stream_ae.sources.base import Source
from stream_ae.sources.replay import FileSource

FRAME = pd.DataFrame({
    "time": ["2024-01-01T00:00:00Z", "2024-01-01T00:00:01Z", "2024-01-01T00:00:02Z"],
    "device": ["d1", "d2", "d1"],
    "temp": [20.5, 21.0, 19.5],
    "pressure": [1.0, 1.1, 1.2],
    "label": [0, 1, 0],
})
T0 = pd.Timestamp("2024-01-01T00:00:00Z").timestamp()


def _write(frame: pd.DataFrame, path: pathlib.Path) -> pathlib.Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_every_format_gives_the_same_records(tmp_path: pathlib.Path, suffix: str) -> None:
    reader = TableReader(_write(FRAME, tmp_path / f"t{suffix}"), Columns(key="device"))
    (chunk,) = list(reader)
    assert reader.roles == Columns("time", "label", "device", ("temp", "pressure"))
    assert chunk.keys == ("d1", "d2", "d1")
    np.testing.assert_allclose(chunk.timestamps, [T0, T0 + 1, T0 + 2])
    np.testing.assert_allclose(chunk.values, [[20.5, 1.0], [21.0, 1.1], [19.5, 1.2]], rtol=1e-6)
    assert chunk.labels is not None and chunk.labels.tolist() == [0, 1, 0]
    first_line = 2 if suffix == ".csv" else 1  # CSV line 1 is the header
    assert chunk.lines.tolist() == [first_line, first_line + 1, first_line + 2]
    assert chunk.bad == ()


def test_csv_bad_rows_carry_line_and_reason(tmp_path: pathlib.Path) -> None:
    p = tmp_path / "bad.csv"
    p.write_text(
        "ts,a,b,label\n"
        "1,1.0,2.0,0\n"
        "2,oops,2.0,0\n"      # line 3: not a number
        "3,1.0\n"              # line 4: too few fields
        "yesterday,1.0,2.0,0\n"  # line 5: bad timestamp
        "\n"                   # line 6: blank, skipped silently
        "6,1.0,2.0,maybe\n"    # line 7: bad label
        "7,,2.0,\n"            # line 8: missing value (NaN) and unknown label: kept
    )
    (chunk,) = list(TableReader(p, Columns(timestamp="ts")))
    assert [(b.line, b.reason) for b in chunk.bad] == [
        (3, "bad_value"), (4, "field_count"), (5, "bad_timestamp"), (7, "bad_label"),
    ]
    assert chunk.lines.tolist() == [2, 8]
    assert np.isnan(chunk.values[1, 0]) and chunk.values[1, 1] == 2.0
    assert chunk.labels is not None and chunk.labels.tolist() == [0, -1]
    assert "oops" in chunk.bad[0].detail


def test_jsonl_bad_lines_and_missing_fields(tmp_path: pathlib.Path) -> None:
    p = tmp_path / "t.jsonl"
    p.write_text('{"a": 1, "b": 2}\n[1, 2]\n{"a": 3\n{"a": 5}\n{"a": "x", "b": 1}\n')
    (chunk,) = list(TableReader(p, Columns(features=("a", "b"))))
    assert chunk.bad == (
        BadRow(2, "not_an_object", "a JSON list"),
        chunk.bad[1],
        BadRow(5, "bad_value", "a is not a number: 'x'"),
    )
    assert chunk.bad[1].line == 3 and chunk.bad[1].reason == "invalid_json"
    assert chunk.lines.tolist() == [1, 4]
    assert chunk.values[1, 0] == 5.0 and np.isnan(chunk.values[1, 1])


def test_chunks_split_long_inputs_and_keep_order(tmp_path: pathlib.Path) -> None:
    n = 1000
    frame = pd.DataFrame({"x": np.arange(n, dtype=float), "y": np.ones(n)})
    chunks = list(TableReader(_write(frame, tmp_path / "long.csv"), chunk_rows=300))
    assert [len(c) for c in chunks] == [300, 300, 300, 100]
    lines = np.concatenate([c.lines for c in chunks])
    assert lines.tolist() == list(range(2, n + 2))
    assert np.concatenate([c.values[:, 0] for c in chunks]).tolist() == list(range(n))
    assert chunks[-1].bytes_read == (tmp_path / "long.csv").stat().st_size


def test_separator_is_detected_or_given(tmp_path: pathlib.Path) -> None:
    p = tmp_path / "semi.csv"
    p.write_text("a;b\n1,5;2\n")
    assert sniff_separator(p.read_text()) == ";"
    (chunk,) = list(TableReader(p, Columns(features=("a", "b"))))
    assert chunk.bad[0].reason == "bad_value"  # "1,5" is not a number: no locale guessing
    (given,) = list(TableReader(p, sep=";", columns=Columns(features=("b",))))
    assert given.values.tolist() == [[2.0]]


def test_unknown_columns_are_config_errors(tmp_path: pathlib.Path) -> None:
    p = _write(FRAME, tmp_path / "t.csv")
    with pytest.raises(ConfigError, match="nope"):
        list(TableReader(p, Columns(features=("temp", "nope"))))
    with pytest.raises(ConfigError, match="label column"):
        list(TableReader(p, Columns(label="missing")))


def test_text_columns_are_not_features(tmp_path: pathlib.Path) -> None:
    frame = FRAME.assign(status=["ok", "ok", "fail"])
    reader = TableReader(_write(frame, tmp_path / "t.csv"))
    list(reader)
    assert reader.feature_names == ("temp", "pressure")


def test_timestamps_epoch_seconds_millis_and_iso() -> None:
    secs, wrong = parse_timestamps(pd.Series(["1700000000", "1700000000250", "2020-03-09 10:14:33",
                                              None, "later"]))
    expected_iso = pd.Timestamp("2020-03-09 10:14:33", tz="UTC").timestamp()
    assert secs[:3].tolist() == [1700000000.0, 1700000000.25, expected_iso]
    assert np.isnan(secs[3]) and np.isnan(secs[4])
    assert wrong.tolist() == [False, False, False, False, True]


def test_parquet_datetime_columns(tmp_path: pathlib.Path) -> None:
    frame = FRAME.assign(time=pd.to_datetime(FRAME["time"]))
    (chunk,) = list(TableReader(_write(frame, tmp_path / "t.parquet")))
    np.testing.assert_allclose(chunk.timestamps, [T0, T0 + 1, T0 + 2])


def test_file_source_follows_the_source_protocol(tmp_path: pathlib.Path) -> None:
    frame = FRAME.rename(columns={"device": "key"})
    path = _write(frame, tmp_path / "t.jsonl")
    with path.open("a") as fh:
        fh.write("garbage\n")
    src = FileSource(path)
    assert isinstance(src, Source)
    first = src.poll(2, 0.0)
    assert [m.position.offset for m in first] == [1, 2]
    assert src.position() == {("t.jsonl", 0): 3}
    rest = src.poll(10, 0.0)
    assert [m.position.offset for m in rest] == [3] and src.poll(10, 0.0) == []
    assert src.done and [b.line for b in src.bad_rows] == [4]
    assert src.position() == {("t.jsonl", 0): 5}  # past the bad last line
    obj = orjson.loads(first[1].value or b"")
    assert obj == {"key": "d2", "ts": T0 + 1, "temp": 21.0, "pressure": 1.1, "label": 1}
    assert first[1].key == b"d2"
    src.close()
