"""File source: the same table as CSV, JSON Lines and Parquet decodes to the same records,
and bad rows become dead letters with the decoder's reasons."""

from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd
import pytest

from stream_ae.decode import Decoded, Decoder
from stream_ae.errors import ConfigError
from stream_ae.records import RawBlock
from stream_ae.sources.base import BlockReader
from stream_ae.sources.files import Columns, FileSource, sniff_separator

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


def blocks(src: FileSource) -> list[RawBlock]:
    out = []
    src.open()
    while not src.done:
        out += src.poll_blocks(1 << 20, 0.0)
    return out


def decode_all(src: FileSource, missing: str = "reject") -> tuple[list[RawBlock], Decoded]:
    (block,) = blocks(src)
    return [block], Decoder(src.roles.features, src.record_format(), missing).decode(block)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_every_format_gives_the_same_records(tmp_path: pathlib.Path, suffix: str) -> None:
    src = FileSource(_write(FRAME, tmp_path / f"t{suffix}"), Columns(key="device"))
    _, d = decode_all(src)
    assert src.roles == Columns("time", "label", "device", ("temp", "pressure"))
    assert d.batch.keys == ("d1", "d2", "d1")
    np.testing.assert_allclose(d.batch.timestamps, [T0, T0 + 1, T0 + 2])
    np.testing.assert_allclose(d.batch.values, [[20.5, 1.0], [21.0, 1.1], [19.5, 1.2]],
                               rtol=1e-6)
    assert d.batch.labels is not None and d.batch.labels.tolist() == [0, 1, 0]
    first_line = 2 if suffix == ".csv" else 1  # CSV line 1 is the header
    assert d.offsets.tolist() == [first_line, first_line + 1, first_line + 2]
    assert d.dead_letters == ()


def test_csv_bad_rows_carry_line_and_the_decoders_reason(tmp_path: pathlib.Path) -> None:
    p = tmp_path / "bad.csv"
    p.write_text(
        "ts,a,b,label\n"
        "1,1.0,2.0,0\n"
        "2,oops,2.0,0\n"      # line 3: not a number
        "3,1.0\n"              # line 4: too few fields
        "yesterday,1.0,2.0,0\n"  # line 5: bad timestamp
        "\n"                   # line 6: blank, skipped silently
        "6,1.0,2.0,maybe\n"    # line 7: bad label
        "7,,2.0,\n"            # line 8: missing value, unknown label
    )
    _, d = decode_all(FileSource(p, Columns(timestamp="ts")))
    assert [(x.original.position.offset, x.reason) for x in d.dead_letters] == [
        (3, "non_numeric"), (4, "field_count"), (5, "bad_timestamp"), (7, "bad_label"),
        (8, "missing_feature"),
    ]
    assert d.offsets.tolist() == [2]
    assert "oops" in d.dead_letters[0].detail
    _, ffill = decode_all(FileSource(p, Columns(timestamp="ts")), missing="ffill")
    assert ffill.offsets.tolist() == [2, 8]
    assert np.isnan(ffill.batch.values[1, 0]) and ffill.batch.values[1, 1] == 2.0
    assert ffill.batch.labels is not None and ffill.batch.labels.tolist() == [0, -1]


def test_jsonl_rows_are_decoded_like_messages(tmp_path: pathlib.Path) -> None:
    p = tmp_path / "t.jsonl"
    p.write_text('{"a": 1, "b": 2}\n[1, 2]\n{"a": 3\n{"a": 5}\n{"a": "x", "b": 1}\n')
    _, d = decode_all(FileSource(p, Columns(features=("a", "b"))))
    assert [(x.original.position.offset, x.reason) for x in d.dead_letters] == [
        (2, "not_object"), (3, "invalid_json"), (4, "missing_feature"), (5, "non_numeric")]
    assert d.dead_letters[0].detail == "JSON list, expected an object"
    assert d.dead_letters[0].original.value == b"[1, 2]"
    assert d.offsets.tolist() == [1]


def test_blocks_split_long_inputs_and_keep_order(tmp_path: pathlib.Path) -> None:
    n = 1000
    frame = pd.DataFrame({"x": np.arange(n, dtype=float), "y": np.ones(n)})
    src = FileSource(_write(frame, tmp_path / "long.csv"), chunk_rows=300)
    got = blocks(src)
    assert [len(b) for b in got] == [300, 300, 300, 100]
    assert [o for b in got for o in b.offsets] == list(range(2, n + 2))
    assert [v["x"] for b in got for v in b.values] == list(range(n))  # type: ignore[index]
    assert got[-1].bytes_read == (tmp_path / "long.csv").stat().st_size  # type: ignore[attr-defined]


def test_separator_is_detected_or_given(tmp_path: pathlib.Path) -> None:
    p = tmp_path / "semi.csv"
    p.write_text("a;b\n1,5;2\n")
    assert sniff_separator(p.read_text()) == ";"
    _, d = decode_all(FileSource(p, Columns(features=("a", "b"))))
    assert d.dead_letters[0].reason == "non_numeric"  # "1,5" is not a number: no locale guess
    _, given = decode_all(FileSource(p, sep=";", columns=Columns(features=("b",))))
    assert given.batch.values.tolist() == [[2.0]]


