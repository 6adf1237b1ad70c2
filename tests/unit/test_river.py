"""The river facade: river's own estimator checks, and its agreement with the engine."""

from __future__ import annotations

import copy
import pickle
import random
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import numpy as np
import pandas as pd
import pytest
import river.checks
from river import anomaly, preprocessing

from stream_ae.config import EngineConfig, FeaturesConfig
from stream_ae.engine import Engine
from stream_ae.errors import ConfigError
from stream_ae.records import Batch
from stream_ae.river import AutoencoderDetector, river_defaults

Row = tuple[dict[str, float], bool]


class _Stream:
    """A re-iterable labelled stream, local (river's checks use CreditCard, a download)."""

    def __init__(self, n: int, seed: int = 0) -> None:
        rng = random.Random(seed)
        self.rows: list[Row] = []
        for i in range(n):
            z = rng.gauss(0, 1)
            x = {f"f{j}": (j + 1) * z + rng.gauss(0, 0.1) for j in range(5)}
            y = i >= 60 and rng.random() < 0.05
            if y:
                x["f1"] = -x["f1"]
            self.rows.append((x, y))

    def __iter__(self) -> Iterator[Row]:
        return iter(copy.deepcopy(self.rows))


def _local_datasets(model: Any, scale: int = 1) -> Iterator[_Stream]:
    yield _Stream(150 * scale)


def _river_checks() -> list[Any]:
    """Every check river's ``check_estimator`` runs for each ``_unit_test_params`` set."""
    cases = []
    with mock.patch.object(river.checks, "_yield_datasets", _local_datasets):
        for i, params in enumerate(AutoencoderDetector._unit_test_params()):
            model = AutoencoderDetector(**params)
            for check in river.checks.yield_checks(model):
                if check.__name__ not in model._unit_test_skips():
                    cases.append(pytest.param(model, check, id=f"{check.__name__}-{i}"))
    return cases


@pytest.mark.parametrize(("model", "check"), _river_checks())
def test_river_estimator_checks(model: AutoencoderDetector, check: Callable[..., None]) -> None:
    check(model.clone())


def test_the_river_checks_cover_the_anomaly_and_dataset_checks() -> None:
    names = {c.values[1].__name__ for c in _river_checks()}  # type: ignore[union-attr]
    assert {"check_roc_auc", "check_clone_is_independent", "check_shuffle_features_no_impact",
            "check_bounded_memory_growth", "check_seeding_is_idempotent",
            "check_predict_one_pure"} <= names


def _rows(n: int = 400, seed: int = 1) -> list[dict[str, float]]:
    return [x for x, _ in _Stream(n, seed)]


def test_learn_one_loop_gives_the_engine_scores_on_the_same_records() -> None:
    xs = _rows()
    model = AutoencoderDetector(warmup=100, lags=1, seed=3)
    scores = []
    for x in xs:
        scores.append(model.score_one(x))
        model.learn_one(x)
    names = sorted(xs[0])
    eng = Engine(model.engine_config(), names)
    res = eng.step(Batch.from_arrays([[x[n] for n in names] for x in xs]))
    np.testing.assert_allclose(scores, res.scores, rtol=1e-6)
    assert eng.snapshot() == model.snapshot()


def test_many_equals_one_and_score_many_is_pure() -> None:
    xs = _rows()
    frame = pd.DataFrame(xs, index=range(10, 10 + len(xs)))
    one, many = AutoencoderDetector(warmup=100), AutoencoderDetector(warmup=100)
    for x in xs[:300]:
        one.learn_one(x)
    many.learn_many(frame.iloc[:300])
    tail = frame.iloc[300:]
    before = pickle.dumps(many)
    scores = many.score_many(tail)
    assert pickle.dumps(many) == before
    assert scores.index.tolist() == tail.index.tolist()
    np.testing.assert_allclose(scores.to_numpy(), [one.score_one(x) for x in xs[300:]],
                               rtol=1e-6)
    flags = many.predict_many(tail)
    assert flags.dtype == bool
    assert flags.tolist() == [one.predict_one(x) for x in xs[300:]]


def test_predict_one_is_the_engine_decision_and_warmup_is_never_flagged() -> None:
    stream = _Stream(600, seed=2).rows
    model = AutoencoderDetector(warmup=100, q=0.95)
    flags = []
    for x, _ in stream:
        flags.append(model.predict_one(x))
        model.learn_one(x)
    labels = np.array([y for _, y in stream])
    flagged = np.array(flags)
    assert not flagged[:100].any()
    assert flagged[labels].mean() >= 0.75 > 0.1 > flagged[~labels][100:].mean()


def test_parameters_override_the_config_and_are_validated() -> None:
    base = EngineConfig(features=FeaturesConfig(lags=3))
    model = AutoencoderDetector(warmup=10, q=0.9, seed=5, config=base)
    cfg = model.engine_config()
    assert (cfg.training.warmup, cfg.threshold.q, cfg.model.seed, cfg.features.lags) == (
        10, 0.9, 5, 3)
    assert AutoencoderDetector().engine_config() == river_defaults()
    with pytest.raises(ValueError, match="less than 1"):
        AutoencoderDetector(q=1.5).learn_one({"a": 1.0})


def test_missing_key_is_carried_forward_and_new_keys_ignored() -> None:
    model = AutoencoderDetector(warmup=5)
    assert (model.feature_names, model.snapshot()) == ((), None)
    for i in range(20):
        model.learn_one({"b": float(i), "a": 1.0})
    full = model.score_one({"a": 1.0, "b": 19.0})
    assert model.score_one({"b": 19.0}) == full  # a carried forward from its last value
    assert model.score_one({"a": 1.0, "b": 19.0, "new": 5.0}) == full
    assert model.feature_names == ("a", "b")
    with pytest.raises(ConfigError, match="at least one feature"):
        AutoencoderDetector().score_one({})


def test_it_composes_in_river_pipelines_and_filters() -> None:
    model = preprocessing.StandardScaler() | anomaly.QuantileFilter(
        AutoencoderDetector(warmup=50), q=0.9)
    assert [type(step).__name__ for step in model.steps.values()] == [
        "StandardScaler", "QuantileFilter"]
    decisions = []
    for x in _rows(200):
        decisions.append(model[-1].classify(model.score_one(x)))
        model.learn_one(x)
    assert 0 < sum(decisions[100:]) < 50


def test_river_evaluate_progressive_val_score_runs_it_prequentially() -> None:
    from river import evaluate, metrics
    from sklearn.metrics import roc_auc_score

    stream = _Stream(400, seed=3).rows
    auc = evaluate.progressive_val_score(stream, AutoencoderDetector(warmup=60),
                                         metrics.RollingROCAUC(window_size=1000))
    det, scores = AutoencoderDetector(warmup=60), []
    for x, _ in stream:
        scores.append(det.score_one(x))
        det.learn_one(x)
    labels = [y for _, y in stream]
    assert auc.get() == pytest.approx(roc_auc_score(labels, scores))
    assert auc.get() > 0.8
