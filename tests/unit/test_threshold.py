"""RollingQuantileThreshold against numpy on the same tail."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stream_ae.detect.threshold import RollingQuantileThreshold


def test_quantile_mode_equals_numpy_on_the_tail_across_updates() -> None:
    rng = np.random.default_rng(0)
    t = RollingQuantileThreshold(q=0.9, window=50, min_count=10)
    seen: list[float] = []
    for size in [3, 7, 60, 1, 49, 50, 2]:
        chunk = rng.exponential(size=size)
        t.update(chunk)
        seen += chunk.tolist()
        if len(seen) >= 10:
            assert t.value == float(np.quantile(seen[-50:], 0.9))
        else:
            assert math.isnan(t.value)
        np.testing.assert_array_equal(t.tail(), np.asarray(seen[-50:]))
    assert t.count == 50


def test_mean_std_mode_multiplier_and_floor() -> None:
    t = RollingQuantileThreshold(mode="mean_std", k=2.0, window=4, multiplier=1.5, min_count=1)
    t.update([1.0, 2.0, 3.0, 4.0, 5.0])
    tail = np.array([2.0, 3.0, 4.0, 5.0])
    assert t.value == pytest.approx(1.5 * (tail.mean() + 2.0 * tail.std()))
    f = RollingQuantileThreshold(q=0.5, window=10, floor=7.0, min_count=1)
    f.update([1.0, 2.0])
    assert f.value == 7.0


def test_cold_until_min_count_and_after_reset() -> None:
    t = RollingQuantileThreshold(q=0.5, window=1000, min_count=5)
    t.update([1.0] * 4)
    assert (t.is_warm, math.isnan(t.value)) == (False, True)
    t.update([1.0])
    assert (t.is_warm, t.value) == (True, 1.0)
    t.reset()
    assert (t.is_warm, t.count, math.isnan(t.quantile(0.5))) == (False, 0, True)
    # default min_count: min(window, 100)
    assert RollingQuantileThreshold(window=20).is_warm is False


def test_prime_is_warm_with_few_scores_until_reset() -> None:
    t = RollingQuantileThreshold(q=1.0, window=100, min_count=50)
    t.prime([1.0, 4.0])
    assert (t.is_warm, t.value) == (True, 4.0)
    t.reset()
    assert t.is_warm is False


def test_state_round_trip_continues_identically() -> None:
    rng = np.random.default_rng(1)
    a = RollingQuantileThreshold(mode="mean_std", window=30, min_count=3)
    a.update(rng.normal(size=47))
    b = RollingQuantileThreshold(mode="mean_std", window=30, min_count=3)
    b.set_state(a.get_state())
    more = rng.normal(size=13)
    a.update(more)
    b.update(more)
    assert a.value == b.value
    np.testing.assert_array_equal(a.tail(), b.tail())
