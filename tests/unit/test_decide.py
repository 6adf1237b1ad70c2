"""DecisionLayer: evidence flags end after the evidence falls from its peak; the schedule of
the evidence level's fits."""

from __future__ import annotations

import numpy as np

from stream_ae.config import DecisionConfig, RegimeConfig
from stream_ae.detect.decide import DecisionLayer


def _layer(**decision: float) -> DecisionLayer:
    layer = DecisionLayer(DecisionConfig(**decision), RegimeConfig(), ("x",), 0, False, 100)
    rng = np.random.default_rng(0)
    layer.prime(["a"] * 5000, rng.lognormal(0.0, 0.5, 5000))
    return layer


def _decide(layer: DecisionLayer, p: np.ndarray) -> np.ndarray:
    scores = layer._cal.score_at(["a"] * p.size, p)
    n = p.size
    d = layer.decide(["a"] * n, scores, np.arange(n, dtype=float), np.arange(n),
                     np.ones((n, 1), np.float32))
    return np.asarray(d.flags)


def test_evidence_flags_end_once_the_evidence_fell_h_iid_below_its_peak() -> None:
    layer = _layer(evidence_cap=4.0)  # h = h_iid ~ 10, cap ~ 40
    h = layer._h
    burst = np.full(20, 1e-4)  # surprise 9.2 a record: the evidence reaches its cap
    # then a return to normal: records of p = 0.05 (each adds evidence) among p = 0.5 ones
    drain = np.tile([0.5, 0.05], 45)
    flags = _decide(layer, np.concatenate([burst, drain]))[burst.size:]
    s = np.array([layer._ev.value("a")])
    assert s[0] < h  # the evidence drained below the level within the 90 records
    flagged = np.flatnonzero(flags)
    # flags stop ~h_iid below the peak (4h): at ~0.9 a record pair, after 11 pairs, while
    # the evidence stays above h for ~33 pairs (all their p = 0.05 records were flagged
    # before), and where it dips to h and crosses it again it is still the same run (a new
    # run needs the evidence h_iid below h first)
    assert flagged.tolist() == list(range(1, 23, 2))


def test_the_evidence_level_is_first_learned_at_1024_values() -> None:
    layer = _layer()
    rng = np.random.default_rng(1)
    # strongly correlated surprises: runs of 40 records share one p
    p = np.repeat(rng.uniform(size=2100 // 40 + 1), 40)[:2100]
    levels = []
    for i in range(0, 2100, 50):
        layer._learn_evidence_level(["a"] * 50, p[i : i + 50])
        levels.append(layer._h)
    changed = [50 * (j + 1) for j in range(1, len(levels)) if levels[j] != levels[j - 1]]
    assert levels[0] == layer._h_iid  # no fit from the first 50 values
    assert changed[0] == 1050 and levels[-1] > 2 * layer._h_iid  # learned, and well above


def test_keys_without_a_level_are_learned_however_surprising_on_the_pooled_level() -> None:
    # more keys than the warm-up could give a level (each below key_min_records), and every
    # later score far above the pooled level: the calibration must go on learning them
    # (before, it censored them as extreme and never learned again: nothing was ever flagged)
    layer = DecisionLayer(DecisionConfig(), RegimeConfig(), ("x",), 0, False, 10_000)
    rng = np.random.default_rng(0)
    keys = [f"k{i % 2000}" for i in range(6000)]  # 3 records a key
    layer.prime(keys, rng.lognormal(0.0, 0.3, 6000))
    count = layer._cal._count
    high = rng.lognormal(3.0, 0.3, 6000)  # every score ~20x the pooled level
    d = layer.decide(keys, high, np.arange(6000.0), np.arange(6000), np.ones((6000, 1), np.float32))
    assert not d.flags.any()  # on the pooled level: learned first, not flagged
    assert (d.p < 10 * layer._alpha).all()  # ... however extreme they look there
    layer.absorb(keys, high, d.p, d.flags)
    assert layer._cal._count == count + 6000
    for _ in range(16):  # 3 records a key each time: 51 learned, past key_min_records (50)
        d = layer.decide(keys, high, np.arange(6000.0), np.arange(6000),
                         np.ones((6000, 1), np.float32))
        layer.absorb(keys, high, d.p, d.flags)
    assert layer._cal.has_level(["k0", "k1999"]).all()  # the keys have their own levels
    assert float(np.median(layer._cal.survival(keys, high))) > 0.1  # ... on which they are normal
