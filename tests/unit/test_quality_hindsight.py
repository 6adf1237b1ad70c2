"""The hindsight threshold of benchmarks/quality/hindsight.py against a brute-force search."""

from __future__ import annotations

import pathlib
import sys

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "quality"))

import hindsight


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 6)), min_size=1, max_size=40),
       st.floats(0.0, 100.0))
def test_the_hindsight_threshold_misses_no_more_than_any_threshold_within_the_budget(
        rows: list[tuple[int, int]], far_max: float) -> None:
    y = np.array([r[0] for r in rows], dtype=np.int64)
    s = np.array([r[1] for r in rows], dtype=np.float64)  # ties on purpose
    t = hindsight.best_below_far(s, y, far_max)
    candidates = [np.inf, -np.inf, *np.unique(s)]
    within = [hindsight.rates(y, s > c) for c in candidates
              if hindsight.rates(y, s > c).far <= far_max]
    got = hindsight.rates(y, s > t)
    assert got.far <= far_max
    assert got.mar == min(r.mar for r in within)