def test_unknown_columns_are_config_errors(tmp_path: pathlib.Path) -> None:
    p = _write(FRAME, tmp_path / "t.csv")
    with pytest.raises(ConfigError, match="nope"):
        blocks(FileSource(p, Columns(features=("temp", "nope"))))
    with pytest.raises(ConfigError, match="label column"):
        blocks(FileSource(p, Columns(label="missing")))


def test_text_columns_are_not_features(tmp_path: pathlib.Path) -> None:
    src = FileSource(_write(FRAME.assign(status=["ok", "ok", "fail"]), tmp_path / "t.csv"))
    blocks(src)
    assert src.roles.features == ("temp", "pressure")


def test_timestamps_epoch_seconds_millis_and_iso(tmp_path: pathlib.Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text("ts,x\n1700000000,1\n1700000000250,1\n2020-03-09 10:14:33,1\n,1\nlater,1\n")
    _, d = decode_all(FileSource(p, Columns(timestamp="ts")))
    expected_iso = pd.Timestamp("2020-03-09 10:14:33", tz="UTC").timestamp()
    assert d.batch.timestamps[:3].tolist() == [1700000000.0, 1700000000.25, expected_iso]
    assert np.isnan(d.batch.timestamps[3])
    assert [(x.original.position.offset, x.reason) for x in d.dead_letters] == [
        (6, "bad_timestamp")]


def test_parquet_datetime_columns(tmp_path: pathlib.Path) -> None:
    frame = FRAME.assign(time=pd.to_datetime(FRAME["time"]))
    _, d = decode_all(FileSource(_write(frame, tmp_path / "t.parquet")))
    np.testing.assert_allclose(d.batch.timestamps, [T0, T0 + 1, T0 + 2])


def test_file_source_follows_the_block_reader_protocol(tmp_path: pathlib.Path) -> None:
    path = _write(FRAME.rename(columns={"device": "key"}), tmp_path / "t.jsonl")
    with path.open("a") as fh:
        fh.write("garbage\n")
    src = FileSource(path)
    assert isinstance(src, BlockReader)
    (block,) = blocks(src)
    assert block.offsets == [1, 2, 3, 4] and src.done
    assert (block.topic, block.partition) == ("t.jsonl", 0)
    src.close()


def _clean_cases() -> list[pd.DataFrame]:
    rng = np.random.default_rng(0)
    n = 300
    base = pd.DataFrame({"ts": 1.7e9 + np.arange(n, dtype=float),
                         "key": [f"dev-{i % 7}" for i in range(n)],
                         "a": rng.normal(size=n), "b": rng.integers(0, 9, n),
                         "label": (rng.random(n) < 0.1).astype(int)})
    return [
        base,
        base.drop(columns=["key"]),
        base.drop(columns=["ts", "label"]),
        base.assign(ts=pd.to_datetime(base["ts"], unit="s", utc=True)),
        base.assign(ts=base["ts"] * 1000),  # milliseconds: the per-row path converts them
        base.assign(key=np.arange(n) % 5),  # numeric keys
        base.assign(label=-1),
        base.assign(a=np.where(np.arange(n) == 7, np.nan, base["a"])),  # one missing value
    ]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("case", range(len(_clean_cases())))
def test_clean_table_chunks_decode_exactly_like_rows(tmp_path: pathlib.Path, suffix: str,
                                                     case: int) -> None:
    """A clean table chunk is decoded from its columns; the result equals the per-row
    decoding of the same rows (which the chunk falls back to when it is not clean)."""
    import dataclasses

    frame = _clean_cases()[case]
    src = FileSource(_write(frame, tmp_path / f"t{suffix}"), chunk_rows=128)
    for block in blocks(src):
        dec = Decoder(src.roles.features, src.record_format())
        fast = dec.decode(block)
        rows = dec.decode(dataclasses.replace(block, columns=None))  # type: ignore[type-var]
        assert fast.batch.keys == rows.batch.keys
        np.testing.assert_array_equal(fast.batch.timestamps, rows.batch.timestamps)
        np.testing.assert_array_equal(fast.batch.values, rows.batch.values)
        assert (fast.batch.labels is None) == (rows.batch.labels is None)
        if fast.batch.labels is not None:
            np.testing.assert_array_equal(fast.batch.labels, rows.batch.labels)
        np.testing.assert_array_equal(fast.offsets, rows.offsets)
        assert [d.original.position for d in fast.dead_letters] == [
            d.original.position for d in rows.dead_letters]
        np.testing.assert_array_equal(fast.raw_values, rows.raw_values)


def test_numeric_parquet_chunks_are_decoded_from_columns(tmp_path: pathlib.Path) -> None:
    (block,) = blocks(FileSource(_write(_clean_cases()[0], tmp_path / "t.parquet")))
    assert getattr(block, "columns", None) is not None
