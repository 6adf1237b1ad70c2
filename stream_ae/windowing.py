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

import itertools
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
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
        if len(self._hist) + len(set(keys)) > self.max_keys and any(
            k not in self._hist for k in keys
        ):  # an eviction may happen inside this batch
            return self._transform_evicting(keys, v)
        return self._transform_grouped(keys, v)

    def _transform_evicting(
        self, keys: Sequence[str], v: F32
    ) -> tuple[F32, I64, tuple[tuple[int, str], ...]]:
        """Exactly as record by record (an LRU evicting after each accepted row), in chunks
        of at most ``max_keys`` rows: a chunk whose keys are none of the entries it may evict
        (the oldest, one per new key) is done at once and its evictions applied after it;
        any other chunk record by record. Hostile input (a new key per record) takes the
        fast path."""
        feats, rows, rejected = [], [], []
        for s in range(0, len(keys), self.max_keys):
            ck, cv = keys[s : s + self.max_keys], v[s : s + self.max_keys]
            if self._can_group(ck):
                f, r, rej = self._transform_grouped(ck, cv)
                while len(self._hist) > self.max_keys:
                    self._hist.popitem(last=False)
            else:
                f, r, rej = self._transform_sequential(ck, cv)
            feats.append(f)
            rows.append(r + s)
            rejected += [(i + s, why) for i, why in rej]
        return np.concatenate(feats), np.concatenate(rows), tuple(rejected)

    def _can_group(self, keys: Sequence[str]) -> bool:
        uniq = set(keys)
        new = sum(k not in self._hist for k in uniq)
        evictable = itertools.islice(self._hist, max(0, len(self._hist) + new - self.max_keys))
        return not any(k in uniq for k in evictable)

    def _transform_grouped(
        self, keys: Sequence[str], v: F32
    ) -> tuple[F32, I64, tuple[tuple[int, str], ...]]:
        """All keys at once (no eviction inside the batch)."""
        index: dict[str, int] = {}
        ids = np.fromiter((index.setdefault(k, len(index)) for k in keys), np.int64, len(keys))
        uniq = list(index)
        hist = np.zeros((len(uniq), max(1, self.lags), self.n_raw), np.float32)
        known = np.zeros(len(uniq), np.bool_)
        lru = self._hist
        for i, cur in enumerate(map(lru.get, uniq)):
            if cur is not None:
                hist[i], known[i] = cur, True
        out = _features(ids, v, hist, known, self.lags, self.diffs, self.missing)
        order = np.argsort(out.last_row, kind="stable")  # LRU order: by last accepted row
        order = order[out.last_row[order] >= 0]
        # one copy per key: a view would keep the whole batch's array alive while the key is
        for i, row in zip(order.tolist(), out.hist[order], strict=True):
            k = uniq[i]
            lru[k] = row.copy()
            lru.move_to_end(k)
        return out.features, out.rows, out.rejected

    def _transform_sequential(
        self, keys: Sequence[str], v: F32
    ) -> tuple[F32, I64, tuple[tuple[int, str], ...]]:
        out = np.empty((v.shape[0], self.n_features), dtype=np.float32)
        ok = np.zeros(v.shape[0], dtype=np.bool_)
        rejected: list[tuple[int, str]] = []
        for i, key in enumerate(keys):
            feats, rows, rej = self._transform_grouped([key], v[i : i + 1])
            if rows.size:
                out[i], ok[i] = feats[0], True
                while len(self._hist) > self.max_keys:
                    self._hist.popitem(last=False)
            rejected += [(i, why) for _, why in rej]
        rows_ok = np.flatnonzero(ok).astype(np.int64)
        return out[rows_ok], rows_ok, tuple(rejected)

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


@dataclass(frozen=True, slots=True)
class _Features:
    features: F32  # accepted rows, in row order
    rows: I64  # their row indices
    rejected: tuple[tuple[int, str], ...]
    hist: F32  # (keys, H, d) new history per key, most recent first
    last_row: I64  # last accepted row per key, -1 when none


