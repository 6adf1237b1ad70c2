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
