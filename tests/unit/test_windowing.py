"""Feature stage (lags, diffs, missing values, LRU) and the record ring buffer."""

from __future__ import annotations

import numpy as np

from stream_ae.windowing import FeatureStage, RecordWindow, feature_names


def f32(rows: list[list[float]]) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32)


def test_feature_names_order() -> None:
    assert feature_names(["x"], 0, False) == ("x",)
    assert feature_names(["x", "y"], 2, False) == ("x", "y", "x_lag1", "y_lag1", "x_lag2", "y_lag2")


def test_lags_are_per_key_and_filled_with_the_first_reading() -> None:
    fs = FeatureStage(n_raw=1, lags=2, diffs=True)
    x, rows, rej = fs.transform(["a", "b", "a", "b", "a"], f32([[1], [10], [2], [20], [3]]))
    assert rej == () and rows.tolist() == [0, 1, 2, 3, 4]
    assert x.tolist() == [
        [1, 1, 1, 0], [10, 10, 10, 0], [2, 1, 1, 1], [20, 10, 10, 10], [3, 2, 1, 1],
    ]
    assert fs.n_features == 4


def test_stateless_path_rejects_non_finite() -> None:
    fs = FeatureStage(n_raw=2)
    x, rows, rej = fs.transform(["a"] * 3, f32([[1, 2], [np.inf, 0], [3, 4]]))
    assert (x.tolist(), rows.tolist(), rej) == ([[1, 2], [3, 4]], [0, 2], ((1, "non_finite"),))


def test_reject_with_lags_keeps_history_untouched() -> None:
    fs = FeatureStage(n_raw=1, lags=1)
    x, _rows, rej = fs.transform(["a", "a", "a"], f32([[1], [np.nan], [3]]))
    assert x.tolist() == [[1, 1], [3, 1]] and rej == ((1, "non_finite"),)


def test_ffill_carries_per_column_and_rejects_keys_without_history() -> None:
    fs = FeatureStage(n_raw=2, missing="ffill")
    x, rows, rej = fs.transform(
        ["a", "a", "a", "b", "b"], f32([[np.nan, 1], [1, 2], [np.nan, 5], [np.nan, np.nan], [4, 4]])
    )
    assert rej == ((0, "no_previous_value"), (3, "no_previous_value"))
    assert rows.tolist() == [1, 2, 4]
    assert x.tolist() == [[1, 2], [1, 5], [4, 4]]
    x2, _, rej2 = fs.transform(["b"], f32([[np.nan, 7]]))
    assert (x2.tolist(), rej2) == ([[4, 7]], ())


def test_lru_evicts_least_recently_seen_key() -> None:
    fs = FeatureStage(n_raw=1, lags=1, max_keys=2)
    fs.transform(["a", "b"], f32([[1], [2]]))
    fs.transform(["a"], f32([[3]]))  # b is now the oldest
    fs.transform(["c"], f32([[5]]))  # evicts b
    assert fs.get_state()["keys"] == ["a", "c"]
    x, _, _ = fs.transform(["b"], f32([[9]]))
    assert x.tolist() == [[9, 9]]  # b starts fresh


def test_state_round_trip() -> None:
    fs = FeatureStage(n_raw=1, lags=2, diffs=True, missing="ffill")
    fs.transform(["a", "b", "a"], f32([[1], [2], [3]]))
    other = FeatureStage(n_raw=1, lags=2, diffs=True, missing="ffill")
    other.set_state(fs.get_state())
    batch = (["b", "a", "c"], f32([[5], [np.nan], [1]]))
    a, b = fs.transform(*batch), other.transform(*batch)
    np.testing.assert_array_equal(a[0], b[0])
    assert fs.get_state()["keys"] == other.get_state()["keys"]


def test_record_window_ring_and_state() -> None:
    w = RecordWindow(4)
    w.push(x=np.arange(6.0).reshape(3, 2), f=np.array([True, False, True]))
    w.push(x=np.arange(6.0, 10.0).reshape(2, 2), f=np.array([False, False]))
    assert len(w) == 4
    assert w.column("x")[:, 0].tolist() == [2.0, 4.0, 6.0, 8.0]
    assert w.column("f").tolist() == [False, True, False, False]
    copy = RecordWindow(4)
    copy.set_state(w.get_state())
    np.testing.assert_array_equal(copy.column("x"), w.column("x"))
    w.clear()
    assert len(w) == 0 and w.column("x").shape == (0, 2)


def test_many_keys_one_batch_equals_one_row_at_a_time() -> None:
    rng = np.random.default_rng(0)
    n = 3000
    keys = [f"k{i}" for i in rng.integers(0, 300, n)]
    values = rng.normal(size=(n, 3)).astype(np.float32)
    values[rng.random((n, 3)) < 0.05] = np.nan
    a = FeatureStage(n_raw=3, lags=3, diffs=True, missing="ffill", max_keys=1000)
    b = FeatureStage(n_raw=3, lags=3, diffs=True, missing="ffill", max_keys=1000)
    xa, rows_a, rej_a = a.transform(keys, values)
    parts = [b.transform(keys[i : i + 1], values[i : i + 1]) for i in range(n)]
    xb = np.concatenate([p[0] for p in parts])
    assert rows_a.tolist() == [i for i, p in enumerate(parts) if p[1].size]
    assert list(rej_a) == [(i, why) for i, p in enumerate(parts) for _, why in p[2]]
    np.testing.assert_array_equal(xa, xb)
    assert a.get_state()["keys"] == b.get_state()["keys"]
    np.testing.assert_array_equal(a.get_state()["hist"], b.get_state()["hist"])
