"""DriftMonitor: detects level shifts, stays quiet on stationary input, exact state replay."""

from __future__ import annotations

import numpy as np
import pytest

from stream_ae.detect.drift import DriftMonitor

PARAMS = {"adwin": 0.002, "page_hinkley": 0.005, "kswin": 0.001}


def shifted(seed: int = 0, n: int = 1500, jump: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0, 1, n), rng.normal(jump, 1, n)])


@pytest.mark.parametrize("detector", sorted(PARAMS))
def test_detects_an_upward_shift_soon_after_it(detector: str) -> None:
    m = DriftMonitor(detector, delta=PARAMS[detector], history=1000)  # type: ignore[arg-type]
    hits = [h for h in m.update_many(shifted()) if h.index >= 1500]
    assert hits and hits[0].index < 1700
    assert hits[0].level_after > hits[0].level_before


def test_adwin_is_quiet_on_a_stationary_stream() -> None:
    m = DriftMonitor("adwin", delta=0.002, history=1000)
    assert m.update_many(np.random.default_rng(1).normal(0, 1, 5000)) == []


@pytest.mark.parametrize("detector", sorted(PARAMS))
def test_state_round_trip_gives_identical_detections_across_rebases(detector: str) -> None:
    values = np.concatenate([shifted(2), shifted(3)[::-1]])
    cut = 2345
    a = DriftMonitor(detector, delta=PARAMS[detector], history=300)  # type: ignore[arg-type]
    want = a.update_many(values)
    b = DriftMonitor(detector, delta=PARAMS[detector], history=300)  # type: ignore[arg-type]
    first = b.update_many(values[:cut])
    state = b.get_state()
    assert state["since"].size <= 600
    c = DriftMonitor(detector, delta=PARAMS[detector], history=300)  # type: ignore[arg-type]
    c.set_state(state)
    rest = [h.index + cut for h in c.update_many(values[cut:])]
    assert [h.index for h in want] == [h.index for h in first] + rest
    assert len(want) >= 2


def test_chunking_does_not_change_detections() -> None:
    values = shifted(4)
    whole = DriftMonitor("adwin", history=200).update_many(values)
    m = DriftMonitor("adwin", history=200)
    chunked: list[int] = []
    for start in range(0, values.size, 77):
        chunked += [h.index + start for h in m.update_many(values[start : start + 77])]
    assert [h.index for h in whole] == chunked


def test_fresh_monitor_state_is_empty() -> None:
    m = DriftMonitor()
    assert m.get_state() == {"since": None}
    m.set_state({"since": None})
    assert m.update_many(np.zeros(10)) == []


def test_adwin_fast_path_matches_the_river_wrapper() -> None:
    from river import drift

    values = shifted(5)
    plain = drift.ADWIN(delta=0.002)  # type: ignore[no-untyped-call]
    first = -1
    for i, v in enumerate(values.tolist()):
        plain.update(v)
        if plain.drift_detected:
            first = i
            break
    hit, used = DriftMonitor("adwin", delta=0.002, history=10_000).update_until(values)
    assert hit is not None and (hit.index, used) == (first, first + 1)
    assert hit.level_after == pytest.approx(plain.estimation)


def test_adwin_does_not_import_river_drift_or_scikit_learn() -> None:
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "from stream_ae.detect.drift import DriftMonitor\n"
            "DriftMonitor('adwin').update_many(np.zeros(100))\n"
            "print(sorted(m for m in ('river.drift', 'sklearn', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_min_rise_marks_falls_and_small_rises_not_significant() -> None:
    rng = np.random.default_rng(5)
    down = np.concatenate([rng.normal(3.0, 0.2, 1500), rng.normal(0.0, 0.2, 1500)])
    for values in (down, down[::-1].copy()):
        plain = DriftMonitor("adwin", delta=0.002, history=1000).update_many(values)
        gated = DriftMonitor("adwin", delta=0.002, history=1000,
                             min_rise=np.log(2.0)).update_many(values)
        # the same detections (each restarts the detector); only the mark differs
        assert [h.index for h in plain] == [h.index for h in gated] and plain
        assert all(h.significant for h in plain)
        assert all(h.significant == (h.level_after - h.level_before >= np.log(2.0))
                   for h in gated)
    fall = DriftMonitor("adwin", delta=0.002, history=1000, min_rise=np.log(2.0))
    hits = [h for h in fall.update_many(down) if h.index >= 1500]
    assert hits and not any(h.significant for h in hits)
