"""Rolling thresholds on the anomaly-score stream.

The engine feeds scores in blocks (at its learning boundaries) and reads
``value`` in between, so the threshold is a pure function of the scores fed so
far, whatever their batching.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from stream_ae.windowing import ring_write

F64 = npt.NDArray[np.float64]


class RollingQuantileThreshold:
    """A threshold over the last ``window`` scores: a quantile, or mean + k * sd.

    ``value = max(floor, multiplier * statistic)`` where the statistic is
    ``numpy.quantile(tail, q)`` (mode ``"quantile"``, linear interpolation) or
    ``mean(tail) + k * std(tail)`` (mode ``"mean_std"``), ``tail`` being the last
    ``window`` scores given to :meth:`update`. The statistic is recomputed once
    per ``update`` call (vectorised, a ring buffer + ``numpy.quantile``), not
    per score. Until ``min_count`` scores have been seen (default
    ``min(window, 100)``) ``is_warm`` is False and ``value`` is NaN.

    Parameters
    ----------
    q
        Quantile in (0, 1) for mode ``"quantile"``.
    window
        Number of most recent scores the statistic is taken over.
    multiplier
        Factor applied to the statistic.
    floor
        Lower bound of the threshold.
    mode
        ``"quantile"`` or ``"mean_std"``.
    k
        Standard deviations above the mean in mode ``"mean_std"``.
    min_count
        Scores needed before the threshold is warm.

    Examples
    --------
    >>> import numpy as np
    >>> t = RollingQuantileThreshold(q=0.5, window=4, min_count=2)
    >>> t.is_warm
    False
    >>> t.update(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    >>> (t.is_warm, t.value)  # median of the last 4: [2, 3, 4, 5]
    (True, 3.5)
    >>> t.quantile(1.0)
    5.0
    """

    def __init__(
        self,
        q: float = 0.995,
        window: int = 10_000,
        multiplier: float = 1.0,
        floor: float = 0.0,
        mode: Literal["quantile", "mean_std"] = "quantile",
        k: float = 3.0,
        min_count: int | None = None,
    ) -> None:
        self.q = q
        self.window = window
        self.multiplier = multiplier
        self.floor = floor
        self.mode = mode
        self.k = k
        self.min_count = min_count
        self._buf: F64 = np.zeros(0, dtype=np.float64)
        self._pos = 0
        self._count = 0
        self._value = math.nan
        self._stat_memo = math.nan  # the statistic of the window as it is (NaN: not known)
        self._primed = False

    @property
    def count(self) -> int:
        """Scores in the window (at most ``window``)."""
        return self._count

    @property
    def is_warm(self) -> bool:
        need = min(self.window, 100) if self.min_count is None else min(self.min_count, self.window)
        return self._count >= max(1, need) or (self._primed and self._count > 0)

    @property
    def value(self) -> float:
        """The current threshold; NaN while not warm."""
        return self._value if self.is_warm else math.nan

    @property
    def statistic(self) -> float:
        """The quantile (or mean + k * sd) of the window, before multiplier and floor; NaN
        when empty.

        >>> t = RollingQuantileThreshold(q=0.5, window=4, multiplier=2.0, min_count=1)
        >>> t.update(np.array([1.0, 3.0]))
        >>> (t.statistic, t.value)
        (2.0, 4.0)
        """
        if self._count == 0:
            return math.nan
        if math.isnan(self._stat_memo):
            self._stat_memo = self._stat(self._buf[: self._count])
        return self._stat_memo

    def tail(self) -> F64:
        """The scores in the window, oldest first (a copy)."""
        if self._count < self.window:
            return self._buf[: self._count].copy()
        return np.concatenate([self._buf[self._pos :], self._buf[: self._pos]])

    def quantile(self, p: float) -> float:
        """``numpy.quantile`` of the window at ``p``; NaN when empty."""
        if self._count == 0:
            return math.nan
        return float(np.quantile(self._buf[: self._count], p))

    def update(self, scores: npt.ArrayLike) -> None:
        """Append scores (in stream order) and recompute the threshold."""
        s = np.asarray(scores, dtype=np.float64).ravel()
        if s.size == 0:
            return
        if self._buf.size != self.window:
            self._buf = np.zeros(self.window, dtype=np.float64)
        s = s[-self.window :]
        ring_write(self._buf, self._pos, s)
        self._pos = (self._pos + s.size) % self.window
        self._count = min(self.window, self._count + s.size)
        self._value = self._compute()

    def prime(self, scores: npt.ArrayLike) -> None:
        """Start from a calibration sample: warm at once, however few scores it has.

        >>> t = RollingQuantileThreshold(q=0.5, window=100)
        >>> t.prime([1.0, 3.0])
        >>> (t.is_warm, t.value)
        (True, 2.0)
        """
        self.reset()
        self.update(scores)
        self._primed = True

    def refresh(self) -> None:
        """Recompute the threshold from the window under the current settings (a restored
        threshold whose decision settings changed)."""
        if self._count:
            self._value = self._compute()

    def reset(self) -> None:
        """Forget every score (the threshold is cold again)."""
        self._primed = False
        self._pos = 0
        self._count = 0
        self._value = math.nan
        self._stat_memo = math.nan

    def _stat(self, live: F64) -> float:
        if self.mode == "quantile":
            return float(np.quantile(live, self.q))
        return float(live.mean() + self.k * live.std())

    def _compute(self) -> float:
        self._stat_memo = self._stat(self._buf[: self._count])
        return max(self.floor, self.multiplier * self._stat_memo)

    def get_state(self) -> dict[str, Any]:
        """Plain-data state: the ring buffer as stored (so sums keep their order)."""
        return {"buf": self._buf[: self._count].copy(), "pos": self._pos, "value": self._value,
                "primed": self._primed}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_state` returned."""
        buf = np.asarray(state["buf"], dtype=np.float64)
        self._buf = np.zeros(self.window, dtype=np.float64)
        self._buf[: buf.size] = buf
        self._count = int(buf.size)
        self._pos = int(state["pos"])
        self._value = float(state["value"])
        self._stat_memo = math.nan
        self._primed = bool(state["primed"])
