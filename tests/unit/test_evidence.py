"""EvidenceAccumulator against a row-by-row CUSUM; threshold_for_rate against simulation."""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest

from stream_ae.detect import BatchKeys
from stream_ae.detect.evidence import EvidenceAccumulator, threshold_for_rate


def cusum_oracle(keys: list[str], p: np.ndarray, k: float, max_keys: int,
                 cap: float = math.inf) -> np.ndarray:
    """The textbook recursion, one row at a time, with an LRU of max_keys."""
    s: OrderedDict[str, float] = OrderedDict()
    out = np.empty(len(keys))
    for i, key in enumerate(keys):
        prev = s.pop(key, 0.0)
        x = 0.0 if math.isnan(p[i]) else -math.log(min(1.0, max(1e-300, p[i]))) - k
        s[key] = prev if math.isnan(p[i]) else min(cap, max(0.0, prev + x))
        while len(s) > max_keys:
            s.popitem(last=False)
        out[i] = s[key]
    return out


def fall_oracle(keys: list[str], s: np.ndarray, level: float) -> np.ndarray:
    """Each row's fall from the peak of its key's run above ``level``, one row at a time."""
    peak: dict[str, float] = {}
    out = np.empty(len(keys))
    for i, key in enumerate(keys):
        peak[key] = max(peak.get(key, 0.0), s[i]) if s[i] > level else s[i]
        out[i] = peak[key] - s[i]
    return out


def test_vectorised_equals_the_recursion_over_many_keys() -> None:
    rng = np.random.default_rng(3)
    keys = [f"k{i}" for i in rng.integers(0, 7, 3000)]
    p = rng.uniform(size=3000) ** 3  # surprising enough for S to grow and fall
    p[rng.integers(0, 3000, 50)] = np.nan
    ev = EvidenceAccumulator(k=2.0, cap=math.inf)
    got = ev.update(keys, p)
    np.testing.assert_allclose(got, cusum_oracle(keys, p, 2.0, 10**6), atol=1e-4)
    assert got.max() > 40.0  # the data exercises large excursions
    capped = EvidenceAccumulator(k=2.0, cap=12.0).update(keys, p)
    np.testing.assert_allclose(capped, cusum_oracle(keys, p, 2.0, 10**6, cap=12.0), atol=1e-4)
    assert (capped == 12.0).sum() > 100 and (capped == 0.0).sum() > 20  # both walls visited


def test_fall_from_the_run_peak_equals_the_recursion() -> None:
    rng = np.random.default_rng(4)
    keys = [f"k{i}" for i in rng.integers(0, 5, 4000)]
    p = rng.uniform(size=4000) ** 3
    p[rng.integers(0, 4000, 40)] = np.nan
    ev = EvidenceAccumulator(k=2.0, cap=30.0, level=10.0)
    s, fall = ev.update_run(keys[:1500], p[:1500])
    s2, fall2 = ev.update_run(keys[1500:], p[1500:])  # runs go on across calls
    s, fall = np.concatenate([s, s2]), np.concatenate([fall, fall2])
    np.testing.assert_array_equal(s, EvidenceAccumulator(k=2.0, cap=30.0).update(keys, p))
    want = fall_oracle(keys, cusum_oracle(keys, p, 2.0, 10**6, cap=30.0), 10.0)
    np.testing.assert_allclose(fall, want, atol=1e-4)
    assert fall.max() > 15.0 and (fall[s > 10.0] == 0.0).sum() > 100  # falls and new peaks


def test_the_cap_lets_evidence_fall_soon_after_a_burst() -> None:
    p = np.concatenate([np.full(100, 1e-300), np.full(30, math.exp(-1.0))])  # burst, then -1/row
    s = EvidenceAccumulator(k=2.0, cap=30.0).update(["a"] * 130, p)
    assert s[:100].tolist() == [30.0] * 100
    assert s[100:].round(6).tolist() == [29.0 - i for i in range(30)][:30]


def test_lru_evicts_the_least_recently_updated_key() -> None:
    ev = EvidenceAccumulator(k=1.5, max_keys=2)
    p = np.exp(-np.array([4.0, 4.0, 4.0, 4.0]))
    got = ev.update(["a", "b", "c", "a"], p)  # c evicts a, so a restarts at 0
    assert got.tolist() == [2.5, 2.5, 2.5, 2.5]
    assert (len(ev), ev.value("b"), ev.value("a")) == (2, 0.0, 2.5)
    assert ev.get_state()["keys"] == ["c", "a"]


def test_nan_leaves_evidence_and_reset_forgets_it() -> None:
    ev = EvidenceAccumulator(k=2.0)
    got = ev.update(["a", "a", "a"], np.array([math.exp(-7.0), np.nan, 1.0]))
    assert got.round(6).tolist() == [5.0, 5.0, 3.0]
    ev.reset("a")
    assert ev.value("a") == 0.0
    assert ev.update(["a"], [math.exp(-3.0)]).round(6).tolist() == [1.0]


def test_snapshot_restore_continue_equals_an_uninterrupted_run() -> None:
    rng = np.random.default_rng(5)
    keys = [f"k{i}" for i in rng.integers(0, 20, 2000)]
    p = rng.uniform(size=2000) ** 2
    whole = EvidenceAccumulator(max_keys=12).update(keys, p)
    first = EvidenceAccumulator(max_keys=12)
    a = first.update(keys[:777], p[:777])
    second = EvidenceAccumulator(max_keys=12)
    second.set_state(first.get_state())
    b = second.update(keys[777:], p[777:])
    np.testing.assert_array_equal(np.concatenate([a, b]), whole)


@pytest.mark.parametrize("k", [2.0, 3.0])
@pytest.mark.parametrize("rate", [1e-3, 1e-4])
def test_up_crossing_rate_matches_the_target_on_iid_null(k: float, rate: float) -> None:
    n = 2_000_000
    p = np.random.default_rng(11).uniform(size=n)
    s = EvidenceAccumulator(k=k).update(["a"] * n, p)
    h = threshold_for_rate(k, rate)
    prev = np.concatenate([[0.0], s[:-1]])
    measured = float(((prev <= h) & (s > h)).sum()) / n
    assert rate / 2 < measured < rate * 2, measured  # measured x1.002/1.04 (k=2), 1.03/0.975 (k=3)


def test_threshold_closed_form_and_its_domain() -> None:
    g = 0.7968121300200202  # root of 1 - g = exp(-2 g)
    assert threshold_for_rate(2.0, 1e-4) == pytest.approx((math.log(g) - 2 + math.log(1e4)) / g)
    assert threshold_for_rate(2.0, g * math.exp(-2.0)) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="k must exceed 1"):
        threshold_for_rate(1.0, 1e-4)
    with pytest.raises(ValueError, match="rate must be"):
        threshold_for_rate(2.0, 0.5)


def test_batch_keys_give_the_same_results_as_the_list() -> None:
    rng = np.random.default_rng(9)
    keys = [f"k{i}" for i in rng.integers(0, 9, 500)]
    p = rng.uniform(size=500) ** 3
    for max_keys in (100, 4):  # the fast path and the eviction path
        want = EvidenceAccumulator(max_keys=max_keys).update(keys, p)
        got = EvidenceAccumulator(max_keys=max_keys).update(BatchKeys(keys), p)
        np.testing.assert_array_equal(got, want)
