"""Engine invariants: batch-boundary independence, exact snapshot/restore, rejection, gating."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

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
from stream_ae.errors import ConfigError, ConfigMismatchError, SnapshotError
from stream_ae.records import Batch, StepResult
from tests.streams import latent

torch.set_num_threads(1)

NAMES = ("a", "b", "c")


def small_config(**features: object) -> EngineConfig:
    return EngineConfig(
        features=FeaturesConfig(**features),  # type: ignore[arg-type]
        model=ModelConfig(hidden=(8,), bottleneck=2, seed=3),
        training=TrainingConfig(stride=64, window=256, batch_size=64, warmup=100,
                                warmup_epochs=3),
        threshold=ThresholdConfig(q=0.95, window=300, min_count=20),
        drift=DriftConfig(history=128, boost_steps=3, lr_boost=5.0, rewarm_threshold=True),
        regime=RegimeConfig(after_records=150, relearn_steps=4),
        decision=DecisionConfig(min_scores=20, key_min_records=10, false_alarm_rate=0.01),
    )


def stream(n: int = 1500, seed: int = 0, keys: int = 2) -> Batch:
    """Correlated normal data with point anomalies and a level shift two-thirds through."""
    x = latent(n, seed, loadings=[[1.0, 2.0, -1.0]], shift_from=2 * n // 3, shift=4.0,
               spikes=15)
    ks = [f"k{i % keys}" for i in range(n)]
    return Batch.from_arrays(x, keys=ks, timestamps=np.arange(n, dtype=float))


def run_split(eng: Engine, batch: Batch, cuts: list[int]) -> list[StepResult]:
    bounds = [0, *cuts, len(batch)]
    return [eng.step(batch.slice(a, b)) for a, b in itertools.pairwise(bounds)]


def concat(results: list[StepResult]) -> dict[str, np.ndarray]:
    return {
        "scores": np.concatenate([r.scores for r in results]),
        "thresholds": np.concatenate([r.thresholds for r in results]),
        "flags": np.concatenate([r.is_anomaly for r in results]),
        "warmup": np.concatenate([r.warmup for r in results]),
        "errors": np.concatenate([r.feature_errors for r in results]),
        "grades": np.concatenate([r.grades for r in results]),
        "incident": np.concatenate([r.incident for r in results]),
        "versions": np.concatenate([r.model_versions for r in results]),
        "drift_recent": np.concatenate([r.drift_recent for r in results]),
    }


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def events(results: list[StepResult]) -> list[tuple[str, int]]:
    return [(e.kind, e.record_index) for r in results for e in r.drift_events]


@pytest.fixture(scope="module")
def data() -> Batch:
    return stream()


@pytest.fixture(scope="module", params=[{}, {"lags": 2, "diffs": True}], ids=["plain", "lags"])
def reference(request: pytest.FixtureRequest, data: Batch) -> tuple[EngineConfig, list[StepResult]]:
    cfg = small_config(**request.param)
    return cfg, [Engine(cfg, NAMES).step(data)]


def test_reference_run_learns_flags_and_adapts(
    reference: tuple[EngineConfig, list[StepResult]],
) -> None:
    _, res = reference
    r = res[0]
    assert int(r.warmup.sum()) == 100
    assert not r.is_anomaly[:100].any()
    assert 0 < int(r.is_anomaly.sum()) < 400
    assert np.isfinite(r.thresholds[100:]).any()
    assert r.model_version > 10
    assert r.feature_errors.shape == (1500, len(r.feature_names))
    np.testing.assert_allclose(r.feature_errors.mean(axis=1), r.scores, rtol=1e-5)
    assert events(res), "the level shift must trigger a drift or regime event"


@pytest.mark.parametrize("cuts", [
    [1, 2, 3, 99, 100, 101, 163, 700],
    sorted(np.random.default_rng(7).choice(np.arange(1, 1500), 60, replace=False).tolist()),
])
def test_split_independence(
    reference: tuple[EngineConfig, list[StepResult]], data: Batch, cuts: list[int]
) -> None:
    cfg, ref = reference
    got = run_split(Engine(cfg, NAMES), data, cuts)
    assert_same(concat(ref), concat(got))
    assert events(ref) == events(got)


def test_one_row_at_a_time_equals_one_call(
    reference: tuple[EngineConfig, list[StepResult]], data: Batch
) -> None:
    cfg, ref = reference
    n = 400  # covers warm-up end and several boundaries
    eng = Engine(cfg, NAMES)
    got = [eng.step(data.slice(i, i + 1)) for i in range(n)]
    full = concat(ref)
    part = concat(got)
    for key in full:
        np.testing.assert_array_equal(full[key][:n], part[key], err_msg=key)


@pytest.mark.parametrize("cut", [0, 50, 100, 130, 777])
def test_snapshot_restore_continue_equals_uninterrupted(
    reference: tuple[EngineConfig, list[StepResult]], data: Batch, cut: int
) -> None:
    cfg, ref = reference
    eng = Engine(cfg, NAMES)
    first = eng.step(data.slice(0, cut))
    blob = eng.snapshot()
    restored = Engine.restore(blob)
    assert restored.records_seen == cut and restored.model_version == eng.model_version
    rest = restored.step(data.slice(cut, len(data)))
    assert_same(concat(ref), concat([first, rest]))
    assert restored.snapshot() != blob


def test_snapshot_is_an_immutable_copy(data: Batch) -> None:
    eng = Engine(small_config(), NAMES)
    eng.step(data.slice(0, 300))
    blob = eng.snapshot()
    eng.step(data.slice(300, 600))
    a = Engine.restore(blob).step(data.slice(300, 600))
    b = Engine.restore(blob).step(data.slice(300, 600))
    np.testing.assert_array_equal(a.scores, b.scores)


def test_same_seed_same_results_other_seed_differs(data: Batch) -> None:
    cfg = small_config()
    a = Engine(cfg, NAMES).step(data.slice(0, 300)).scores
    b = Engine(cfg, NAMES).step(data.slice(0, 300)).scores
    other = cfg.model_copy(update={"model": ModelConfig(hidden=(8,), bottleneck=2, seed=4)})
    c = Engine(other, NAMES).step(data.slice(0, 300)).scores
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_prequential_first_record_scored_by_the_untrained_model(data: Batch) -> None:
    cfg = small_config()
    eng = Engine(cfg, NAMES)
    r = eng.step(data.slice(0, 1))
    assert eng.model_version == 0
    assert math.isfinite(r.scores[0]) and r.warmup[0]


def test_reject_policy_rejects_non_finite_rows_without_touching_state(data: Batch) -> None:
    cfg = small_config()
    values = data.values[:400].copy()
    values[[5, 150, 151], 1] = np.nan
    values[200, 0] = np.inf
    dirty = Batch.from_arrays(values, keys=data.keys[:400])
    clean_rows = np.setdiff1d(np.arange(400), [5, 150, 151, 200])
    r = Engine(cfg, NAMES).step(dirty)
    assert r.rejected == ((5, "non_finite"), (150, "non_finite"), (151, "non_finite"),
                          (200, "non_finite"))
    assert np.isnan(r.scores[[5, 150, 151, 200]]).all()
    assert not r.is_anomaly[[5, 150, 151, 200]].any()
    clean = Engine(cfg, NAMES).step(Batch.from_arrays(values[clean_rows],
                                                      keys=[data.keys[i] for i in clean_rows]))
    np.testing.assert_array_equal(r.scores[clean_rows], clean.scores)


def test_ffill_policy_carries_last_value_and_rejects_without_one() -> None:
    cfg = small_config(missing="ffill")
    values = np.array([[np.nan, 1, 1], [1, 2, 3], [np.nan, 5, 6], [7, 8, 9]], dtype=np.float32)
    r = Engine(cfg, NAMES).step(Batch.from_arrays(values, keys=["k", "k", "k", "j"]))
    assert r.rejected == ((0, "no_previous_value"),)
    filled = np.array([[1, 2, 3], [1, 5, 6], [7, 8, 9]], dtype=np.float32)
    ref = Engine(cfg, NAMES).step(Batch.from_arrays(filled, keys=["k", "k", "j"]))
    np.testing.assert_array_equal(r.scores[1:], ref.scores)


def test_gate_keeps_flagged_records_out_of_the_replay_buffer(data: Batch) -> None:
    eng = Engine(small_config(), NAMES)
    r = eng.step(data.slice(0, 900))
    flagged = int(r.is_anomaly[100:].sum())
    assert flagged > 0
    # post-warm-up records in replay = accepted minus flagged (window not yet full)
    assert len(eng._replay) == min(256, 900 - flagged)


def test_feature_names_and_lazy_state() -> None:
    eng = Engine(small_config(lags=1, diffs=True), ["t"])
    assert eng.feature_names == ("t", "t_lag1", "t_diff")
    assert (eng.records_seen, eng.model_version, math.isnan(eng.threshold)) == (0, 0, True)
    restored = Engine.restore(eng.snapshot())
    assert restored.raw_feature_names == ("t",) and restored.records_seen == 0


def test_wrong_width_batch_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        Engine(small_config(), NAMES).step(Batch.from_arrays(np.zeros((2, 2))))


def test_restore_rejects_garbage_truncation_and_other_config(data: Batch) -> None:
    eng = Engine(small_config(), NAMES)
    eng.step(data.slice(0, 200))
    blob = eng.snapshot()
    with pytest.raises(SnapshotError):
        Engine.restore(b"not a snapshot")
    with pytest.raises(SnapshotError):
        Engine.restore(blob[:-10])
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0xFF
    with pytest.raises(SnapshotError):
        Engine.restore(bytes(flipped))
    with pytest.raises(ConfigMismatchError) as err:
        Engine.restore(blob, config=small_config(lags=1))
    assert err.value.fields == ("features.lags",)
    assert Engine.restore(blob, config=small_config()).records_seen == 200


def test_restore_under_new_decision_settings_takes_them_and_keeps_the_state(data: Batch) -> None:
    """Settings that are not learned state apply on restart: the restored engine continues
    (records_seen, model) under the new values; the threshold in force follows the new q."""
    eng = Engine(small_config(), NAMES)
    eng.step(data.slice(0, 400))
    base = small_config()
    new = base.model_copy(update={
        "threshold": base.threshold.model_copy(update={"q": 0.5}),
        "drift": base.drift.model_copy(update={"lr_boost": 2.0}),
        "training": base.training.model_copy(update={"steps_per_stride": 2})})
    restored = Engine.restore(eng.snapshot(), config=new)
    assert restored.config == new
    assert (restored.records_seen, restored.model_version) == (400, eng.model_version)
    assert restored.threshold < eng.threshold  # the median, not the 95th percentile
    same = Engine.restore(eng.snapshot(), config=small_config())
    x = data.slice(400, 500)
    assert np.array_equal(same.step(x).scores, eng.step(x).scores)


@pytest.mark.parametrize(("section", "change", "field"), [
    ("model", {"hidden": (4,)}, "model.hidden"),
    ("training", {"window": 512}, "training.window"),
    ("threshold", {"window": 400}, "threshold.window"),
    ("regime", {"after_records": 90}, "regime.after_records"),
    ("decision", {"calibration_window": 400}, "decision.calibration_window"),
])
def test_restore_refuses_a_config_that_contradicts_the_learned_state(
        data: Batch, section: str, change: dict[str, object], field: str) -> None:
    eng = Engine(small_config(), NAMES)
    eng.step(data.slice(0, 200))
    base = small_config()
    new = base.model_copy(update={section: getattr(base, section).model_copy(update=change)})
    with pytest.raises(ConfigMismatchError, match=field.replace(".", r"\.")) as err:
        Engine.restore(eng.snapshot(), config=new)
    assert err.value.fields == (field,)


def test_drift_ends_the_chunk_so_results_stay_split_independent(data: Batch) -> None:
    cfg = small_config()
    ref = Engine(cfg, NAMES).step(data)
    drifts = [e for e in ref.drift_events if e.kind == "drift"]
    assert drifts and all(e.level_before > 0 and e.action.startswith("lr_boost")
                          for e in drifts)
    got = run_split(Engine(cfg, NAMES), data, [999, 1000, 1030, 1031, 1200])
    assert_same(concat([ref]), concat(got))
    assert events([ref]) == events(got)


def test_regime_policy_relearns_a_new_normal(data: Batch) -> None:
    no_drift = small_config().model_copy(update={"drift": DriftConfig(detector="none")})
    gated_only = no_drift.model_copy(update={"regime": RegimeConfig(enabled=False)})
    with_regime = Engine(no_drift, NAMES).step(data)
    without = Engine(gated_only, NAMES).step(data)
    changes = [e for e in with_regime.drift_events if e.kind == "regime_change"]
    # one per key: each key's lasting incident becomes its new normal
    assert len(changes) == 2 and all(e.record_index > 1000 for e in changes)
    assert {data.keys[e.batch_index] for e in changes} == {"k0", "k1"}
    resolved = [c for c in with_regime.incidents if c.reason == "new_normal"]
    assert sorted(c.key for c in resolved) == ["k0", "k1"]
    assert all(c.records == 150 for c in resolved)  # regime.after_records of the key
    assert without.drift_events == ()
    # the gated model alone never learns the shifted level; the regime policy lets it
    tail = slice(1300, 1500)
    assert np.median(with_regime.scores[tail]) < 0.75 * np.median(without.scores[tail])
    got = run_split(Engine(no_drift, NAMES), data, [1, 1000, 1100, 1107, 1108, 1300])
    assert_same(concat([with_regime]), concat(got))


def test_empty_batches_are_fine_with_and_without_key_state() -> None:
    for cfg in (small_config(), small_config(lags=2, missing="ffill")):
        eng = Engine(cfg, NAMES)
        r = eng.step(Batch.from_arrays(np.zeros((0, 3))))
        assert (len(r), r.feature_errors.shape[0], eng.records_seen) == (0, 0, 0)


def test_drift_and_regime_events_are_logged(data: Batch) -> None:
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        res = Engine(small_config(), NAMES).step(data)
    drift_logs = [e for e in logs if e["event"] == "drift_detected"]
    assert [e["record_index"] for e in drift_logs] == [
        ev.record_index for ev in res.drift_events if ev.kind == "drift"
    ]
    assert all(e["log_level"] == "info" for e in drift_logs)


def test_default_drift_monitor_only_reports(data: Batch) -> None:
    # the defaults (lr_boost 1, no re-warm) adapt nothing: the events say so
    cfg = small_config().model_copy(update={"drift": DriftConfig(history=128)})
    res = Engine(cfg, NAMES).step(data)
    drift = [e for e in res.drift_events if e.kind == "drift"]
    assert drift and {e.action for e in drift} == {"report"}
    got = run_split(Engine(cfg, NAMES), data, [5, 999, 1000, 1001])
    assert_same(concat([res]), concat(got))


def pca_config() -> EngineConfig:
    base = small_config(lags=1)
    return base.model_copy(update={
        "model": ModelConfig(hidden=(), bottleneck=2, seed=3),
        "training": base.training.model_copy(update={"warmup_fit": "pca"}),
    })


def test_pca_warmup_fit_is_split_independent_and_restores_exactly(data: Batch) -> None:
    whole = concat([Engine(pca_config(), NAMES).step(data)])
    split = concat(run_split(Engine(pca_config(), NAMES), data, [37, 99, 100, 101, 640]))
    assert_same(whole, split)
    eng = Engine(pca_config(), NAMES)
    first = eng.step(data.slice(0, 130))  # past the warm-up (100 records)
    rest = Engine.restore(eng.snapshot()).step(data.slice(130, len(data)))
    assert_same(whole, concat([first, rest]))


def test_pca_warmup_fit_replaces_the_epochs_and_fits_the_subspace(data: Batch) -> None:
    eng = Engine(pca_config(), NAMES)
    res = eng.step(data.slice(0, 100))
    assert eng.model_version < 100  # the ramped learning steps only, no warm-up epochs
    epochs = small_config(lags=1).model_copy(update={
        "model": ModelConfig(hidden=(), bottleneck=2, seed=3),
        "training": pca_config().training.model_copy(update={"warmup_fit": "epochs"})})
    eng_e = Engine(epochs, NAMES)
    eng_e.step(data.slice(0, 100))
    assert eng_e.model_version > eng.model_version
    # right after warm-up, the exact least-squares fit reconstructs the normal rows better
    nxt = data.slice(100, 400)
    assert np.nanmedian(eng.step(nxt).scores) < np.nanmedian(eng_e.step(nxt).scores)
    assert res.warmup.all()


@pytest.mark.parametrize("features", [{}, {"lags": 2, "diffs": True}])
def test_score_only_mutates_nothing_and_matches_step_until_the_next_boundary(
    data: Batch, features: dict[str, object]
) -> None:
    cfg = small_config(**features).model_copy(update={"drift": DriftConfig(detector="none")})
    eng = Engine(cfg, NAMES)
    eng.step(data.slice(0, 900))
    before = eng.snapshot()
    nxt = data.slice(900, 960)
    only = eng.score_only(nxt)
    assert eng.snapshot() == before
    assert eng.score_only(nxt).scores.tolist() == only.scores.tolist()  # nothing changed
    twin, v0 = Engine.restore(before), eng.model_version
    stepped = [twin.step(nxt.slice(i, i + 1)) for i in range(len(nxt))]
    frozen = 1 + next(i for i, r in enumerate(stepped) if r.model_version > v0)
    assert 1 <= frozen < len(nxt)  # a boundary falls inside: the rows after it differ
    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(r, name) for r in stepped])

    np.testing.assert_array_equal(only.scores[:frozen], cat("scores")[:frozen])
    assert not np.array_equal(only.scores[frozen:], cat("scores")[frozen:])
    for name in ("is_anomaly", "grades", "thresholds", "incident", "model_versions"):
        np.testing.assert_array_equal(getattr(only, name)[:frozen], cat(name)[:frozen], name)
    assert only.is_anomaly.any() and not only.warmup.any()
    assert (only.model_versions == v0).all() and only.drift_events == ()


def test_score_only_on_a_fresh_engine_is_the_untrained_first_step(data: Batch) -> None:
    eng = Engine(small_config(lags=1), NAMES)
    only = eng.score_only(data.slice(0, 5))
    assert (eng.snapshot(), eng.records_seen) == (Engine(small_config(lags=1), NAMES).snapshot(), 0)
    np.testing.assert_array_equal(only.scores, eng.step(data.slice(0, 5)).scores)
    assert only.warmup.all() and not only.is_anomaly.any()


def test_score_only_rejects_like_step_and_checks_the_width(data: Batch) -> None:
    eng = Engine(small_config(), NAMES)
    eng.step(data.slice(0, 200))
    bad = data.values[:3].copy()
    bad[1, 0] = np.nan
    res = eng.score_only(Batch.from_arrays(bad))
    assert res.rejected == ((1, "non_finite"),) and math.isnan(res.scores[1])
    assert np.isfinite(res.scores[[0, 2]]).all()
    with pytest.raises(ConfigError):
        eng.score_only(Batch.from_arrays(np.zeros((2, 2))))


def test_per_row_model_versions_do_not_depend_on_batching(data: Batch) -> None:
    """An alert carries the model version it was scored under: a replay that batches the
    records differently (after a rebalance) publishes identical duplicates."""
    whole = Engine(small_config(), NAMES).step(data)
    eng = Engine(small_config(), NAMES)
    cuts = [0, 7, 150, 151, 420, len(data)]
    parts = [eng.step(data.slice(a, b)) for a, b in itertools.pairwise(cuts)]
    split = np.concatenate([r.model_versions for r in parts])
    assert whole.model_versions is not None
    assert np.array_equal(whole.model_versions, split)
    assert whole.model_versions[0] == 0 and whole.model_versions[-1] > 0
    assert [r.model_version for r in parts][-1] == whole.model_version


def test_a_schema_3_snapshot_restores_with_the_run_peaks_at_the_evidence(data: Batch) -> None:
    from stream_ae import snapshot as snap

    eng = Engine(small_config(), NAMES)
    eng.step(data.slice(0, 700))
    tree, blobs = snap.decode(eng.snapshot())
    evidence = tree["parts"]["decision"]["evidence"]
    assert len(evidence["keys"]) > 0 and "peak" in evidence
    old = {**tree, "schema": 3, "parts": {**tree["parts"], "decision": {
        **tree["parts"]["decision"], "evidence": {"keys": evidence["keys"], "s": evidence["s"]}}}}
    restored = Engine.restore(snap.encode(old, blobs))
    state = restored._dec.get_state()["evidence"]
    np.testing.assert_array_equal(state["peak"], evidence["s"])
    assert len(restored.step(data.slice(700, 900))) == 200
    with pytest.raises(SnapshotError, match="schema 2"):
        Engine.restore(snap.encode({**tree, "schema": 2}, blobs))