def _features(
    ids: I64, v: F32, hist: F32, known: npt.NDArray[np.bool_], lags: int, diffs: bool,
    missing: str,
) -> _Features:
    """Features for a batch, vectorised over keys.

    Rows are grouped by key (stable sort) into one array ``E`` in which each key's
    segment is its ``H`` history rows (oldest first) followed by its accepted rows; lag
    ``j`` of the row at position ``p`` is then ``E[p - j]``, and forward filling
    cannot cross a segment because history rows are always complete.
    """
    m, h, d = hist.shape
    order = np.argsort(ids, kind="stable")
    sid, sv = ids[order], v[order]
    acc, reason = _accepted(sid, np.isfinite(sv), known, missing)
    pos = np.arange(sid.size)
    first = np.full(m, sid.size, dtype=np.int64)
    np.minimum.at(first, sid[acc], pos[acc])
    fresh = ~known & (first < sid.size)  # new keys: lags filled with their first reading
    hist = hist.copy()
    hist[fresh] = sv[first[fresh]][:, None, :]
    counts = np.bincount(sid[acc], minlength=m)
    seg = np.arange(m) * h + np.concatenate([[0], np.cumsum(counts)[:-1]])
    e = np.empty((m * h + int(counts.sum()), d), dtype=np.float32)
    virt = (seg[:, None] + np.arange(h)).ravel()
    e[virt] = hist[:, ::-1, :].reshape(m * h, d)
    sacc = sid[acc]
    rank = np.arange(sacc.size) - (np.cumsum(counts) - counts)[sacc]
    p = seg[sacc] + h + rank
    e[p] = sv[acc]
    e = _ffill_segments(e, virt)
    new_hist = e[(seg + h + counts)[:, None] - 1 - np.arange(h)]
    orig = order[acc]
    back = np.argsort(orig, kind="stable")
    last = np.full(m, -1, dtype=np.int64)
    np.maximum.at(last, sacc, orig)
    rej = sorted(zip(order[~acc].tolist(), [reason] * int((~acc).sum()), strict=True))
    feats = _lag_blocks(e, p[back], lags, diffs)  # gathered in row order at once
    return _Features(feats, orig[back].astype(np.int64), tuple(rej), new_hist, last)


def _accepted(
    sid: I64, finite: npt.NDArray[np.bool_], known: npt.NDArray[np.bool_], missing: str
) -> tuple[npt.NDArray[np.bool_], str]:
    """Accepted rows (key-sorted) and the reason the others are rejected."""
    complete: npt.NDArray[np.bool_] = np.all(finite, axis=1)
    if missing == "reject":
        return complete, REJECT_NON_FINITE
    first = np.full(known.size, sid.size, dtype=np.int64)
    pos = np.arange(sid.size)
    np.minimum.at(first, sid[complete], pos[complete])
    acc: npt.NDArray[np.bool_] = np.logical_or(known[sid], pos >= first[sid])
    return acc, REJECT_NO_PREVIOUS


def _ffill_segments(e: F32, virt: I64) -> F32:
    """Fill non-finite cells from the same column's previous finite cell (history rows count
    as finite: they are complete, and they stop a fill from crossing into another key)."""
    finite = np.isfinite(e)
    finite[virt] = True
    if finite.all():
        return e
    idx = np.where(finite, np.arange(e.shape[0])[:, None], -1)
    np.maximum.accumulate(idx, axis=0, out=idx)
    return e[idx, np.arange(e.shape[1])[None, :]]


def _lag_blocks(e: F32, p: I64, lags: int, diffs: bool) -> F32:
    """Rows ``e[p], e[p - 1], ..., e[p - lags]`` side by side (then ``e[p] - e[p - 1]``):
    one gather of ``(rows, lags + 1, d)``, laid out as the blocks one after the other."""
    lagged: F32 = e[p[:, None] - np.arange(lags + 1)].reshape(p.size, (lags + 1) * e.shape[1])
    if diffs:
        with_diffs: F32 = np.concatenate([lagged, e[p] - e[p - 1]], axis=1)
        return with_diffs
    return lagged


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
            ring_write(self._cols[k], self._pos, v[start:])
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


def ring_write(buf: npt.NDArray[Any], pos: int, rows: npt.NDArray[Any]) -> None:
    """Write ``rows`` (at most ``len(buf)``) into ring buffer ``buf`` from ``pos``, wrapping.

    >>> buf = np.zeros(4); ring_write(buf, 3, np.array([1.0, 2.0])); buf.tolist()
    [2.0, 0.0, 0.0, 1.0]
    """
    first = min(len(rows), len(buf) - pos)
    buf[pos : pos + first] = rows[:first]
    buf[: len(rows) - first] = rows[first:]
