"""Feature stage and record windows; pure (numpy only, no I/O, no torch).

``FeatureStage`` turns raw readings into model inputs, per key and in arrival
order: the current reading, the ``lags`` previous readings of the same key
(a shingle), and optionally the first difference to the previous reading.
Until a key has ``lags`` previous readings its missing lags are filled with
its *first* reading (so the first record of a key has zero differences).
Per-key history lives in an LRU of ``max_keys`` keys.

``RecordWindow`` is a ring buffer of the most recent rows (the replay buffer
of recent normal records the model trains on, and the regime-policy window).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

REJECT_NON_FINITE = "non_finite"
REJECT_NO_PREVIOUS = "no_previous_value"


def feature_names(raw: Sequence[str], lags: int, diffs: bool) -> tuple[str, ...]:
    """Model-input column names: readings, then lag blocks, then differences.

    >>> feature_names(["t", "p"], lags=1, diffs=True)
    ('t', 'p', 't_lag1', 'p_lag1', 't_diff', 'p_diff')
    """
    names = list(raw)
    for j in range(1, lags + 1):
        names += [f"{n}_lag{j}" for n in raw]
    if diffs:
        names += [f"{n}_diff" for n in raw]
    return tuple(names)


class FeatureStage:
    """Per-key lag/shingle and difference features with a missing-value policy.

    ``transform(keys, values)`` returns ``(features, accepted_rows, rejected)``:
    the model inputs of the accepted rows (float32, in row order), their row
    indices, and ``(row, reason)`` for rejected rows. Rejected rows do not touch
    the per-key history. Results do not depend on how a stream is split into
    ``transform`` calls.

    Parameters
    ----------
    n_raw
        Raw feature columns.
    lags
        Previous readings of the same key appended to each row.
    diffs
        Append ``x_t - x_{t-1}`` per raw column.
    missing
        ``"reject"`` rows with NaN/inf, or ``"ffill"`` them from the key's last
        accepted reading (rows of a key with no accepted reading yet are rejected).
    max_keys
        Keys whose history is kept (least recently seen evicted first).

    Examples
    --------
    >>> import numpy as np
    >>> fs = FeatureStage(n_raw=1, lags=2, diffs=True)
    >>> x, rows, rej = fs.transform(["a", "a", "a"], np.array([[1.0], [2.0], [4.0]], np.float32))
    >>> x.tolist()  # [reading, lag1, lag2, diff]
    [[1.0, 1.0, 1.0, 0.0], [2.0, 1.0, 1.0, 1.0], [4.0, 2.0, 1.0, 2.0]]
    >>> x, rows, rej = fs.transform(["a", "b"], np.array([[np.nan], [3.0]], np.float32))
    >>> (rows.tolist(), rej)
    ([1], ((0, 'non_finite'),))
    """

    def __init__(
        self,
        n_raw: int,
        lags: int = 0,
        diffs: bool = False,
        missing: Literal["reject", "ffill"] = "reject",
        max_keys: int = 100_000,
    ) -> None:
        self.n_raw = n_raw
        self.lags = lags
        self.diffs = diffs
        self.missing = missing
        self.max_keys = max_keys
        self._hist: OrderedDict[str, F32] = OrderedDict()

    @property
    def n_features(self) -> int:
        return self.n_raw * (1 + self.lags + int(self.diffs))

    @property
    def _stateless(self) -> bool:
        return self.lags == 0 and not self.diffs and self.missing == "reject"

    def transform(
        self, keys: Sequence[str], values: F32
    ) -> tuple[F32, I64, tuple[tuple[int, str], ...]]:
        """Features of the accepted rows, their row indices, and the rejected rows."""
        v = np.asarray(values, dtype=np.float32)
        if self._stateless:
            ok = np.isfinite(v).all(axis=1)
            rows = np.flatnonzero(ok)
            rejected = tuple((int(r), REJECT_NON_FINITE) for r in np.flatnonzero(~ok))
            return np.ascontiguousarray(v[rows]), rows.astype(np.int64), rejected
        groups = _group_rows(keys)
        if len(self._hist) + len(groups) > self.max_keys and any(
            k not in self._hist for k in groups
        ):
            return self._transform_sequential(keys, v)
        return self._transform_grouped(groups, v)

    def _transform_grouped(
        self, groups: dict[str, list[int]], v: F32
    ) -> tuple[F32, I64, tuple[tuple[int, str], ...]]:
        out = np.empty((v.shape[0], self.n_features), dtype=np.float32)
        ok = np.zeros(v.shape[0], dtype=np.bool_)
        reasons: dict[int, str] = {}
        last_ok: dict[str, int] = {}
        for key, idx in groups.items():
            rows = np.asarray(idx, dtype=np.int64)
            feats, acc, rej = self._key_rows(key, v[rows])
            out[rows[acc]] = feats
            ok[rows[acc]] = True
            reasons.update((int(rows[i]), why) for i, why in rej)
            if acc.size:
                last_ok[key] = int(rows[acc[-1]])
        for key in sorted(last_ok, key=last_ok.__getitem__):  # LRU: by last accepted row
            self._hist.move_to_end(key)
        rows_ok = np.flatnonzero(ok).astype(np.int64)
        return out[rows_ok], rows_ok, tuple(sorted(reasons.items()))

    def _transform_sequential(
        self, keys: Sequence[str], v: F32
    ) -> tuple[F32, I64, tuple[tuple[int, str], ...]]:
        out = np.empty((v.shape[0], self.n_features), dtype=np.float32)
        ok = np.zeros(v.shape[0], dtype=np.bool_)
        rejected: list[tuple[int, str]] = []
        for i, key in enumerate(keys):
            feats, acc, rej = self._key_rows(key, v[i : i + 1])
            if acc.size:
                out[i], ok[i] = feats[0], True
                self._hist.move_to_end(key)
                self._evict()
            rejected += [(i, why) for _, why in rej]
        rows_ok = np.flatnonzero(ok).astype(np.int64)
        return out[rows_ok], rows_ok, tuple(rejected)

    def _evict(self) -> None:
        while len(self._hist) > self.max_keys:
            self._hist.popitem(last=False)

    def _key_rows(
        self, key: str, rows: F32
    ) -> tuple[F32, I64, list[tuple[int, str]]]:
        """Accept/fill one key's rows (in order), build their features, update its history."""
        hist = self._hist.get(key)
        acc, filled, rej = self._accept(hist, rows)
        if acc.size == 0:
            return np.empty((0, self.n_features), np.float32), acc, rej
        if hist is None:
            hist = np.repeat(filled[:1], max(1, self.lags), axis=0)
        feats, new_hist = _shingle(hist, filled, self.lags, self.diffs)
        self._hist[key] = new_hist
        if len(self._hist) > self.max_keys:
            self._evict_except(key)
        return feats, acc, rej

    def _evict_except(self, key: str) -> None:
        self._hist.move_to_end(key)
        self._evict()

    def _accept(
        self, hist: F32 | None, rows: F32
    ) -> tuple[I64, F32, list[tuple[int, str]]]:
        finite = np.isfinite(rows)
        if self.missing == "reject":
            ok = finite.all(axis=1)
            rej = [(int(i), REJECT_NON_FINITE) for i in np.flatnonzero(~ok)]
            acc = np.flatnonzero(ok).astype(np.int64)
            return acc, rows[acc], rej
        start = 0
        if hist is None:  # nothing to carry: rows before the first complete one are rejected
            complete = np.flatnonzero(finite.all(axis=1))
            start = int(complete[0]) if complete.size else rows.shape[0]
            hist = rows[start : start + 1]
        rej = [(i, REJECT_NO_PREVIOUS) for i in range(start)]
        acc = np.arange(start, rows.shape[0], dtype=np.int64)
        if acc.size == 0:
            return acc, rows[:0], rej
        return acc, _ffill(rows[start:], finite[start:], hist[0]), rej

    def get_state(self) -> dict[str, Any]:
        """Plain data: keys in LRU order (oldest first) and their histories."""
        keys = list(self._hist)
        h = max(1, self.lags)
        stack = (
            np.stack([self._hist[k] for k in keys])
            if keys
            else np.zeros((0, h, self.n_raw), np.float32)
        )
        return {"keys": keys, "hist": stack}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_state` returned."""
        stack = np.asarray(state["hist"], dtype=np.float32)
        self._hist = OrderedDict((str(k), stack[i].copy()) for i, k in enumerate(state["keys"]))


def _group_rows(keys: Sequence[str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    return groups


def _ffill(rows: F32, finite: npt.NDArray[np.bool_], last: F32) -> F32:
    """Fill non-finite cells from the same column's previous finite cell (or ``last``)."""
    if finite.all():
        return rows
    n = rows.shape[0]
    idx = np.where(finite, np.arange(n)[:, None], -1)
    np.maximum.accumulate(idx, axis=0, out=idx)
    cols = np.arange(rows.shape[1])[None, :]
    taken = rows[np.maximum(idx, 0), cols]
    return np.where(idx >= 0, taken, last[None, :]).astype(np.float32)


def _shingle(hist: F32, rows: F32, lags: int, diffs: bool) -> tuple[F32, F32]:
    """Features of ``rows`` given the key's history (most recent first); the new history."""
    h = hist.shape[0]
    seq = np.concatenate([hist[::-1], rows])  # oldest first
    m = rows.shape[0]
    blocks = [rows] + [seq[h - j : h - j + m] for j in range(1, lags + 1)]
    if diffs:
        blocks.append(rows - seq[h - 1 : h - 1 + m])
    return np.concatenate(blocks, axis=1), np.ascontiguousarray(seq[-h:][::-1])


class RecordWindow:
    """A ring buffer of the last ``size`` rows of named columns.

    Examples
    --------
    >>> import numpy as np
    >>> w = RecordWindow(3)
    >>> w.push(x=np.arange(4.0).reshape(4, 1), s=np.arange(4.0))
    >>> (len(w), w.column("s").tolist())
    (3, [1.0, 2.0, 3.0])
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._cols: dict[str, npt.NDArray[Any]] = {}
        self._pos = 0
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def push(self, **cols: npt.NDArray[Any]) -> None:
        """Append rows (the same number in every column), oldest first."""
        n = len(next(iter(cols.values())))
        if n == 0:
            return
        if not self._cols:
            self._cols = {
                k: np.zeros((self.size, *v.shape[1:]), dtype=v.dtype) for k, v in cols.items()
            }
        start = max(0, n - self.size)
        for k, v in cols.items():
            _ring_write(self._cols[k], self._pos, v[start:])
        self._pos = (self._pos + n - start) % self.size
        self._count = min(self.size, self._count + n - start)

    def column(self, name: str) -> npt.NDArray[Any]:
        """One column's rows, oldest first (a copy)."""
        if not self._cols:
            return np.zeros(0)
        col = self._cols[name]
        if self._count < self.size:
            return col[: self._count].copy()
        return np.concatenate([col[self._pos :], col[: self._pos]])

    def clear(self) -> None:
        self._pos = 0
        self._count = 0

    def get_state(self) -> dict[str, Any]:
        """Plain data: the columns, oldest first."""
        return {"cols": {k: self.column(k) for k in self._cols}}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_state` returned."""
        self._cols, self._pos, self._count = {}, 0, 0
        cols = {k: np.asarray(v) for k, v in state["cols"].items()}
        if cols:
            self._cols = {
                k: np.zeros((self.size, *v.shape[1:]), dtype=v.dtype) for k, v in cols.items()
            }
            self.push(**cols)
            if self._count == 0:
                self._pos = 0


def _ring_write(buf: npt.NDArray[Any], pos: int, rows: npt.NDArray[Any]) -> None:
    first = min(len(rows), len(buf) - pos)
    buf[pos : pos + first] = rows[:first]
    buf[: len(rows) - first] = rows[first:]
