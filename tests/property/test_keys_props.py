"""Property: KeyColumns is an LRU (checked against an OrderedDict), state round-trips."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_ae.detect._keys import KeyColumns

ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.lists(st.sampled_from("abcdefg"), min_size=1, max_size=5,
                                           unique=True)),
        st.tuples(st.just("pop"), st.lists(st.sampled_from("abcdefg"), min_size=1, max_size=1)),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(ops=ops, max_keys=st.integers(1, 5))
def test_key_columns_equal_an_ordered_dict_lru(ops: list[tuple[str, list[str]]],
                                               max_keys: int) -> None:
    table, oracle = KeyColumns(2, max_keys), OrderedDict[str, tuple[float, float]]()
    for step, (op, keys) in enumerate(ops):
        if op == "pop":
            table.pop(keys[0])
            oracle.pop(keys[0], None)
            continue
        rows = np.array([[step, i] for i in range(len(keys))], dtype=np.float64)
        table.put(keys, rows)
        for k, r in zip(keys, rows, strict=True):
            oracle.pop(k, None)
            oracle[k] = (float(r[0]), float(r[1]))
        while len(oracle) > max_keys:
            oracle.popitem(last=False)
        assert table.keys() == list(oracle)
        assert table.rows(list(oracle)).tolist() == [list(v) for v in oracle.values()]
    again = KeyColumns(2, max_keys)
    again.set_state(table.get_state())
    assert again.keys() == table.keys() and len(again) == len(oracle)
    np.testing.assert_array_equal(again.rows(list("abcdefg")), table.rows(list("abcdefg")))
