"""Key helpers shared by the per-key detectors: integer ids, key-sorted segments, LRU cuts."""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]


def encode(keys: Sequence[str]) -> tuple[I64, list[str]]:
    """Integer ids in order of first appearance, and the distinct keys.

    >>> ids, uniq = encode(["b", "a", "b"])
    >>> (ids.tolist(), uniq)
    ([0, 1, 0], ['b', 'a'])
    """
    index: dict[str, int] = {}
    ids = np.fromiter((index.setdefault(k, len(index)) for k in keys), np.int64, len(keys))
    return ids, list(index)


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
