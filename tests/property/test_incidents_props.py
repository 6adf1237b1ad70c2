"""Property: incidents equal a row-by-row reference, however rows are split into calls."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from itertools import pairwise
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_ae.detect.incidents import IncidentTracker, IncidentUpdate


def oracle(keys: list[str], flags: list[bool], grades: list[float], quiet: int, every: int,
           max_keys: int) -> tuple[list[int], list[tuple[Any, ...]]]:
    """The rules, literally, one row at a time (offsets = 10 * row, times = row)."""
    open_: OrderedDict[str, dict[str, Any]] = OrderedDict()
    belong, events = [], []

    def emit(kind: str, key: str, inc: dict[str, Any], row: int, reason: str = "") -> None:
        events.append((kind, key, inc["off"], row, inc["records"], inc["flagged"],
                       inc["peak"], inc["start"], inc["end"], reason))

    for i, k in enumerate(keys):
        inc = open_.get(k)
        if flags[i] and inc is None:
            if len(open_) >= max_keys:
                ek, e = open_.popitem(last=False)
                emit("resolved", ek, e, i, "evicted")
            inc = {"off": 10 * i, "records": 1, "flagged": 1, "quiet": 0, "peak": grades[i],
                   "start": float(i), "end": float(i)}
            open_[k] = inc
            emit("opened", k, inc, i)
        elif flags[i] and inc is not None:
            inc.update(records=inc["records"] + 1, flagged=inc["flagged"] + 1, quiet=0,
                       peak=max(inc["peak"], grades[i]), end=float(i))
            if inc["flagged"] % every == 0:
                emit("updated", k, inc, i)
        elif inc is not None:
            inc.update(records=inc["records"] + 1, quiet=inc["quiet"] + 1)
        belong.append(-1 if inc is None else inc["off"])
        if inc is not None:
            open_.move_to_end(k)
            if inc["quiet"] >= quiet:
                del open_[k]
                emit("resolved", k, inc, i, "quiet")
    return belong, events


def as_tuple(u: IncidentUpdate) -> tuple[Any, ...]:
    return (u.kind, u.key, u.opened_offset, u.row, u.records, u.flagged, u.peak_grade,
            u.start_time, u.end_time, u.reason)


def call(tr: IncidentTracker, keys: list[str], flags: np.ndarray, grades: np.ndarray,
         a: int, b: int) -> tuple[np.ndarray, list[IncidentUpdate]]:
    belong, ups = tr.update(keys[a:b], flags[a:b], grades[a:b], np.arange(a, b, dtype=float),
                            10 * np.arange(a, b))
    return belong, [dataclasses.replace(u, row=u.row + a) for u in ups]


rows = st.lists(st.tuples(st.sampled_from("abcd"), st.booleans(), st.floats(0.0, 1.0)),
                min_size=1, max_size=70)


@settings(max_examples=200, deadline=None)
@given(rows=rows, cuts=st.lists(st.integers(0, 70), max_size=6), quiet=st.integers(1, 4),
       every=st.integers(1, 3), max_keys=st.integers(1, 3))
def test_one_call_equals_splits_equals_row_by_row_equals_the_rules(
    rows: list[tuple[str, bool, float]], cuts: list[int], quiet: int, every: int, max_keys: int
) -> None:
    keys = [r[0] for r in rows]
    flags = np.array([r[1] for r in rows])
    grades = np.array([r[2] for r in rows])
    n = len(rows)
    want_belong, want_events = oracle(keys, flags.tolist(), grades.tolist(), quiet, every,
                                      max_keys)
    bounds = [0, *sorted(c for c in cuts if c < n), n]
    results = []
    for plan in ([(0, n)], list(pairwise(bounds)), [(i, i + 1) for i in range(n)]):
        tr = IncidentTracker(quiet_records=quiet, update_every=every, max_keys=max_keys)
        parts = [call(tr, keys, flags, grades, a, b) for a, b in plan]
        belong = np.concatenate([p[0] for p in parts])
        events = [as_tuple(u) for p in parts for u in p[1]]
        assert belong.tolist() == want_belong
        assert events == want_events
        results.append(tr.get_state())
    for state in results[1:]:
        assert state["keys"] == results[0]["keys"]
        np.testing.assert_array_equal(state["counts"], results[0]["counts"])


@settings(max_examples=100, deadline=None)
@given(rows=rows, cut=st.integers(0, 70))
def test_snapshot_mid_incident_then_continue_equals_an_uninterrupted_run(
    rows: list[tuple[str, bool, float]], cut: int
) -> None:
    keys = [r[0] for r in rows]
    flags = np.array([r[1] for r in rows])
    grades = np.array([r[2] for r in rows])
    n, cut = len(rows), min(cut, len(rows))
    whole = IncidentTracker(quiet_records=3, update_every=2, max_keys=2)
    want = call(whole, keys, flags, grades, 0, n)
    first = IncidentTracker(quiet_records=3, update_every=2, max_keys=2)
    a = call(first, keys, flags, grades, 0, cut)
    second = IncidentTracker(quiet_records=3, update_every=2, max_keys=2)
    second.set_state(first.get_state())
    b = call(second, keys, flags, grades, cut, n)
    assert np.concatenate([a[0], b[0]]).tolist() == want[0].tolist()
    assert a[1] + b[1] == want[1]
