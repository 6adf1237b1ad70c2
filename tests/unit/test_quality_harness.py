"""The quality harness (benchmarks/quality): formats the official scorers accept, one stream.

Skipped when ../shared (scorers and data sets) is not beside the repository.
"""

from __future__ import annotations

import doctest
import pathlib
import sys

import numpy as np
import pytest

QUALITY = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "quality"
sys.path.insert(0, str(QUALITY))

import detectors  # noqa: E402
import harness  # noqa: E402
from harness import StreamOutput  # noqa: E402

pytestmark = pytest.mark.skipif(not harness.shared_available(),
                                reason="../shared (scorers, data sets) not available")


@pytest.fixture(scope="module")
def shared() -> pathlib.Path:
    return harness.shared_dir()


@pytest.fixture(scope="module")
def valve1_0(shared: pathlib.Path) -> harness.SkabFile:
    (f,) = [f for f in harness.skab_files(shared, ["valve1"]) if f.rel == "valve1/0.csv"]
    return f


def _constant_output(n: int, flag_from: int, flags: np.ndarray | None = None) -> StreamOutput:
    warm = np.arange(n) < flag_from
    is_anom = ~warm if flags is None else flags & ~warm
    return StreamOutput(scores=is_anom.astype(float), is_anomaly=is_anom, warmup=warm)


def test_skab_files_are_the_leaderboard_34(shared: pathlib.Path) -> None:
    files = harness.skab_files(shared)
    assert len(files) == 34
    assert [f.rel for f in files[:2]] == ["other/1.csv", "other/2.csv"]
    assert files[0].feature_names[0] == "Accelerometer1RMS"
    assert len(files[0].feature_names) == 8


def test_scorer_accepts_all_ones_prediction(tmp_path: pathlib.Path,
                                            valve1_0: harness.SkabFile) -> None:
    n = len(valve1_0.frame)
    harness.write_skab_prediction(tmp_path, valve1_0, _constant_output(n, 400))
    res = harness.score_skab(harness.shared_dir(), tmp_path, allow_missing=True)
    y = valve1_0.labels[400:]
    pos, neg = int(y.sum()), int((y == 0).sum())
    assert (res["pooled"]["TP"], res["pooled"]["FP"], res["pooled"]["FN"]) == (pos, neg, 0)
    assert res["leaderboard"]["FAR"] == 100.0
    assert res["leaderboard"]["F1"] == round(pos / (pos + neg / 2), 2)


def test_scorer_counts_warmup_rows_as_normal(tmp_path: pathlib.Path,
                                             valve1_0: harness.SkabFile) -> None:
    labels = valve1_0.labels.astype(bool)
    out = _constant_output(len(labels), 400, flags=labels)
    harness.write_skab_prediction(tmp_path, valve1_0, out)
    res = harness.score_skab(harness.shared_dir(), tmp_path, allow_missing=True)
    assert res["leaderboard"] == {"F1": 1.0, "FAR": 0.0, "MAR": 0.0}
    assert res["notes"]["warmup_test_rows"] == 0


def test_cardio_prediction_format_is_scored(tmp_path: pathlib.Path,
                                            shared: pathlib.Path) -> None:
    frame = harness.cardio_frame(shared)
    y = frame.pop("y").to_numpy()
    for i in harness.CARDIO_ORDERS:
        rows = harness.cardio_order(len(y), i)
        s = y[rows].astype(float)  # a perfect ranking
        harness.write_cardio_prediction(tmp_path, i, rows,
                                        StreamOutput(s, s > 0, np.zeros(len(s), bool)))
    mean = harness.score_cardio(shared, tmp_path)["mean"]
    assert mean["hits@176"] == 176.0
    assert mean["auc"] == 1.0


def test_cardio_writer_rejects_nan(tmp_path: pathlib.Path) -> None:
    out = StreamOutput(np.array([np.nan]), np.array([False]), np.array([True]))
    with pytest.raises(ValueError, match="non-finite"):
        harness.write_cardio_prediction(tmp_path, 0, np.array([0]), out)


def test_skab_slice_streams_through_engine(valve1_0: harness.SkabFile) -> None:
    det = detectors.EngineDetector(overrides={"training.warmup_epochs": 2}, chunk=37)
    x = valve1_0.values[:460]
    out = det.run(x, 400, valve1_0.feature_names)
    assert len(out.scores) == 460
    assert int(out.warmup.sum()) == 400
    assert not out.is_anomaly[:400].any()
    assert np.isfinite(out.scores[400:]).all()


def test_engine_result_does_not_depend_on_chunking(valve1_0: harness.SkabFile) -> None:
    x = valve1_0.values[:450]
    opts = {"training.warmup_epochs": 2, "features.lags": 8}  # SKAB's option: 72 inputs
    runs = [detectors.EngineDetector(overrides=opts, chunk=c)
            .run(x, 400, valve1_0.feature_names) for c in (1, 7, 450)]
    np.testing.assert_array_equal(runs[0].scores, runs[2].scores)
    np.testing.assert_array_equal(runs[1].scores, runs[2].scores)
    np.testing.assert_array_equal(runs[1].is_anomaly, runs[2].is_anomaly)


def test_detector_doctests() -> None:
    result = doctest.testmod(detectors)
    assert (result.attempted, result.failed) == (2, 0)


def test_capped_threshold_does_not_ratchet_with_a_multiplier() -> None:
    """A long alarm run must not lift the threshold (the SKAB 'raw' ablation: MAR 83 %)."""
    from stream_ae.config import DriftConfig, EngineConfig, RegimeConfig, ThresholdConfig
    from stream_ae.engine import Engine
    from stream_ae.records import Batch

    cfg = EngineConfig.model_validate({
        "training": {"warmup": 200, "warmup_epochs": 5},
        "threshold": ThresholdConfig(multiplier=1.5, min_count=20),
        "drift": DriftConfig(detector="none"), "regime": RegimeConfig(enabled=False),
        "decision": {"mode": "quantile"}, "features": {"lags": 0},
    })
    rng = np.random.default_rng(0)
    x = rng.normal(size=(800, 3))
    x[300:] += 10.0
    res = Engine(cfg, ("a", "b", "c")).step(Batch.from_arrays(x))
    assert res.is_anomaly[300:].all()
    run = res.thresholds[300:]
    # it may move within the primed scores' range, never by the multiplier per boundary
    assert run.max() / run.min() < 1.05
