"""IncidentTracker: lifecycle values, sensor shares, explicit resolution, bounds, state."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from stream_ae.detect import BatchKeys
from stream_ae.detect.incidents import IncidentTracker, IncidentUpdate

NAMES = ["t", "p", "h"]


def test_lifecycle_values_with_sensor_shares() -> None:
    tr = IncidentTracker(quiet_records=3, update_every=2)
    flags = np.array([0, 1, 1, 0, 1, 0, 0, 0, 0], bool)
    grades = np.array([0, 0.4, 0.9, 0, 0.6, 0, 0, 0, 0])
    times = np.array([0, 10, 11, 12, np.nan, 14, 15, 16, 17], dtype=float)
    contrib = np.tile(np.array([[0.2, 0.5, 0.3]], np.float32), (9, 1))
    contrib[4] = [0.9, 0.1, 0.0]
    belong, ups = tr.update(["a"] * 9, flags, grades, times, np.arange(50, 59), contrib, NAMES)
    assert belong.tolist() == [-1, 51, 51, 51, 51, 51, 51, 51, -1]
    assert [(u.kind, u.row, u.records, u.flagged) for u in ups] == [
        ("opened", 1, 1, 1), ("updated", 2, 2, 2), ("resolved", 7, 7, 3)]
    done = ups[-1]
    assert (done.opened_offset, done.start_time, math.isnan(done.end_time)) == (51, 10.0, True)
    assert (done.peak_grade, done.reason) == (0.9, "quiet")
    names = [n for n, _ in done.top_sensors]
    shares = [s for _, s in done.top_sensors]
    assert names == ["t", "p", "h"]  # accumulated 1.3, 1.1, 0.6 of 3.0
    np.testing.assert_allclose(shares, [1.3 / 3, 1.1 / 3, 0.6 / 3], rtol=1e-6)
    assert ups[0].top_sensors == (("p", pytest.approx(0.5)), ("h", pytest.approx(0.3)),
                                  ("t", pytest.approx(0.2)))
    assert len(tr) == 0


def test_keys_are_independent_and_incidents_stay_open_at_the_end() -> None:
    tr = IncidentTracker(quiet_records=2, update_every=100)
    keys = ["a", "b", "a", "b", "b", "a"]
    flags = np.array([1, 1, 0, 0, 0, 0], bool)
    belong, ups = tr.update(keys, flags, np.ones(6), np.arange(6.0), np.arange(6))
    assert belong.tolist() == [0, 1, 0, 1, 1, 0]
    assert [(u.kind, u.key, u.row) for u in ups] == [
        ("opened", "a", 0), ("opened", "b", 1), ("resolved", "b", 4), ("resolved", "a", 5)]
    belong, ups = tr.update(["c", "c"], [True, False], [0.5, 0], [7.0, 8.0], [7, 8])
    assert (belong.tolist(), [u.kind for u in ups], tr.open_keys()) == ([7, 7], ["opened"], ["c"])


def test_explicit_resolve_and_reopen() -> None:
    tr = IncidentTracker(quiet_records=10)
    tr.update(["a", "a"], [True, True], [0.2, 0.7], [1.0, 2.0], [5, 6])
    done = tr.resolve("a", "new_normal", row=3)
    assert done == IncidentUpdate("resolved", "a", 5, 3, 1.0, 2.0, 0.7, 2, 2, (), "new_normal")
    assert tr.resolve("a") is None
    belong, ups = tr.update(["a"], [True], [0.1], [9.0], [9])
    assert (belong.tolist(), ups[0].kind, ups[0].opened_offset) == ([9], "opened", 9)


def test_opening_beyond_max_keys_resolves_the_least_recently_seen() -> None:
    tr = IncidentTracker(quiet_records=50, max_keys=2)
    keys = ["a", "b", "a", "c", "b"]
    flags = np.array([1, 1, 0, 1, 0], bool)
    belong, ups = tr.update(keys, flags, np.ones(5), np.arange(5.0), np.arange(5))
    assert [(u.kind, u.key, u.row, u.reason) for u in ups] == [
        ("opened", "a", 0, ""), ("opened", "b", 1, ""), ("resolved", "b", 3, "evicted"),
        ("opened", "c", 3, "")]
    assert belong.tolist() == [0, 1, 0, 3, -1]
    assert tr.open_keys() == ["a", "c"]


def test_state_is_plain_data_and_restores_mid_incident() -> None:
    tr = IncidentTracker(quiet_records=3, update_every=2)
    c = np.array([[1, 0, 0], [0, 1, 0]], np.float32)
    tr.update(["a", "b"], [True, True], [0.5, 0.6], [1.0, 2.0], [1, 2], c, NAMES)
    state = tr.get_state()
    json.dumps({k: v for k, v in state.items() if not isinstance(v, np.ndarray)})
    assert state["keys"] == ["a", "b"] and state["counts"].tolist() == [[1, 1, 0], [1, 1, 0]]
    again = IncidentTracker(quiet_records=3, update_every=2)
    again.set_state(state)
    rest = (["a", "a", "a", "a"], [True, False, False, False], np.ones(4), np.arange(3.0, 7.0),
            np.arange(3, 7), np.zeros((4, 3), np.float32), NAMES)
    assert again.update(*rest)[1] == tr.update(*rest)[1]
    assert again.get_state()["keys"] == ["b"]


def test_inputs_are_checked() -> None:
    tr = IncidentTracker()
    with pytest.raises(ValueError, match="come together"):
        tr.update(["a"], [True], [1.0], [0.0], [0], np.ones((1, 2), np.float32))
    with pytest.raises(ValueError, match="other lengths"):
        tr.update(["a", "b"], [True], [1.0], [0.0], [0])
    with pytest.raises(ValueError, match=r"contrib must be \(1, 3\)"):
        tr.update(["a"], [True], [1.0], [0.0], [0], np.ones((1, 2), np.float32), NAMES)


def test_batch_keys_give_the_same_results_as_the_list() -> None:
    rng = np.random.default_rng(10)
    keys = [f"k{i}" for i in rng.integers(0, 6, 400)]
    flags = rng.uniform(size=400) < 0.1
    args = (flags, rng.uniform(size=400), np.arange(400.0), np.arange(400))
    for max_keys in (100, 2):  # the fast path and the eviction path
        b1, u1 = IncidentTracker(quiet_records=5, max_keys=max_keys).update(keys, *args)
        b2, u2 = IncidentTracker(quiet_records=5, max_keys=max_keys).update(BatchKeys(keys), *args)
        assert (b1.tolist(), u1) == (b2.tolist(), u2)
