"""Scores to tail probabilities: per-key levels, an empirical body and a GPD tail (SPOT).

A score is a positive reconstruction error; the calibrator works on ``z = log(score)``
normalised per key, ``u = z - level_key``, and answers ``P(S > s)`` under the recent
normal scores: the empirical survival of the pooled window of ``u`` below a threshold
``t``, a generalised Pareto tail fitted to the excesses above it (peaks over threshold,
Siffer et al., "Anomaly detection in streams with extreme value theory", KDD 2017).

Why ``tail_fraction = 0.02``: ``t`` is the 98 % quantile of the window, so the 20,000
values of the default window leave 400 excesses for the fit. The GPD is the limit law of
excesses over a *high* threshold (Pickands-Balkema-de Haan): a lower ``t`` (5 %) biases
``xi`` on light tails such as the log of chi-square scores, a higher one (1 %, 200
excesses) doubles the variance of ``xi`` that the extrapolation to ``p = 1e-5`` (a factor
500 beyond ``t``) multiplies. 2 % is the SPOT paper's choice too.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import special

from stream_ae.detect._keys import BatchKeys, KeyColumns, encode, last_rows, segments
from stream_ae.windowing import ring_write

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

P_MIN = 1e-300
_NO_TAIL = "empirical"


def grade(p: npt.ArrayLike, grade_decades: float = 10.0) -> F64:
    """Severity in [0, 1] from a tail probability: ``clip(-log10(p) / grade_decades, 0, 1)``.

    ``p = 1e-10`` is grade 1 and ``p = 1e-5`` grade 0.5 with the default 10 decades; NaN
    stays NaN.

    >>> grade([1.0, 1e-5, 1e-10, 1e-30]).tolist()
    [0.0, 0.5, 1.0, 1.0]
    """
    with np.errstate(divide="ignore"):
        g = -np.log10(np.asarray(p, dtype=np.float64)) / grade_decades
    out: F64 = np.clip(g, 0.0, 1.0) + 0.0  # + 0.0: no -0.0 for p = 1
    return out


class TailCalibrator:
    """Tail probability of a reconstruction error under the recent normal errors of its key.

    ``update(keys, scores)`` (at the engine's boundaries, with the scores judged normal, in
    stream order) normalises each score by the level its key had *before* this update (the
    level ``survival`` used), pushes ``u = log(score) - level`` into a pooled ring window of
    ``window`` values, and moves the levels (a key that reaches ``key_min_count`` records in
    this update is normalised by its new level, the pooled level of the first update by
    itself): each key's is an exponentially weighted mean of its ``log(score)`` (half-life
    ``key_halflife`` of its records), used once the key has ``key_min_count`` records; the
    pooled level (half-life ``pool_halflife`` records of the stream) serves the others. The
    tail is refitted when ``refit_every`` values arrived since the last fit (and first when
    the window holds ``min_count``): ``t`` = the ``1 - tail_fraction`` quantile of the
    window, ``scipy.stats.genpareto.fit(u[u > t] - t, floc=0)`` (MLE, started from the
    previous fit), an exponential tail (``xi = 0``) if that fails, no parametric tail (the
    empirical one) with fewer than ``min_excesses`` excesses. A fitted ``xi < 0`` (a finite
    end point) is continued exponentially past the largest excess (see ``_Tail``).

    ``survival(keys, scores)`` has no side effects: ``(#{window > u} + 1) / (n + 1)`` for
    ``u <= t``, ``(#{window > t} + 1) / (n + 1) * genpareto.sf(u - t, xi, 0, sigma)`` above
    (continuous at ``t``), clipped to ``[1e-300, 1]``; NaN for a NaN score, 1.0 until warm.

    Parameters
    ----------
    window
        Normalised values in the pooled window.
    tail_fraction
        Fraction of the window above the tail threshold ``t``.
    refit_every
        New values between two tail fits (a GPD fit of 400 excesses costs about 11 ms of CPU,
        so 16,384 keeps the fits at 0.15 s per 200k normal records).
    min_count
        Values needed before ``is_warm`` (and the first fit): 5000 leave 100 excesses; with
        40 (2000 values) ``xi`` is too loose to read p-values of 1e-6 from.
    min_excesses
        Excesses needed for a parametric tail.
    key_halflife
        Half-life, in the key's records, of a key's level.
    key_min_count
        Records a key needs before its own level is used.
    pool_halflife
        Half-life, in records, of the pooled level.
    max_keys
        Keys whose level is kept (least recently updated evicted first).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> cal = TailCalibrator(window=5000, min_count=1000, refit_every=1000)
    >>> cal.update(["a"] * 4000 + ["b"] * 4000,
    ...            np.concatenate([rng.lognormal(0, 0.5, 4000), rng.lognormal(5, 0.5, 4000)]))
    >>> cal.is_warm, cal.tail_kind  # the log of a lognormal score has a light tail
    (True, 'exp')
    >>> p = cal.survival(["a", "b", "a"], [1.0, 150.0, 20.0])
    >>> bool(0.3 < p[0] < 0.7 and 0.3 < p[1] < 0.7 and p[2] < 1e-6)  # each key on its own scale
    True
    >>> s = cal.score_at(["a"], [1e-3])
    >>> bool(np.isclose(cal.survival(["a"], s)[0], 1e-3))
    True
    """

    def __init__(
        self,
        window: int = 20_000,
        tail_fraction: float = 0.02,
        refit_every: int = 16_384,
        min_count: int = 5000,
        min_excesses: int = 30,
        key_halflife: float = 500.0,
        key_min_count: int = 50,
        pool_halflife: float = 5000.0,
        max_keys: int = 100_000,
    ) -> None:
        self.window = window
        self.tail_fraction = tail_fraction
        self.refit_every = refit_every
        self.min_count = min_count
        self.min_excesses = min_excesses
        self.key_halflife = key_halflife
        self.key_min_count = key_min_count
        self.pool_halflife = pool_halflife
        self.max_keys = max_keys
        self._buf: F64 = np.zeros(0)
        self._pos = 0
        self._count = 0
        self._sorted: F64 = np.zeros(0)
        self._since_fit = 0
        self._fit = _Tail(_NO_TAIL, math.nan, math.nan, math.nan, math.nan)
        self._fitted = False
        self._fit_count = 0  # window size at the last fit
        self._pool = (0.0, 0.0)  # exponentially weighted sum of z and of weights
        self._keys = KeyColumns(3, max_keys)  # per key: weighted sums of z and weights, count
        self._memo: tuple[Sequence[str], F64] | None = None  # see ``levels``

    # ------------------------------------------------------------------ reading
    @property
    def is_warm(self) -> bool:
        """True once the window holds ``min_count`` values (``window`` if smaller)."""
        return self._count >= max(1, min(self.min_count, self.window))

    @property
    def tail_kind(self) -> str:
        """``"gpd"``, ``"exp"`` (the fallback) or ``"empirical"`` (no parametric tail)."""
        return self._fit.kind

    @property
    def tail_params(self) -> tuple[float, float, float]:
        """``(t, xi, sigma)`` of the last fit, on the normalised scale (NaN before it)."""
        return self._fit.t, self._fit.xi, self._fit.sigma

    def values(self) -> F64:
        """The normalised values in the window, ascending (a copy)."""
        return self._sorted.copy()

    def has_level(self, keys: Sequence[str]) -> npt.NDArray[np.bool_]:
        """Whether each key is normalised by its own level (``key_min_count`` records learned);
        the others are read on the pooled level, which can be far from theirs: rows of such a
        key are better learned from than flagged (else a loud new key never gets a level)."""
        ids, uniq = encode(keys)
        own: npt.NDArray[np.bool_] = self._keys.rows(uniq)[:, 2] >= max(1, self.key_min_count)
        return own[ids]

    def levels(self, keys: Sequence[str]) -> F64:
        """The level each key's ``log(score)`` is normalised by (no side effects). The
        levels of the last :class:`BatchKeys` asked for are kept until the levels change
        (``update``, ``reset_key``, ``set_state``; ``survival`` and ``score_at`` of one block
        ask twice)."""
        if self._memo is not None and self._memo[0] is keys:
            return self._memo[1]
        ids, uniq = encode(keys)
        lev = self._levels(uniq)[ids]
        if isinstance(keys, BatchKeys):
            lev.setflags(write=False)
            self._memo = (keys, lev)
        return lev

    def survival(self, keys: Sequence[str], scores: npt.ArrayLike) -> F64:
        """``P(S > score)`` under the key's recent normal scores; no side effects."""
        s = np.asarray(scores, dtype=np.float64).ravel()
        if not self.is_warm:
            return np.where(np.isnan(s), np.nan, 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.log(s) - self.levels(keys)
        n = self._sorted.size
        p = (n - np.searchsorted(self._sorted, u, side="right") + 1) / (n + 1.0)
        fit = self._fit
        if fit.kind != _NO_TAIL:
            above = u > fit.t
            if above.any():
                p[above] = self._frac_above(fit.t) * fit.sf(u[above] - fit.t)
        out = np.clip(p, P_MIN, 1.0)
        out[np.isnan(u)] = np.nan
        return out

    def score_at(self, keys: Sequence[str], p: npt.ArrayLike) -> F64:
        """The score whose survival is ``p`` for each key (the alert's threshold): on the GPD
        tail the exact inverse, in the empirical body the smallest window value whose
        survival is at most ``p``; ``inf`` where no score is that rare (or before warm-up).
        ``p`` is one rate per row, or one rate for all of them."""
        pv = np.asarray(p, dtype=np.float64)
        if pv.ndim == 0 and self.is_warm and not math.isnan(pv):
            # one rate for every row (the engine's thresholds): one inverse for all of them
            with np.errstate(over="ignore"):
                one: F64 = np.exp(self._u_at(pv.reshape(1))[0] + self.levels(keys))
            return one
        pv = np.broadcast_to(pv, (len(keys),)) if pv.ndim == 0 else pv.ravel()
        if not self.is_warm:
            return np.where(np.isnan(pv), np.nan, math.inf)
        with np.errstate(over="ignore"):
            out: F64 = np.exp(self._u_at(pv) + self.levels(keys))
        out[np.isnan(pv)] = np.nan
        return out

    def _u_at(self, pv: F64) -> F64:
        """The normalised value whose survival is ``pv`` (see :meth:`score_at`)."""
        n = self._sorted.size
        m = np.floor(pv * (n + 1.0) - 1.0 + 1e-9)  # values above allowed
        idx = np.clip(n - 1 - np.nan_to_num(m), 0, n - 1).astype(np.int64)
        u = np.where(m >= n, -math.inf, np.where(m < 0, math.inf, self._sorted[idx]))
        fit = self._fit
        if fit.kind != _NO_TAIL:
            frac = self._frac_above(fit.t)
            tail = pv < frac
            u[tail] = fit.t + fit.isf(pv[tail] / frac)
        return u

    def _frac_above(self, t: float) -> float:
        n = self._sorted.size
        return float(n - np.searchsorted(self._sorted, t, side="right") + 1) / (n + 1.0)

    def _levels(self, uniq: list[str]) -> F64:
        return self._level_of(self._keys.rows(uniq))

    def _level_of(self, rows: F64) -> F64:
        """Levels from per-key rows ``(m, w, n)``: ``m / w`` once ``n >= key_min_count``."""
        pm, pw = self._pool
        own = rows[:, 2] >= max(1, self.key_min_count)
        lev = np.full(rows.shape[0], pm / pw if pw > 0 else 0.0)
        lev[own] = rows[own, 0] / rows[own, 1]
        return lev

    # ------------------------------------------------------------------ learning
    def update(self, keys: Sequence[str], scores: npt.ArrayLike) -> None:
        """Learn from scores judged normal (stream order); non-positive and NaN ones skipped."""
        s = np.asarray(scores, dtype=np.float64).ravel()
        if s.size != len(keys):
            raise ValueError(f"{len(keys)} keys but {s.size} scores")
        self._memo = None  # the levels change
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.log(s)
        ok = np.flatnonzero(np.isfinite(z))
        if ok.size == 0:
            return
        z = z[ok]
        ids, uniq = encode([keys[i] for i in ok.tolist()] if ok.size < s.size else keys)
        before, fresh = self._keys.rows(uniq), self._pool[1] == 0.0
        lev_b = self._level_of(before)
        self._pool = _ewma(*self._pool, z, self.pool_halflife)
        after = self._update_keys(ids, uniq, z, before)
        # a key's own level once it has one (from this update's records when it got it now)
        own_b, own_a = (r[:, 2] >= max(1, self.key_min_count) for r in (before, after))
        lev = np.where(own_b, lev_b, np.where(own_a | fresh, self._level_of(after), lev_b))
        self._push(z - lev[ids])
        self._since_fit += z.size
        if self.is_warm and (not self._fitted or self._since_fit >= self.refit_every
                             or self._count >= 2 * self._fit_count):
            self._refit()

    def reset_key(self, key: str, scores: npt.ArrayLike) -> None:
        """The key's normal changed for good: re-base its level on these recent scores (used at
        once, however few; no finite positive score: the key falls back to the pooled level)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.log(np.asarray(scores, dtype=np.float64).ravel())
        z = z[np.isfinite(z)]
        self._memo = None  # the levels change
        self._keys.pop(key)
        if z.size:
            m, w = _ewma(0.0, 0.0, z, self.key_halflife)
            self._keys.put([key], np.array([[m, w, max(z.size, self.key_min_count)]], np.float64))

    def _push(self, u: F64) -> None:
        if self._buf.size != self.window:
            self._buf = np.zeros(self.window)
        u = u[-self.window :]
        idx = (self._pos + np.arange(u.size)) % self.window
        self._sorted = _sorted_swap(self._sorted, self._buf[idx[idx < self._count]], u)
        ring_write(self._buf, self._pos, u)
        self._pos = (self._pos + u.size) % self.window
        self._count = min(self.window, self._count + u.size)

    def _update_keys(self, ids: I64, uniq: list[str], z: F64, before: F64) -> F64:
        """Every key's weighted sums moved by its rows at once (weights from its segment);
        the new rows."""
        decay = 2.0 ** (-1.0 / self.key_halflife)
        seg = segments(ids, len(uniq))
        w = np.empty(z.size)
        w[seg.order] = decay ** (seg.count[ids[seg.order]] - 1 - seg.rank)
        dm = np.bincount(ids, weights=w * z, minlength=len(uniq))
        dw = np.bincount(ids, weights=w, minlength=len(uniq))
        rows = before.copy()
        rows[:, :2] *= (decay ** seg.count.astype(np.float64))[:, None]
        rows += np.stack([dm, dw, seg.count.astype(np.float64)], axis=1)
        lru = np.argsort(last_rows(ids, len(uniq)), kind="stable")
        self._keys.put([uniq[i] for i in lru], rows[lru])
        return rows

    def _refit(self) -> None:
        """Refit: every ``refit_every`` values, and whenever the window doubled since the last
        fit (a short stream's first fits use few values). A window too small for
        ``tail_fraction`` to leave ``min_excesses`` excesses uses a larger fraction (at most
        0.3), so a short stream still gets a parametric tail."""
        self._since_fit, self._fitted, self._fit_count = 0, True, self._count
        live = self._sorted
        frac = min(0.3, max(self.tail_fraction, self.min_excesses / max(live.size, 1)))
        t = float(np.quantile(live, 1.0 - frac))
        exc = live[live > t] - t
        if exc.size < self.min_excesses:
            self._fit = _Tail(_NO_TAIL, t, math.nan, math.nan, math.nan)
            return
        old = self._fit
        self._fit = _fit_tail(exc, t, (old.xi, old.sigma) if old.kind == "gpd" else None)

    # ------------------------------------------------------------------ state
    def get_state(self) -> dict[str, Any]:
        """Plain data: the window oldest first, the fit, the pooled and per-key sums."""
        window = (self._buf[: self._count].copy() if self._count < self.window
                  else np.concatenate([self._buf[self._pos :], self._buf[: self._pos]]))
        keys = self._keys.get_state()
        return {"window": window, "since_fit": self._since_fit, "fitted": self._fitted,
                "fit_kind": self._fit.kind, "pool": list(self._pool),
                "fit_count": self._fit_count,
                "fit": [self._fit.t, self._fit.xi, self._fit.sigma, self._fit.ymax],
                "keys": keys["keys"], "key_sums": keys["rows"]}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_state` returned."""
        self._buf, self._pos, self._count = np.zeros(self.window), 0, 0
        self._sorted = np.zeros(0)
        window = np.asarray(state["window"], dtype=np.float64)
        if window.size:
            self._push(window)
        self._since_fit, self._fitted = int(state["since_fit"]), bool(state["fitted"])
        self._fit_count = int(state.get("fit_count", 0))
        t, xi, sigma, ymax = (float(v) for v in state["fit"])
        self._fit = _Tail(str(state["fit_kind"]), t, xi, sigma, ymax)
        self._pool = (float(state["pool"][0]), float(state["pool"][1]))
        self._memo = None  # the levels change
        self._keys = KeyColumns(3, self.max_keys)
        self._keys.set_state({"keys": state["keys"], "rows": state["key_sums"]})


def _sorted_swap(srt: F64, old: F64, new: F64) -> F64:
    """``srt`` (ascending) with the values ``old`` taken out and ``new`` put in, in O(n) moves
    instead of a sort (duplicates: each copy of a value is removed once).

    >>> _sorted_swap(np.array([1.0, 2.0, 2.0, 5.0]), np.array([2.0, 5.0]), np.array([3.0, 0.0]))
    array([0., 1., 2., 3.])
    """
    o = np.sort(old)
    dup = np.arange(o.size) - np.searchsorted(o, o, side="left")
    kept = np.delete(srt, np.searchsorted(srt, o, side="left") + dup)
    n = np.sort(new)
    out: F64 = np.insert(kept, np.searchsorted(kept, n, side="left"), n)
    return out


def _ewma(m: float, w: float, z: F64, halflife: float) -> tuple[float, float]:
    """Exponentially weighted sums of ``z`` and of the weights, after ``z`` (oldest first)."""
    decay = 2.0 ** (-1.0 / halflife)
    wt = decay ** np.arange(z.size - 1, -1, -1, dtype=np.float64)
    fade = decay ** float(z.size)
    return fade * m + float(wt @ z), fade * w + float(wt.sum())


@dataclass(frozen=True, slots=True)
class _Tail:
    """The fitted tail above ``t``: conditional survival of an excess ``y``.

    A GPD with ``xi < 0`` ends at ``sigma / -xi``: scores past it would get ``p = 0`` (grade 1
    for a value merely beyond a short window's guess of the end). Past the largest excess of
    the fit, ``ymax``, the tail goes on exponentially with the GPD's hazard at ``ymax`` (the
    same survival and density there), so nothing observable is impossible.
    """

    kind: str
    t: float
    xi: float
    sigma: float
    ymax: float

    def _join(self) -> tuple[float, float] | None:
        if not (self.xi < 0 and math.isfinite(self.ymax)):
            return None
        return (float(self._gpd_sf(np.array([self.ymax]))[0]),
                1.0 / max(self.sigma + self.xi * self.ymax, 0.1 * self.sigma))

    def _gpd_sf(self, y: F64) -> F64:
        """``scipy.stats.genpareto.sf(y, xi, 0, sigma)`` in closed form (scipy's generic
        machinery costs ~0.4 ms a call, per block of rows)."""
        if self.xi == 0.0:
            return np.exp(-y / self.sigma)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            base = np.maximum(1.0 + self.xi * y / self.sigma, 0.0)
            out: F64 = base ** (-1.0 / self.xi)
        return out

    def sf(self, y: F64) -> F64:
        out = self._gpd_sf(y)
        join = self._join()
        if join is not None:
            beyond = y > self.ymax
            out[beyond] = join[0] * np.exp(-(y[beyond] - self.ymax) * join[1])
        return out

    def _gpd_isf(self, q: F64) -> F64:
        """``scipy.stats.genpareto.isf(q, xi, 0, sigma)`` through the special function it
        is built on (``-boxcox(q, -xi) * sigma``, the same bits) without the generic
        distribution machinery (~0.5 ms a call, once per scored block).

        >>> from scipy import stats
        >>> q = np.array([0.5, 1e-3, 1e-9])
        >>> all((_Tail("gpd", 0.0, xi, 2.0, math.inf)._gpd_isf(q)
        ...      == stats.genpareto.isf(q, xi, 0, 2.0)).all() for xi in (0.0, 0.3))
        True
        """
        out: F64 = -special.boxcox(q, -self.xi) * self.sigma
        return out

    def isf(self, q: F64) -> F64:
        out = self._gpd_isf(q)
        join = self._join()
        if join is not None:
            beyond = q < join[0]
            out[beyond] = self.ymax + np.log(join[0] / q[beyond]) / join[1]
        return out


def _fit_tail(exc: F64, t: float, start: tuple[float, float] | None) -> _Tail:
    """GPD by MLE (``floc=0``, from ``start`` when given); exponential when that fails, and
    without a fit when the excesses are not over-dispersed against an exponential (variance
    at most the squared mean: the log-likelihood's slope in ``xi`` at ``xi = 0``, with the
    exponential's scale, is not positive, so the MLE lies at ``xi <= 0``, which is not
    taken; log reconstruction errors are mostly such tails, and the fit that would end there
    costs ~30 ms).

    >>> rng = np.random.default_rng(0)
    >>> _fit_tail(rng.exponential(2.0, 400) ** 0.8, 0.0, None).kind   # lighter than exp
    'exp'
    >>> _fit_tail(rng.pareto(3.0, 400), 0.0, None).kind               # heavier: xi ~ 1/3
    'gpd'
    """
    if not float(np.var(exc)) > float(np.mean(exc)) ** 2:
        return _exp_tail(exc, t)
    from scipy import stats  # here: ~1 s to import, needed only for over-dispersed tails

    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            if start is None:
                xi, _, sigma = stats.genpareto.fit(exc, floc=0)
            else:
                xi, _, sigma = stats.genpareto.fit(exc, start[0], floc=0, scale=start[1])
    except (ValueError, RuntimeError, FloatingPointError):
        xi, sigma = math.nan, math.nan
    # xi < 0 (a tail with an end point) is not taken: the tails of log reconstruction errors
    # are light but unbounded, and a short tail fitted on a window that the detector itself
    # censors (flagged scores are not learned) would shorten the window's tail further
    if math.isfinite(xi) and math.isfinite(sigma) and sigma > 0 and xi >= 0:
        return _Tail("gpd", t, float(xi), float(sigma), float(exc.max()))
    return _exp_tail(exc, t)


def preload() -> None:
    """Import what a GPD fit needs now: a long-running process calls this at its start, so
    that the first over-dispersed tail does not stall a batch for the import (~1 s)."""
    from scipy import stats  # noqa: F401


def _exp_tail(exc: F64, t: float) -> _Tail:
    """The exponential tail: its MLE scale with the location at 0 is the mean excess, the
    value ``scipy.stats.expon.fit(exc, floc=0)`` returns (``scale = mean - floc``).

    >>> from scipy import stats
    >>> y = np.random.default_rng(1).exponential(0.3, 250)
    >>> _exp_tail(y, 0.0).sigma == stats.expon.fit(y, floc=0)[1]
    True
    """
    return _Tail("exp", t, 0.0, float(np.mean(exc)), float(exc.max()))
