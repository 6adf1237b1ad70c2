"""Property: the rolling threshold equals numpy on the tail, however scores are chunked."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_ae.detect.threshold import RollingQuantileThreshold

scores = st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False)
chunks = st.lists(st.lists(scores, min_size=0, max_size=40), min_size=1, max_size=12)


@settings(max_examples=150, deadline=None)
@given(
    chunks=chunks,
    window=st.integers(min_value=1, max_value=60),
    q=st.floats(min_value=0.01, max_value=0.99),
    multiplier=st.floats(min_value=0.5, max_value=3.0),
    floor=st.floats(min_value=0.0, max_value=10.0),
)
def test_quantile_equals_numpy_on_tail(
    chunks: list[list[float]], window: int, q: float, multiplier: float, floor: float
) -> None:
    t = RollingQuantileThreshold(q=q, window=window, multiplier=multiplier, floor=floor,
                                 min_count=1)
    seen: list[float] = []
    for chunk in chunks:
        t.update(np.asarray(chunk))
        seen += chunk
        if seen:
            expected = max(floor, multiplier * float(np.quantile(seen[-window:], q)))
            assert t.value == expected
            assert t.count == min(window, len(seen))
            assert t.quantile(q) == float(np.quantile(seen[-window:], q))


@settings(max_examples=100, deadline=None)
@given(chunks=chunks, window=st.integers(min_value=1, max_value=60))
def test_chunking_does_not_change_the_window(chunks: list[list[float]], window: int) -> None:
    one = RollingQuantileThreshold(q=0.7, window=window, min_count=1)
    many = RollingQuantileThreshold(q=0.7, window=window, min_count=1)
    flat = [s for c in chunks for s in c]
    one.update(np.asarray(flat))
    for c in chunks:
        many.update(np.asarray(c))
    np.testing.assert_array_equal(one.tail(), many.tail())
    assert (one.value == many.value) or (np.isnan(one.value) and np.isnan(many.value))
