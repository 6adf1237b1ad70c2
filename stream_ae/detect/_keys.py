"""Key helpers shared by the per-key detectors: integer ids, key-sorted segments, LRU cuts."""

from __future__ import annotations

import itertools
from collections.abc import Container, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def encode(keys: Sequence[str]) -> tuple[I64, list[str]]:
    """Integer ids in order of first appearance, and the distinct keys (read from a
    :class:`BatchKeys` as it is).

    >>> ids, uniq = encode(["b", "a", "b"])
    >>> (ids.tolist(), uniq)
    ([0, 1, 0], ['b', 'a'])
    """
    if isinstance(keys, BatchKeys):
        return keys.ids, keys.uniq
    index: dict[str, int] = {}
    ids = np.fromiter((index.setdefault(k, len(index)) for k in keys), np.int64, len(keys))
    return ids, list(index)


class BatchKeys(Sequence[str]):
    """A batch's keys encoded once: pass it instead of the list to every component of the
    decision layer, and the per-row Python pass that maps keys to ids runs once, not once per
    component call. It reads as the sequence of keys.

    >>> bk = BatchKeys(["b", "a", "b"])
    >>> (len(bk), bk[2], bk.ids.tolist(), bk.uniq, list(bk[1:]))
    (3, 'b', [0, 1, 0], ['b', 'a'], ['a', 'b'])
    """

    __slots__ = ("ids", "keys", "uniq")

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = keys
        self.ids, self.uniq = encode(keys)

    def __len__(self) -> int:
        return len(self.keys)

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[str]: ...
    def __getitem__(self, i: int | slice) -> str | Sequence[str]:
        return self.keys[i]


def n_distinct(keys: Sequence[str]) -> int:
    """Distinct keys in a batch."""
    return len(keys.uniq) if isinstance(keys, BatchKeys) else len(set(keys))


@dataclass(frozen=True, slots=True)
class Segments:
    """Rows grouped by key id: ``order`` sorts rows by (id, row); key ``i`` owns
    ``order[start[i]:start[i] + count[i]]``; ``rank`` is each sorted row's position in its key."""

    order: I64
    start: I64
    count: I64
    rank: I64


def segments(ids: I64, m: int) -> Segments:
    """Key-sorted view of ``ids`` (``m`` distinct ids).

    >>> s = segments(np.array([1, 0, 1, 1]), 2)
    >>> (s.order.tolist(), s.start.tolist(), s.count.tolist(), s.rank.tolist())
    ([1, 0, 2, 3], [0, 1], [1, 3], [0, 0, 1, 2])
    """
    order = np.argsort(ids, kind="stable").astype(np.int64)
    count = np.bincount(ids, minlength=m).astype(np.int64)
    start = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
    rank = np.arange(ids.size, dtype=np.int64) - start[ids[order]]
    return Segments(order, start, count, rank)


def last_rows(ids: I64, m: int) -> I64:
    """Last row of each id (-1 when absent); ids sorted by it give the LRU order of a batch.

    >>> last_rows(np.array([0, 1, 0]), 3).tolist()
    [2, 1, -1]
    """
    last = np.full(m, -1, dtype=np.int64)
    np.maximum.at(last, ids, np.arange(ids.size, dtype=np.int64))
    return last


def safe_end(keys: Sequence[str], start: int, known: Container[str], size: int,
             max_keys: int) -> int:
    """End of the longest run of rows from ``start`` whose new keys fit beside ``size`` known
    ones without an eviction (at least one row): a run processed at once then equals the same
    rows processed one by one, evictions happening only between runs.

    >>> safe_end(["a", "b", "a", "c"], 0, {"a"}, 1, 2)
    3
    """
    new: set[str] = set()
    for i in range(start, len(keys)):
        k = keys[i]
        if k not in known and k not in new:
            if size + len(new) + 1 > max_keys:
                return max(i, start + 1)
            new.add(k)
    return len(keys)


