"""Property tests: any bytes decode to exactly one outcome per message; numbers round-trip."""

from __future__ import annotations

import math

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_ae.config import RecordFormat
from stream_ae.decode import Decoder
from stream_ae.records import RawBlock

NAMES = ("a", "b")
finite = st.floats(allow_nan=False, allow_infinity=False, width=32)


def block(values: list[bytes | None]) -> RawBlock:
    n = len(values)
    return RawBlock("t", 0, list(range(n)), values, [None] * n, [None] * n)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.binary(max_size=64)), max_size=20))
def test_arbitrary_bytes_never_raise_and_each_offset_has_one_outcome(
        values: list[bytes | None]) -> None:
    out = Decoder(NAMES, RecordFormat()).decode(block(values))
    seen = out.offsets.tolist() + [d.original.position.offset for d in out.dead_letters]
    assert sorted(seen) == list(range(len(values)))
    assert len(out.batch) == len(out.offsets)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(finite, finite, st.text(max_size=8)), min_size=1, max_size=20))
def test_valid_records_round_trip(rows: list[tuple[float, float, str]]) -> None:
    values = [orjson.dumps({"key": k, "a": a, "b": b}) for a, b, k in rows]
    out = Decoder(NAMES, RecordFormat()).decode(block(values))
    assert not out.dead_letters
    assert out.batch.keys == tuple(k for _, _, k in rows)
    assert out.batch.values.tolist() == [[a, b] for a, b, _ in rows]
    assert all(math.isnan(t) for t in out.batch.timestamps)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["a", "b", "c"]),
                                st.one_of(finite, st.text(max_size=3), st.none(), st.booleans()),
                                max_size=3), max_size=15))
def test_mixed_objects_split_into_scored_and_dead(objs: list[dict[str, object]]) -> None:
    out = Decoder(NAMES, RecordFormat()).decode(block([orjson.dumps(o) for o in objs]))
    expected_good = [i for i, o in enumerate(objs)
                     if all(type(o.get(n)) in (int, float) for n in NAMES)]
    assert out.offsets.tolist() == expected_good
