"""Metrics against scikit-learn as the oracle, and detection delays on hand-made episodes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from stream_ae.evaluation import (
    EpisodeDelay,
    classification_metrics,
    delay_summary,
    delays_by_group,
    detection_delays,
    episodes,
    evaluable,
    roc_auc,
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1), st.integers(0, 6)),
                min_size=2, max_size=80))
def test_metrics_match_sklearn(rows: list[tuple[int, int, int]]) -> None:
    y = np.array([r[0] for r in rows])
    f = np.array([r[1] for r in rows])
    s = np.array([r[2] for r in rows], dtype=float) / 3.0  # few values: many ties
    m = classification_metrics(y, f, s)
    if y.sum() and f.sum():
        assert m.precision == pytest.approx(precision_score(y, f))
        assert m.recall == pytest.approx(recall_score(y, f))
        assert m.f1 == pytest.approx(f1_score(y, f))
    if 0 < y.sum() < len(y):
        assert m.roc_auc == pytest.approx(roc_auc_score(y, s))
    else:
        assert math.isnan(m.roc_auc)
    assert (m.tp + m.fn, m.tp + m.fp, m.n) == (int(y.sum()), int(f.sum()), len(y))


def test_undefined_ratios_are_nan_and_zero_f1_when_all_wrong() -> None:
    none_flagged = classification_metrics([1, 0], [0, 0], [0.1, 0.2])
    assert math.isnan(none_flagged.precision)
    assert none_flagged.recall == 0.0
    assert none_flagged.f1 == 0.0
    assert none_flagged.roc_auc == 0.0


def test_perfect_ranking_has_auc_one() -> None:
    assert roc_auc([0, 0, 1, 1, 0], [0.1, 0.2, 0.9, 0.8, 0.3]) == 1.0


def test_episodes_at_the_edges() -> None:
    assert episodes([1, 1, 0, 0, 1]) == [(0, 2), (4, 5)]
    assert episodes([0, 0]) == []
    assert episodes([1]) == [(0, 1)]


def test_detection_delay_counts_records_and_seconds_from_episode_start() -> None:
    labels = [0, 0, 1, 1, 1, 1, 0, 1, 1, 0]
    flags = [1, 0, 0, 0, 1, 1, 0, 0, 0, 1]  # a false alarm before, hit at +2, miss, flag after
    ts = np.arange(10) * 10.0
    got = detection_delays(labels, flags, ts, group="d1")
    assert got == [
        EpisodeDelay("d1", 2, 6, 20.0, True, 2, 20.0),
        EpisodeDelay("d1", 7, 9, 70.0, False, None, None),
    ]
    summary = delay_summary(got)
    assert summary["episodes"] == 2
    assert summary["detected_fraction"] == 0.5
    assert summary["median_delay_seconds"] == 20.0


def test_delays_without_timestamps_have_no_seconds() -> None:
    (d,) = detection_delays([1, 1], [0, 1])
    assert (d.delay_records, d.delay_seconds) == (1, None)


def test_groups_are_evaluated_separately() -> None:
    groups = ["a", "b", "a", "b", "a", "b"]
    labels = np.array([0, 1, 1, 1, 1, 0])
    flags = np.array([False, False, False, True, True, False])
    got = delays_by_group(groups, labels, flags, np.arange(6.0))
    assert [(d.group, d.start, d.stop, d.delay_records, d.delay_seconds) for d in got] == [
        ("a", 1, 3, 1, 2.0),
        ("b", 0, 2, 1, 2.0),
    ]


def test_evaluable_drops_unknown_labels_nan_scores_and_warmup() -> None:
    mask = evaluable(np.array([0, 1, -1, 1, 0]), np.array([1.0, np.nan, 1.0, 2.0, 3.0]),
                     np.array([True, False, False, False, False]))
    assert mask.tolist() == [False, False, False, True, True]
