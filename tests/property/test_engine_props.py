"""Property: engine results are bit-identical however a stream is split into ``step`` calls.

For any model-input width (raw features x (lags + 1), plus differences) and any
split, one call == random splits == one record per call: scores, thresholds,
flags, per-column errors, drift events, and the learned state afterwards (a
record's score must not depend on where it sits in a scoring block, see
``stream_ae.model.online``).
"""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stream_ae.config import (
    DecisionConfig,
    DriftConfig,
    EngineConfig,
    FeaturesConfig,
    ModelConfig,
    RegimeConfig,
    ThresholdConfig,
    TrainingConfig,
)
from stream_ae.engine import Engine
from stream_ae.records import Batch, StepResult
from tests.streams import latent

N = 240


def config(lags: int, diffs: bool, hidden: tuple[int, ...]) -> EngineConfig:
    return EngineConfig(
        features=FeaturesConfig(lags=lags, diffs=diffs),
        model=ModelConfig(hidden=hidden, seed=1),
        training=TrainingConfig(stride=48, window=128, batch_size=32, warmup=60,
                                warmup_epochs=2, warmup_batch_size=16),
        threshold=ThresholdConfig(q=0.9, window=200, min_count=10),
        drift=DriftConfig(history=64),
        regime=RegimeConfig(after_records=60, relearn_steps=2),
        decision=DecisionConfig(min_scores=20, key_min_records=10, false_alarm_rate=0.01),
    )


def stream(n_raw: int, seed: int) -> Batch:
    # a level shift half-way: flags, drift and regime events
    x = latent(N, seed, factors=2, width=n_raw, noise=0.2, shift_from=N // 2, shift=3.0)
    return Batch.from_arrays(x, keys=[f"k{i % 2}" for i in range(N)])


def outputs(results: list[StepResult]) -> dict[str, np.ndarray]:
    cat = np.concatenate
    return {
        "scores": cat([r.scores for r in results]),
        "thresholds": cat([r.thresholds for r in results]),
        "flags": cat([r.is_anomaly for r in results]),
        "errors": cat([r.feature_errors for r in results]),
        "events": np.array([(e.kind, e.record_index, e.level_before, e.level_after)
                            for r in results for e in r.drift_events], dtype=object),
    }


def run(cfg: EngineConfig, batch: Batch, cuts: list[int]) -> tuple[dict[str, np.ndarray], bytes]:
    eng = Engine(cfg, [f"f{j}" for j in range(batch.values.shape[1])])
    bounds = [0, *cuts, len(batch)]
    results = [eng.step(batch.slice(a, b)) for a, b in itertools.pairwise(bounds)]
    return outputs(results), eng.snapshot()


def widths(max_width: int = 80) -> st.SearchStrategy[tuple[int, int, bool]]:
    """(raw features, lags, diffs) with at most ``max_width`` model inputs."""

    def fits(t: tuple[int, int, bool]) -> bool:
        n_raw, lags, diffs = t
        return n_raw * (lags + 1 + int(diffs)) <= max_width

    return st.tuples(st.integers(1, 80), st.integers(0, 12), st.booleans()).filter(fits)


@settings(max_examples=40, deadline=None)
@given(
    shape=widths(),
    hidden=st.sampled_from([(), (8,)]),
    cuts=st.lists(st.integers(1, N - 1), max_size=12, unique=True).map(sorted),
    seed=st.integers(0, 2**16),
)
@example(shape=(3, 8, False), hidden=(), cuts=[7, 100, 101, 163], seed=0)  # 27 inputs
@example(shape=(38, 0, False), hidden=(), cuts=[1, 59, 60, 61], seed=1)
@example(shape=(9, 0, True), hidden=(8,), cuts=[30, 200], seed=2)
def test_one_call_equals_random_splits_equals_row_by_row(
    shape: tuple[int, int, bool], hidden: tuple[int, ...], cuts: list[int], seed: int
) -> None:
    n_raw, lags, diffs = shape
    cfg = config(lags, diffs, hidden)
    batch = stream(n_raw, seed)
    whole, whole_state = run(cfg, batch, [])
    split, split_state = run(cfg, batch, cuts)
    rows, rows_state = run(cfg, batch, list(range(1, N)))
    # one sensor: its level shift lies along the main direction of its own lags, which
    # reconstruction error does not see; with two or more the decisions are exercised
    assert int(whole["flags"].sum()) > 0 or n_raw == 1
    for key in whole:
        np.testing.assert_array_equal(whole[key], split[key], err_msg=f"split {key}")
        np.testing.assert_array_equal(whole[key], rows[key], err_msg=f"row-by-row {key}")
    # learning does not see the splits either: the whole learned state is the same
    assert whole_state == split_state == rows_state
