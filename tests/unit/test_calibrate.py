"""TailCalibrator against scipy on the same window, calibration on iid scores, per-key levels."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import numpy as np
import pytest
from scipy import stats

from stream_ae.detect import BatchKeys
from stream_ae.detect.calibrate import TailCalibrator, grade

Gen = Callable[[np.random.Generator, int], np.ndarray]
LOGNORMAL: Gen = lambda r, n: r.lognormal(0.0, 1.0, n)  # noqa: E731
CHI2_6: Gen = lambda r, n: r.chisquare(6, n) / 6  # noqa: E731  MSE over 6 Gaussian residuals


def warm(gen: Gen, seed: int, n: int = 20_000, **kw: float) -> TailCalibrator:
    kw.setdefault("min_count", 2000)
    cal = TailCalibrator(**kw)  # type: ignore[arg-type]
    cal.update(["a"] * n, gen(np.random.default_rng(seed), n))
    return cal


def _reference(cal: TailCalibrator, scores: np.ndarray) -> tuple[str, np.ndarray]:
    """The survival computed offline with scipy on the calibrator's own window: GPD by MLE
    above the 98 % quantile, exponential when the GPD has an end point (xi < 0)."""
    u = cal.values()
    t = float(np.quantile(u, 0.98))
    exc = u[u > t] - t
    xi, _, sigma = stats.genpareto.fit(exc, floc=0)
    level = float(cal.levels(["a"])[0])
    uu = np.log(scores) - level
    n = u.size
    body = (n - np.searchsorted(u, uu, side="right") + 1) / (n + 1)
    frac = (np.sum(u > t) + 1) / (n + 1)
    if xi < 0:
        kind, tail = "exp", stats.expon.sf(uu - t, 0, float(np.mean(exc)))
    else:
        kind, tail = "gpd", stats.genpareto.sf(uu - t, xi, 0, sigma)
        assert cal.tail_params[1] == pytest.approx(xi, abs=2e-3)
    assert cal.tail_params[0] == t
    return kind, np.clip(np.where(uu > t, frac * tail, body), 1e-300, 1)


@pytest.mark.parametrize("heavy", [False, True], ids=["light_tail_exp", "heavy_tail_gpd"])
def test_survival_equals_a_reference_tail_fitted_with_scipy_on_the_same_window(
        heavy: bool) -> None:
    gen: Gen = ((lambda r, n: np.exp(r.standard_t(3, n))) if heavy else LOGNORMAL)
    cal = warm(gen, 0, n=5000, window=5000, min_count=1000)
    u = cal.values()
    np.testing.assert_array_equal(u, np.sort(cal.get_state()["window"]))
    level = float(cal.levels(["a"])[0])
    scores = np.exp(level + np.linspace(u[0] - 1, u[-1] + 2, 400))
    kind, expected = _reference(cal, scores)
    assert cal.tail_kind == kind == ("gpd" if heavy else "exp")
    np.testing.assert_allclose(cal.survival(["a"] * 400, scores), expected, rtol=2e-2)
    t = cal.tail_params[0]
    frac = (np.sum(u > t) + 1) / (u.size + 1)
    just = cal.survival(["a", "a"], np.exp(level + np.array([t, t + 1e-9])))  # continuous at t
    assert just[0] == pytest.approx(frac) and just[1] == pytest.approx(frac, rel=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("gen", [LOGNORMAL, CHI2_6], ids=["lognormal", "chi2_6"])
def test_false_alarm_fraction_matches_alpha_on_iid_scores(gen: Gen) -> None:
    """Window 20000, then 1e6 fresh values: P(survival < alpha) / alpha per window (seed).

    At 1e-2 and 1e-3 every window is within a factor 2. At 1e-4 and 1e-5, 2 and 0.2
    expected values of a window beyond the level, one window's GPD extrapolation scatters
    (sd of the log ratio ~0.7 at 1e-5, skewed high because the survival is convex in xi):
    the geometric mean over windows is within a factor 2 at 1e-4 and within 4 at 1e-5
    (measured 8 windows: lognormal 1.15 / 1.6, chi-square 1.38 / 2.9)."""
    alphas = np.array([1e-2, 1e-3, 1e-4, 1e-5])
    ratios = []
    for seed in range(8):
        cal = warm(gen, seed)
        p = cal.survival(["a"] * 1_000_000, gen(np.random.default_rng(1000 + seed), 1_000_000))
        ratios.append([(p < a).mean() / a for a in alphas])
    r = np.array(ratios)
    assert np.all((r[:, :2] > 0.5) & (r[:, :2] < 2.0)), r
    gmean = np.exp(np.log(np.maximum(r, 0.05)).mean(axis=0))
    # far out the tail is conservative (a light tail read as exponential): never more false
    # alarms than the budget allows, but not absurdly few either
    assert 0.05 < gmean[2] < 2.0 and 0.02 < gmean[3] < 4.0, (gmean, r)


def test_keys_of_different_scale_get_the_same_survival() -> None:
    r = np.random.default_rng(2)
    cal = TailCalibrator(min_count=2000)
    for _ in range(20):  # boundaries of 2000 records, the two keys interleaved
        x = CHI2_6(r, 2000)
        cal.update(["quiet", "loud"] * 1000, x * np.tile([1.0, 100.0], 1000))
    fresh = CHI2_6(r, 50_000)
    quiet = cal.survival(["quiet"] * fresh.size, fresh)
    loud = cal.survival(["loud"] * fresh.size, 100.0 * fresh)
    ratio = loud / quiet
    assert float(np.quantile(ratio, 0.001)) > 0.7 and float(np.quantile(ratio, 0.999)) < 1.4
    for a in (1e-2, 1e-3):
        assert (loud < a).mean() == pytest.approx(a, rel=0.5)
        assert (quiet < a).mean() == pytest.approx(a, rel=0.5)
    np.testing.assert_allclose(cal.levels(["loud"]) - cal.levels(["quiet"]), math.log(100),
                               atol=0.1)
    unseen = cal.survival(["new"], [1.0])[0]  # a new key is read on the pooled level
    assert unseen == pytest.approx(cal.survival(["x"], [1.0])[0])


def test_cold_nan_grade_and_survival_is_pure() -> None:
    cal = TailCalibrator(min_count=100)
    cal.update(["a"] * 50, np.ones(50))
    assert (cal.is_warm, cal.survival(["a", "a"], [1e9, np.nan]).tolist()[0]) == (False, 1.0)
    assert math.isnan(cal.survival(["a"], [np.nan])[0])
    assert cal.score_at(["a"], [1e-3]).tolist() == [math.inf]
    cal = warm(CHI2_6, 3, n=3000, window=3000, min_count=1000)
    before = cal.get_state()
    cal.survival(["a", "b"] * 100, np.linspace(0.1, 9, 200))
    cal.score_at(["a", "b"], [1e-4, 0.5])
    after = cal.get_state()
    for k, v in before.items():
        np.testing.assert_array_equal(np.asarray(after[k]), np.asarray(v))
    assert grade([1.0, 1e-5, 1e-10, np.nan], grade_decades=10).tolist()[:3] == [0.0, 0.5, 1.0]
    assert grade([1e-2], grade_decades=4).tolist() == [0.5]


def test_score_at_inverts_survival() -> None:
    cal = warm(LOGNORMAL, 4, n=5000, window=5000, min_count=1000)
    p = np.array([0.5, 0.1, 0.03, 1e-3, 1e-6, 1e-12])
    s = cal.score_at(["a"] * p.size, p)
    back = cal.survival(["a"] * p.size, s)
    np.testing.assert_allclose(back[3:], p[3:], rtol=1e-6)  # the GPD tail: exact inverse
    assert np.all(back[:3] <= p[:3]) and np.all(back[:3] > p[:3] - 2 / 5001)  # body: a step
    assert np.all(np.diff(s) > 0)
    assert cal.score_at(["a", "a"], [1.0, np.nan])[0] == 0.0
    assert math.isnan(cal.score_at(["a", "a"], [1.0, np.nan])[1])


def test_fallbacks_empirical_with_few_excesses_exponential_when_the_fit_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cal = warm(LOGNORMAL, 5, n=100, window=100, min_count=100, min_excesses=40)
    assert cal.tail_kind == "empirical"  # at most 30 % of 100 = 30 excesses
    assert cal.survival(["a"], [1e12])[0] == pytest.approx(1 / 101)
    assert cal.score_at(["a"], [1e-6])[0] == math.inf

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no convergence")

    heavy: Gen = lambda r, n: np.exp(r.pareto(2.0, n))  # noqa: E731  log-scores: Pareto tail
    assert warm(heavy, 5, n=5000, window=5000, min_count=1000).tail_kind == "gpd"
    monkeypatch.setattr(stats.genpareto, "fit", broken)
    cal = warm(heavy, 5, n=5000, window=5000, min_count=1000)
    u = cal.values()
    t = float(np.quantile(u, 0.98))
    assert cal.tail_kind == "exp"
    assert cal.tail_params == (t, 0.0, pytest.approx(float(np.mean(u[u > t] - t))))


def test_refit_only_after_refit_every_new_values() -> None:
    r = np.random.default_rng(6)
    cal = TailCalibrator(window=4000, min_count=2000, refit_every=3000)
    cal.update(["a"] * 3000, LOGNORMAL(r, 3000))  # fitted now; next when the window doubled
    first = cal.tail_params
    cal.update(["a"] * 2999, 5 * LOGNORMAL(r, 2999))
    assert cal.tail_params == first
    cal.update(["a"], [1.0])
    assert cal.tail_params[0] > first[0]


def test_snapshot_round_trip_continues_like_an_uninterrupted_run() -> None:
    r = np.random.default_rng(7)
    keys = [f"k{i}" for i in r.integers(0, 30, 12_000)]
    s = CHI2_6(r, 12_000) * np.exp(r.integers(0, 30, 12_000) / 5)
    whole = TailCalibrator(window=5000, min_count=1000, refit_every=2000, max_keys=20)
    first = TailCalibrator(window=5000, min_count=1000, refit_every=2000, max_keys=20)
    for a in range(0, 6000, 1000):
        whole.update(keys[a : a + 1000], s[a : a + 1000])
        first.update(keys[a : a + 1000], s[a : a + 1000])
    state = first.get_state()
    json.dumps({k: v for k, v in state.items() if not isinstance(v, np.ndarray)})
    assert all(v.dtype != object for v in state.values() if isinstance(v, np.ndarray))
    second = TailCalibrator(window=5000, min_count=1000, refit_every=2000, max_keys=20)
    second.set_state(state)
    for a in range(6000, 12_000, 1000):
        whole.update(keys[a : a + 1000], s[a : a + 1000])
        second.update(keys[a : a + 1000], s[a : a + 1000])
    np.testing.assert_array_equal(second.survival(keys, s), whole.survival(keys, s))
    assert second.get_state()["keys"] == whole.get_state()["keys"]
    assert len(whole.get_state()["keys"]) == 20


def test_reset_key_rebases_the_level() -> None:
    r = np.random.default_rng(8)
    cal = TailCalibrator(window=5000, min_count=1000)
    cal.update(["a"] * 5000, CHI2_6(r, 5000))
    assert cal.survival(["a"], [10.0])[0] < 1e-4  # ten times the usual error: rare
    cal.reset_key("a", 10.0 * CHI2_6(r, 20))
    assert 0.2 < cal.survival(["a"], [10.0])[0] < 0.8  # now the normal
    cal.reset_key("a", [np.nan, -1.0])
    assert cal.levels(["a"])[0] == cal.levels(["unseen"])[0]


def test_batch_keys_give_the_same_results_as_the_list() -> None:
    r = np.random.default_rng(12)
    keys = [f"k{i}" for i in r.integers(0, 5, 6000)]
    s = CHI2_6(r, 6000) * np.exp(r.integers(0, 5, 6000))
    one, two = TailCalibrator(min_count=2000), TailCalibrator(min_count=2000)
    one.update(keys, s)
    two.update(BatchKeys(keys), s)
    np.testing.assert_array_equal(two.survival(BatchKeys(keys), s), one.survival(keys, s))
    np.testing.assert_array_equal(two.has_level(BatchKeys(keys)), one.has_level(keys))
