"""DriftMonitor: a river drift detector on the score stream, with plain-data state.

river's ADWIN keeps its state in a Rust object that cannot be read out or
pickled. So the monitor keeps, as plain data, every value fed to its current
detector instance and rebuilds the detector by replaying them: state =
(detector parameters, values since the detector was created). To keep that
bounded the monitor *rebases* deterministically: when ``2 * history`` values
have been fed it creates a fresh detector and replays the last ``history``
values into it (silently); after a detection it starts a fresh detector from
the next value. The detector therefore sees a window of between ``history``
and ``2 * history`` recent values, and a restored monitor is bit-identical to
the one that was snapshotted.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
DetectorName = Literal["adwin", "page_hinkley", "kswin"]


@dataclass(frozen=True, slots=True)
class Detection:
    """One detection: position in the values given to ``update_many``, levels around it.

    ``level_before`` is the mean of the values the detector dropped from its window,
    ``level_after`` the detector's estimate after the change (both in fed units).

    Examples
    --------
    >>> Detection(index=3, level_before=0.0, level_after=1.0).index
    3
    """

    index: int
    level_before: float
    level_after: float
    significant: bool = True  # the level rose by at least the monitor's ``min_rise``


class DriftMonitor:
    """Detects changes in the level of a value stream with a river drift detector.

    Parameters
    ----------
    detector
        ``"adwin"`` (river ``drift.ADWIN``), ``"page_hinkley"`` or ``"kswin"``.
    delta
        ADWIN's ``delta``; for Page-Hinkley the ``delta`` magnitude; for KSWIN its ``alpha``.
    history
        Bound on the replayed values (see the module docstring).
    seed
        Seed of KSWIN's sampler.
    min_rise
        A detection whose level rose by less than this (a fall included) is returned with
        ``significant=False``: the detector restarts there, but it is no event to report
        (on log errors, ``log(2)`` keeps the rises of the error level by at least 2x; the
        model improving, a daily cycle or the end of an anomaly are not). Default: every
        detection is significant.

    Examples
    --------
    >>> import numpy as np
    >>> m = DriftMonitor("adwin", delta=0.002)
    >>> values = np.concatenate([np.zeros(500), np.full(500, 5.0)])
    >>> hits = m.update_many(values)
    >>> len(hits) >= 1 and 500 <= hits[0].index < 600
    True
    >>> hits[0].level_before < hits[0].level_after
    True
    """

    def __init__(
        self,
        detector: DetectorName = "adwin",
        delta: float = 0.002,
        history: int = 4096,
        seed: int = 0,
        min_rise: float = -math.inf,
    ) -> None:
        self.detector = detector
        self.min_rise = min_rise
        self.delta = delta
        self.history = history
        self.seed = seed
        self._det: Any = None
        self._since: F64 = np.zeros(0, dtype=np.float64)
        self._n = 0

    def _fresh(self) -> Any:
        if self.detector == "adwin":
            return _adwin(self.delta)
        # imported on first use: ``river.drift`` pulls in river.datasets and scikit-learn
        from river import drift

        if self.detector == "page_hinkley":
            return drift.PageHinkley(delta=self.delta)
        return drift.KSWIN(alpha=self.delta, seed=self.seed)

    def _replay(self, values: F64) -> None:
        self._det = self._fresh()
        update = self._update_fn()
        for v in values.tolist():
            update(v)
        self._since = np.zeros(2 * self.history, dtype=np.float64)
        self._since[: values.size] = values
        self._n = int(values.size)

    def update_many(self, values: npt.ArrayLike) -> list[Detection]:
        """Feed values in stream order; return the detections among them."""
        vals = np.asarray(values, dtype=np.float64).ravel()
        hits: list[Detection] = []
        start = 0
        while start < vals.size:
            hit, used = self.update_until(vals[start:])
            if hit is not None:
                hits.append(Detection(start + hit.index, hit.level_before, hit.level_after,
                                      hit.significant))
            start += used
        return hits

    def update_until(self, values: npt.ArrayLike) -> tuple[Detection | None, int]:
        """Feed values up to and including the first detection; return it and the count fed.

        >>> m = DriftMonitor(history=100)
        >>> m.update_until([0.0] * 10)
        (None, 10)
        """
        vals = np.asarray(values, dtype=np.float64).ravel()
        if self._det is None:
            self._replay(vals[:0])
        pos = 0
        while pos < vals.size:
            if self._n == self._since.size:
                self._replay(self._since[self.history :].copy())
            block = vals[pos : pos + self._since.size - self._n]
            self._since[self._n : self._n + block.size] = block
            update = self._update_fn()
            for i, v in enumerate(block.tolist()):
                if update(v):
                    self._n += i + 1
                    hit = self._detection(pos + i)
                    self._replay(vals[:0])
                    return hit, pos + i + 1
            self._n += block.size
            pos += block.size
        return None, int(vals.size)

    def _update_fn(self) -> Callable[[float], bool]:
        """``update(v) -> detected``. For ADWIN this is river's Rust window itself (see
        :func:`_adwin`); the other detectors go through river's Python wrapper."""
        if self.detector == "adwin":
            return self._det.update  # type: ignore[no-any-return]
        det = self._det

        def update(v: float) -> bool:
            det.update(v)
            return bool(det.drift_detected)

        return update

    def _detection(self, index: int) -> Detection:
        seen = self._since[: self._n]
        if self.detector == "adwin":
            width = int(self._det.get_width())
            level_after = float(self._det.get_total()) / width if width else 0.0
        else:
            after = getattr(self._det, "estimation", None)
            level_after = float(after) if after is not None else float(seen[-32:].mean())
            width = int(getattr(self._det, "width", 32))
        before = float(seen[: max(1, self._n - width)].mean())
        return Detection(index, before, level_after, bool(level_after - before >= self.min_rise))

    def get_state(self) -> dict[str, Any]:
        """Plain data: the values fed to the current detector instance."""
        since = self._since[: self._n].copy() if self._det is not None else None
        return {"since": since}

    def set_state(self, state: dict[str, Any]) -> None:
        """Rebuild the detector by replaying the stored values."""
        since = state["since"]
        if since is None:
            self._det, self._n = None, 0
            return
        self._replay(np.asarray(since, dtype=np.float64))


# river.drift.ADWIN's defaults; the monitor replaces its detector after every detection, so
# the wrapper's only behaviour (a reset at the next update after a detection) is not needed
_ADWIN_DEFAULTS = {"clock": 32, "max_buckets": 5, "min_window_length": 5, "grace_period": 10}


def _adwin(delta: float) -> Any:
    """river's ADWIN window (the Rust ``AdaptiveWindowing`` that ``river.drift.ADWIN`` wraps).

    Imported from ``river._river_rust`` directly: ``import river.drift`` costs about 1.5 s
    (it imports ``river.drift.datasets``, hence ``river.datasets`` and scikit-learn), the Rust
    module a few milliseconds. Falls back to the public class if river moves it.
    """
    try:
        from river._river_rust.drift import AdaptiveWindowing
    except ImportError:  # pragma: no cover - another river layout
        from river.drift import ADWIN

        return ADWIN(delta=delta, **_ADWIN_DEFAULTS)._helper  # type: ignore[no-untyped-call]
    return AdaptiveWindowing(delta=delta, **_ADWIN_DEFAULTS)
