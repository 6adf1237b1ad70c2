"""Temporal evidence per key: a one-sided CUSUM on the surprise ``-ln p``.

Under the null (a calibrated p-value, uniform on (0, 1)) the surprise ``x = -ln p``
is Exp(1). Each key keeps ``S_t = max(0, S_{t-1} + x_t - k)``: a row adds
evidence only when ``p < e^-k``, and a run of moderately surprising rows builds
up evidence that no single row carries. :func:`threshold_for_rate` gives the
level ``h`` whose up-crossings happen at a chosen per-record rate under the null.

Why ``k = 2``: the CUSUM is optimal (Lorden, Moustakides) for a change from
Exp(1) to Exp with mean ``theta`` when ``k = theta ln(theta) / (theta - 1)``;
``k = 2`` is that optimum for ``theta = 5``, surprises of mean 5 (typical
``p ~ e^-5 ~ 0.007``): a sustained, moderate anomaly that no single row flags.
Larger ``k`` (3: ``theta ~ 10``) leaves the detection of moderate shifts to
single extreme rows; smaller ``k`` makes ``S`` wander under the null (positive
a fraction ``1 - gamma`` of the time, 20 % for ``k = 2``).

Each key also keeps the peak of its current *run* (the rows since ``S`` was last at or below
a chosen ``level``, at or below the alarm level): the fall from that peak, ``peak - S``, is
itself a CUSUM, that of a return to normal (``k - x`` reflected at the peak), so a detector
of the end of an excursion can read it without a second pass
(:meth:`EvidenceAccumulator.update_run`).

The sums are kept in fixed point (integer multiples of ``2**-20``): integer
addition is associative, so ``S`` is bit-identical however the rows are split
into calls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import special

from stream_ae.detect._keys import KeyColumns, encode, last_rows, n_distinct, safe_end, segments

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

_SCALE = float(2**20)
_P_MIN = 1e-300
_CAP_INF = 2**62  # beyond any sum of 2e6 surprises of at most 691 (in 2**-20 units)


def _gamma(k: float) -> float:
    """The positive root of ``1 - g = exp(-g k)`` (the Lundberg exponent of ``Exp(1) - k``):
    ``g = 1 + W(-k e^-k) / k`` with ``W`` Lambert's principal branch (``-k`` is the other
    branch's root, ``g = 0``), from ``scipy.special`` (``scipy.optimize`` costs ~0.1-0.3 s
    to import for one root).

    >>> g = _gamma(2.3)
    >>> round(g, 12), abs(1.0 - g - math.exp(-g * 2.3)) < 1e-15
    (0.862423278019, True)
    """
    if not k > 1.0:
        raise ValueError(f"k must exceed 1 (the null mean surprise), got {k}")
    return 1.0 + float(special.lambertw(-k * math.exp(-k)).real) / k


def threshold_for_rate(k: float, rate: float) -> float:
    """The level ``h`` that the CUSUM up-crosses (``S_{t-1} <= h < S_t``) at ``rate`` per record
    under the null (iid Exp(1) surprises).

    Derivation: with ``Y = X - k``, ``X ~ Exp(1)``, the stationary ``S`` is the maximum of a
    random walk whose ladder heights are Exp(1) (memorylessness), so ``P(S > s) = (1 - g)
    e^{-g s}`` with ``g`` the root of ``E e^{gY} = 1``, i.e. ``1 - g = e^{-gk}``. An
    up-crossing needs ``X > h + k - S_{t-1}``, so the rate is ``E[e^{-(h+k-S)}; S <= h] =
    g e^{-k} e^{-g h}``, exactly, and ``h = (ln g - k - ln rate) / g``.

    Parameters
    ----------
    k
        The CUSUM reference value (> 1).
    rate
        Up-crossings per record, in ``(0, g e^-k]`` (the rate of ``h = 0``).

    Examples
    --------
    >>> round(threshold_for_rate(2.0, 1e-5), 3)
    11.654
    >>> round(threshold_for_rate(3.0, 1e-5), 3)
    8.986
    """
    g = _gamma(k)
    h = (math.log(g) - k - math.log(rate)) / g
    if not (rate > 0.0 and h >= 0.0):
        raise ValueError(f"rate must be in (0, {g * math.exp(-k):.4g}] for k={k}, got {rate}")
    return h


class EvidenceAccumulator:
    """One-sided CUSUM of ``-ln p - k`` per key, vectorised over a batch.

    ``update(keys, p)`` advances each key row by row
    (``S_t = min(cap, max(0, S_{t-1} - ln p_t - k))``) and returns ``S_t`` per row; NaN ``p``
    leaves ``S`` as it is, ``p`` is clipped to ``[1e-300, 1]``. Per key the batch is one
    cumulative sum, ``S_t = C_t - min(-S_0, min_{j<=t} C_j)`` (Lindley), between visits of
    the cap. Keys are kept in an LRU of ``max_keys`` (least recently
    updated evicted first; an evicted key restarts at 0).

    Parameters
    ----------
    k
        Reference value: rows with ``p >= e^-k`` only decay the evidence.
    cap
        Ceiling of ``S`` (``inf``: none). Without one, a burst of extreme rows (``-ln p`` up
        to 690 each) leaves ``S`` so high that it takes thousands of normal rows (``-1`` a
        row on average for ``k = 2``) to come back under the threshold; with 30 (2.6 times
        the ``h`` of 1e-5 for ``k = 2``) about 20. The ceiling changes the null up-crossing
        rate of an ``h`` below it by ``O(e^{-gamma (cap - h)})`` only.
    max_keys
        Keys whose ``S`` is kept.
    level
        The level the runs of :meth:`update_run` are counted above: a run restarts at every
        row at or below it (``inf``: no runs).

    Examples
    --------
    >>> import numpy as np
    >>> ev = EvidenceAccumulator(k=2.0)
    >>> p = np.exp(-np.array([5.0, 1.0, 4.0, 0.5]))  # surprises 5, 1, 4, 0.5
    >>> ev.update(["a", "a", "b", "a"], p).round(6).tolist()
    [3.0, 2.0, 2.0, 0.5]
    >>> ev.value("a"), ev.value("c")
    (0.5, 0.0)
    >>> run = EvidenceAccumulator(k=2.0, level=4.0)  # surprises 9, 3, 1, 6, 0: S 7, 8, 7, 11, 9
    >>> s, fall = run.update_run(["a"] * 5, np.exp(-np.array([9.0, 3.0, 1.0, 6.0, 0.0])))
    >>> s.round(6).tolist(), fall.round(6).tolist()
    ([7.0, 8.0, 7.0, 11.0, 9.0], [0.0, 0.0, 1.0, 0.0, 2.0])
    """

    def __init__(self, k: float = 2.0, cap: float = 30.0, max_keys: int = 100_000,
                 level: float = math.inf) -> None:
        self.k = k
        self.cap = cap
        self.max_keys = max_keys
        self.level = level
        self._s = KeyColumns(2, max_keys, np.int64)  # S and its run's peak, in 2**-20 units

    def __len__(self) -> int:
        return len(self._s)

    def value(self, key: str) -> float:
        """The key's current ``S`` (0 for a key not held)."""
        return int(self._s.rows([key])[0, 0]) / _SCALE

    def update(self, keys: Sequence[str], p: npt.ArrayLike) -> F64:
        """Advance each row's key by its surprise; ``S_t`` per row."""
        return self.update_run(keys, p)[0]

    def update_run(self, keys: Sequence[str], p: npt.ArrayLike) -> tuple[F64, F64]:
        """As :meth:`update`; also each row's fall from the peak of its key's run above
        ``level``."""
        pv = np.asarray(p, dtype=np.float64).ravel()
        if pv.size != len(keys):
            raise ValueError(f"{len(keys)} keys but {pv.size} p-values")
        nan = np.isnan(pv)
        xq = np.rint(-np.log(np.clip(np.where(nan, 1.0, pv), _P_MIN, 1.0)) * _SCALE)
        d = np.where(nan, 0, xq.astype(np.int64) - round(self.k * _SCALE)).astype(np.int64)
        out = np.empty((pv.size, 2), dtype=np.int64)
        start = 0
        n = len(keys)
        while start < n:
            end = n
            if len(self._s) + n_distinct(keys) > self.max_keys:
                end = safe_end(keys, start, self._s, len(self._s), self.max_keys)
            part = keys if (start, end) == (0, n) else keys[start:end]
            out[start:end] = self._advance(part, d[start:end])
            start = end
        return out[:, 0] / _SCALE, (out[:, 1] - out[:, 0]) / _SCALE

    def _advance(self, keys: Sequence[str], d: I64) -> npt.NDArray[np.int64]:
        """Rows whose new keys fit without an eviction: all keys at once, then evict.
        Per row ``S`` and its run's peak (``S`` itself on rows at or below the level)."""
        ids, uniq = encode(keys)
        before = self._s.rows(uniq)
        seg = segments(ids, len(uniq))
        cap = _CAP_INF if math.isinf(self.cap) else round(self.cap * _SCALE)
        s_sorted = _reflected(d[seg.order], seg.start, seg.count, np.minimum(before[:, 0], cap),
                              cap)
        both = np.stack([s_sorted, s_sorted], axis=1)
        if not math.isinf(self.level):
            both[:, 1] = _run_peaks(s_sorted, seg.start, seg.count, before[:, 1],
                                    round(self.level * _SCALE))
        out = np.empty_like(both)
        out[seg.order] = both
        final = both[seg.start + seg.count - 1]
        lru = np.argsort(last_rows(ids, len(uniq)), kind="stable")
        self._s.put([uniq[i] for i in lru.tolist()], final[lru])
        return out

    def reset(self, key: str) -> None:
        """Forget the key's evidence (it restarts at 0)."""
        self._s.pop(key)

    def get_state(self) -> dict[str, Any]:
        """Plain data: keys in LRU order (oldest first), ``S`` and its run's peak in units of
        ``2**-20``."""
        state = self._s.get_state()
        return {"keys": state["keys"], "s": state["rows"][:, 0].copy(),
                "peak": state["rows"][:, 1].copy()}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_state` returned (a state without ``peak``, from before the
        run peaks, starts each key's run at its current ``S``)."""
        self._s = KeyColumns(2, self.max_keys, np.int64)
        rows = np.stack([np.asarray(state["s"], np.int64),
                         np.asarray(state.get("peak", state["s"]), np.int64)],
                        axis=1).reshape(-1, 2)
        self._s.set_state({"keys": state["keys"], "rows": rows})


def _run_peaks(s: I64, start: I64, count: I64, peak0: I64, level: int) -> I64:
    """Running maximum of ``s`` (rows sorted by segment) over the runs above ``level``: a run
    restarts at every row at or below it (whose peak is ``s`` itself); a segment's first run
    goes on from ``peak0`` when its first row is above the level."""
    above = s > level
    new = ~above
    new[start] = True
    gid = np.cumsum(new) - 1
    v = np.where(above, s, 0)
    peak = -_segment_cummin(-v, gid, np.flatnonzero(new))
    sid = np.repeat(np.arange(start.size), count)
    first = (gid == gid[start][sid]) & above[start][sid]
    out: I64 = np.where(above, np.where(first, np.maximum(peak, peak0[sid]), peak), s)
    return out


def _lindley(d: I64, first: I64, sid: I64, s0: I64) -> I64:
    """``S_t = max(0, S_{t-1} + d_t)`` on consecutive segments starting at ``first`` (``sid``:
    each row's segment), by the identity ``S_t = C_t - min(-S_0, min_{j<=t} C_j)``."""
    c = np.cumsum(d)
    c -= (c[first] - d[first])[sid]  # cumulative sum within each segment
    out: I64 = c - np.minimum(-s0[sid], _segment_cummin(c, sid, first))
    return out


def _reflected(d: I64, start: I64, count: I64, s0: I64, cap: int) -> I64:
    """``S_t = min(cap, max(0, S_{t-1} + d_t))`` per segment (rows sorted by segment), exact.

    Between two visits of a boundary the walk is reflected at one side only: from 0 up to
    ``cap`` it is Lindley's ``S``; from ``cap`` down to 0 it is ``cap - D`` with ``D`` Lindley's
    process of ``-d``. Each pass runs every unfinished segment in its regime to its first
    crossing of the other boundary, so the passes number the regime switches (two per
    excursion from 0 to the cap and back: rare), not the rows.
    """
    out = np.empty_like(d)
    b, end, prev = start.copy(), start + count, s0.copy()  # prev: S (low regime) or cap - S
    upper = np.zeros(start.size, dtype=np.bool_)
    live = np.flatnonzero(b < end)
    while live.size:
        lengths = end[live] - b[live]
        first = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        sid = np.repeat(np.arange(live.size), lengths)
        rank = np.arange(sid.size) - first[sid]
        idx = b[live][sid] + rank
        up = upper[live]
        v = _lindley(np.where(up[sid], -d[idx], d[idx]), first, sid, prev[live])
        stop = np.minimum.reduceat(np.where(v > cap, rank, lengths[sid]), first)
        keep = rank < stop[sid]
        out[idx[keep]] = np.where(up[sid], cap - v, v)[keep]
        hit = stop < lengths
        out[b[live][hit] + stop[hit]] = np.where(up[hit], 0, cap)  # where the regime switches
        b[live] = np.where(hit, b[live] + stop + 1, end[live])
        prev[live[hit]] = 0
        upper[live[hit]] = ~up[hit]
        live = live[b[live] < end[live]]
    return out


def _segment_cummin(c: I64, kid: I64, start: I64) -> I64:
    """Running minimum of ``c`` restarted at each key's segment (exact, integers).

    Each segment is shifted below every earlier one (by the cumulative sum of the segments'
    ranges), so one global ``minimum.accumulate`` cannot carry a minimum across segments.
    """
    lo = np.minimum.reduceat(c, start)
    hi = np.maximum.reduceat(c, start)
    shift = (lo + np.cumsum(hi - lo + 1))[kid]
    out: I64 = np.minimum.accumulate(c - shift) + shift
    return out
