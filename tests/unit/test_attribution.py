"""SensorAttribution: column mapping, folded shares, explanations (values)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stream_ae.detect.attribution import SensorAttribution, SensorContribution, input_columns
from stream_ae.windowing import FeatureStage, feature_names


def test_columns_follow_feature_names_and_the_feature_stage() -> None:
    cols = input_columns(["t", "p", "h"], lags=2, diffs=True)
    assert tuple(c.name for c in cols) == feature_names(["t", "p", "h"], 2, True)
    assert [(c.sensor, c.lag, c.kind) for c in cols if c.sensor == 1] == [
        (1, 0, "reading"), (1, 1, "reading"), (1, 2, "reading"), (1, 0, "diff")]
    fs = FeatureStage(n_raw=3, lags=2, diffs=True)  # a column's (sensor, lag) reads that value
    raw = np.arange(12, dtype=np.float32).reshape(4, 3)
    x, _, _ = fs.transform(["k"] * 4, raw)
    for j, c in enumerate(cols):
        col = raw[:, c.sensor]
        want = col[3 - c.lag] if c.kind == "reading" else col[3] - col[2]
        assert x[3, j] == want


def test_sensor_errors_fold_inputs_rows_sum_to_one_zero_rows_uniform() -> None:
    att = SensorAttribution(["t", "p", "h"], lags=1, diffs=False)
    err = np.array([
        [1, 2, 0, 3, 0, 2],  # t: 1 + 3, p: 2 + 0, h: 0 + 2
        [0, 0, 0, 0, 0, 0],
        [0, 0, 5, 0, 0, 0],
        [np.nan, 0, 0, 0, 0, 0],
    ], np.float32)
    got = att.sensor_errors(err)
    np.testing.assert_allclose(got[:3], [[0.5, 0.25, 0.25], [1 / 3, 1 / 3, 1 / 3], [0, 0, 1]])
    np.testing.assert_allclose(got[:3].sum(axis=1), 1.0, rtol=1e-6)
    assert np.isnan(got[3]).all() and got.dtype == np.float32


def test_explain_ranks_sensors_and_reports_lag_and_direction() -> None:
    att = SensorAttribution(["t", "p", "h"], lags=2, diffs=True)
    # columns: t p h | t1 p1 h1 | t2 p2 h2 | td pd hd
    err = np.array([0.1, 0.0, 1.0, 0.1, 0.2, 0.5, 3.0, 0.3, 0.0, 0.5, 0.0, 0.3])
    got = att.explain(err, observed=[25.0, 1.0, 40.0], expected=[20.0, 1.2, 55.0], k=2)
    assert got == [
        SensorContribution("t", 25.0, 20.0, "high", pytest.approx(3.7 / 6.0), 2),
        SensorContribution("h", 40.0, 55.0, "low", pytest.approx(1.8 / 6.0), 0),
    ]
    everyone = att.explain(err, [0, 0, 0], [0, 0, 0], k=10)
    assert [c.name for c in everyone] == ["t", "h", "p"]
    assert math.isclose(sum(c.share for c in everyone), 1.0, rel_tol=1e-6)
    assert (everyone[2].lag, everyone[2].direction) == (2, "low")  # p: lag-2 input 0.3
