"""Property: the CUSUM and its fall from the run peak are the same whether rows come in one
call, random splits or one by one."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_ae.detect.evidence import EvidenceAccumulator

rows = st.lists(
    st.tuples(st.sampled_from("abcde"), st.floats(min_value=1e-12, max_value=1.0)),
    min_size=1, max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(rows=rows, cuts=st.lists(st.integers(0, 80), max_size=6),
       max_keys=st.integers(1, 6), k=st.floats(1.1, 4.0), cap=st.floats(0.5, 40.0),
       level=st.floats(0.0, 30.0))
def test_one_call_equals_splits_equals_row_by_row(
    rows: list[tuple[str, float]], cuts: list[int], max_keys: int, k: float, cap: float,
    level: float,
) -> None:
    keys = [r[0] for r in rows]
    p = np.array([r[1] for r in rows])
    one = EvidenceAccumulator(k=k, cap=cap, max_keys=max_keys, level=level)
    whole = np.stack(one.update_run(keys, p))
    bounds = [0, *sorted(c for c in cuts if c < len(rows)), len(rows)]
    split = EvidenceAccumulator(k=k, cap=cap, max_keys=max_keys, level=level)
    parts = [np.stack(split.update_run(keys[a:b], p[a:b])) for a, b in pairwise(bounds)]
    single = EvidenceAccumulator(k=k, cap=cap, max_keys=max_keys, level=level)
    each = [np.stack(single.update_run(keys[i : i + 1], p[i : i + 1]))
            for i in range(len(rows))]
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), whole)
    np.testing.assert_array_equal(np.concatenate(each, axis=1), whole)
    np.testing.assert_array_equal(EvidenceAccumulator(k=k, cap=cap, max_keys=max_keys)
                                  .update(keys, p), whole[0])
    assert one.get_state()["keys"] == single.get_state()["keys"]
    for col in ("s", "peak"):
        np.testing.assert_array_equal(one.get_state()[col], single.get_state()[col])