class KeyColumns:
    """An LRU of keys, each owning one row of ``n_cols`` float64 columns.

    Recency is a tick per row (numpy), so a batch's keys are touched without a Python loop
    over them; only new keys and evictions are handled one by one.

    >>> t = KeyColumns(2, max_keys=2)
    >>> t.put(["a", "b"], np.array([[1.0, 2.0], [3.0, 4.0]]))
    >>> t.put(["c"], np.array([[5.0, 6.0]]))  # evicts "a", the least recently put
    >>> (t.keys(), t.rows(["a", "c"]).tolist())
    (['b', 'c'], [[0.0, 0.0], [5.0, 6.0]])
    """

    def __init__(self, n_cols: int, max_keys: int, dtype: type[Any] = np.float64) -> None:
        self.n_cols = n_cols
        self.max_keys = max_keys
        self.dtype = dtype
        self._clear()

    def _clear(self) -> None:
        self._slot: dict[str, int] = {}
        self._name: list[str] = []  # slot -> key (stale for free slots)
        self._data: npt.NDArray[Any] = np.zeros((0, self.n_cols), self.dtype)
        self._tick: I64 = np.zeros(0, np.int64)
        self._clock = 0
        self._free: list[int] = []

    def __len__(self) -> int:
        return len(self._slot)

    def __contains__(self, key: object) -> bool:
        return key in self._slot

    def keys(self) -> list[str]:
        """Keys, least recently put first."""
        live = np.fromiter(self._slot.values(), np.int64, len(self._slot))
        return [self._name[i] for i in live[np.argsort(self._tick[live], kind="stable")].tolist()]

    def slots(self, uniq: Sequence[str]) -> I64:
        """Each key's row in the storage, -1 for keys not held."""
        return np.fromiter(map(self._slot.get, uniq, itertools.repeat(-1)), np.int64, len(uniq))

    def rows(self, uniq: Sequence[str]) -> npt.NDArray[Any]:
        """Each key's row (zeros for keys not held), a copy."""
        s = self.slots(uniq)
        out = np.zeros((len(uniq), self.n_cols), self.dtype)
        out[s >= 0] = self._data[s[s >= 0]]
        return out

    def put(self, keys: Sequence[str], rows: npt.NDArray[Any]) -> None:
        """Store rows for keys (distinct), most recent last, then evict down to ``max_keys``."""
        s = self.slots(keys)
        for i in np.flatnonzero(s < 0).tolist():
            s[i] = self._allocate(keys[i])
        self._data[s] = rows
        self._tick[s] = self._clock + np.arange(s.size)
        self._clock += s.size
        excess = len(self._slot) - self.max_keys
        if excess > 0:
            live = np.fromiter(self._slot.values(), np.int64, len(self._slot))
            for slot in live[np.argsort(self._tick[live], kind="stable")[:excess]].tolist():
                del self._slot[self._name[slot]]
                self._free.append(slot)

    def pop(self, key: str) -> None:
        """Forget one key."""
        slot = self._slot.pop(key, None)
        if slot is not None:
            self._free.append(slot)

    def _allocate(self, key: str) -> int:
        if not self._free:
            old = self._data.shape[0]
            size = max(8, 2 * old)
            grown = np.zeros((size - old, self.n_cols), self.dtype)
            self._data = np.concatenate([self._data, grown])
            self._tick = np.concatenate([self._tick, np.zeros(size - old, np.int64)])
            self._name += [""] * (size - old)
            self._free = list(range(size - 1, old - 1, -1))
        slot = self._free.pop()
        self._slot[key] = slot
        self._name[slot] = key
        return slot

    def get_state(self) -> dict[str, Any]:
        """Plain data: keys, least recently put first, and their rows."""
        keys = self.keys()
        return {"keys": keys, "rows": self.rows(keys)}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_state` returned."""
        self._clear()
        keys = [str(k) for k in state["keys"]]
        if keys:
            self.put(keys, np.asarray(state["rows"], dtype=self.dtype).reshape(-1, self.n_cols))
