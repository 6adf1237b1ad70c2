"""Flags to incidents: open on a flag, extend, rate-limited updates, resolve when quiet.

Rules, per key: a flagged row opens an incident when the key has none open, and
extends it otherwise (end time, counts, peak grade, accumulated sensor shares); the
incident is resolved ("quiet") at the ``quiet_records``-th consecutive unflagged row of
its key; an ``"updated"`` message goes out at every ``update_every``-th flagged row of
an incident. Incidents are state: they stay open at the end of a stream. At most
``max_keys`` incidents are open: opening one more resolves the least recently seen
open incident first (reason ``"evicted"``).

Only keys with an open incident, or a flag in the batch, cost anything; rows are
walked per key and per flagged row (unflagged runs are slices), so a batch costs one
grouping pass plus Python work proportional to its flags.
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from stream_ae.detect._keys import encode, last_rows, segments
from stream_ae.records import IncidentChange

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

TOP_SENSORS = 5


#: a lifecycle transition (the record type of :mod:`stream_ae.records`)
IncidentUpdate = IncidentChange


@dataclass(slots=True)
class _Open:
    offset: int
    start: float
    end: float
    peak: float
    records: int
    flagged: int
    quiet: int  # consecutive unflagged rows since the last flagged one
    acc: F64  # accumulated contributions of the flagged rows


@dataclass(frozen=True, slots=True)
class _Rows:
    """One call's per-row inputs."""

    flags: Bools
    grades: F64
    times: F64
    offsets: I64
    contrib: F64 | None


class IncidentTracker:
    """Turns per-row flags into incidents with a lifecycle, per key.

    ``update(...)`` returns the ``opened_offset`` of the incident each row belongs to (-1
    for none; a flagged row always belongs to one, the row that resolves an incident still
    does) and the transitions in row order. The result does not depend on how rows are
    split into calls.

    Parameters
    ----------
    quiet_records
        Consecutive unflagged rows of a key that resolve its incident (>= 1).
    update_every
        Flagged rows of an incident between two ``"updated"`` messages (>= 1).
    max_keys
        Open incidents kept, >= 1 (the least recently seen one is resolved to make room).
    max_records, max_seconds
        An incident whose key has had this many rows since it opened, or whose flagged rows
        span this much event time, is resolved as the key's ``"new_normal"`` at the flagged
        row that reaches the limit; the key is then *held*: its flags are ignored (rows
        belong to no incident, so the engine drops those flags) until :meth:`release`.
        None: no limit.

    Examples
    --------
    >>> import numpy as np
    >>> tr = IncidentTracker(quiet_records=2, update_every=2)
    >>> flags = np.array([1, 0, 1, 0, 0, 0], bool)
    >>> belong, ups = tr.update(["a"] * 6, flags, np.full(6, 0.5), np.arange(6.0),
    ...                         np.arange(100, 106))
    >>> belong.tolist()
    [100, 100, 100, 100, 100, -1]
    >>> [(u.kind, u.row, u.records, u.flagged, u.reason) for u in ups]
    [('opened', 0, 1, 1, ''), ('updated', 2, 3, 2, ''), ('resolved', 4, 5, 2, 'quiet')]
    """

    def __init__(self, quiet_records: int = 60, update_every: int = 60,
                 max_keys: int = 10_000, max_records: int | None = None,
                 max_seconds: float | None = None) -> None:
        self.quiet_records = quiet_records
        self.update_every = update_every
        self.max_keys = max_keys
        self.max_records = max_records
        self.max_seconds = max_seconds
        self._open: OrderedDict[str, _Open] = OrderedDict()
        self._names: tuple[str, ...] = ()
        self._held: set[str] = set()

    def __len__(self) -> int:
        return len(self._open)

    def open_keys(self) -> list[str]:
        """Keys with an open incident, least recently seen first."""
        return list(self._open)

    @property
    def held(self) -> list[str]:
        """Keys whose last incident became their new normal, until released (sorted)."""
        return sorted(self._held)

    def release(self, key: str) -> None:
        """Let the key's flags open incidents again (its new normal has been learned)."""
        self._held.discard(key)

    def update(
        self, keys: Sequence[str], flags: npt.ArrayLike, grades: npt.ArrayLike,
        times: npt.ArrayLike, offsets: npt.ArrayLike, contrib: F32 | None = None,
        sensor_names: Sequence[str] | None = None,
    ) -> tuple[I64, list[IncidentUpdate]]:
        """Advance the incidents by a batch: per-row ``opened_offset`` and the transitions."""
        rows = self._rows(len(keys), flags, grades, times, offsets, contrib, sensor_names)
        belong = np.full(len(keys), -1, dtype=np.int64)
        events: list[IncidentUpdate] = []
        flagged = np.flatnonzero(rows.flags).tolist()
        fkeys = [keys[i] for i in flagged]
        start, n = 0, len(keys)
        while start < n:
            end = n
            if len(self._open) + len(set(fkeys)) > self.max_keys:
                end = self._safe_end(keys, flagged, start)
            if end == start:  # row `start` opens an incident and the table is full
                events.append(self._finish(next(iter(self._open)), "evicted", start))
                end = self._safe_end(keys, flagged, start)
            self._run(keys if (start, end) == (0, n) else keys[start:end], rows, start, belong,
                      events)
            start = end
        events.sort(key=lambda u: u.row)  # stable: an eviction precedes the opening it allows
        return belong, events

    def resolve(self, key: str, reason: str = "new_normal", row: int = -1) -> IncidentUpdate | None:
        """Close the key's open incident explicitly; its ``"resolved"`` update (None if none)."""
        return self._finish(key, reason, row) if key in self._open else None

    def _rows(self, n: int, flags: npt.ArrayLike, grades: npt.ArrayLike, times: npt.ArrayLike,
              offsets: npt.ArrayLike, contrib: F32 | None,
              sensor_names: Sequence[str] | None) -> _Rows:
        out = _Rows(np.asarray(flags, dtype=np.bool_).ravel(),
                    np.asarray(grades, dtype=np.float64).ravel(),
                    np.asarray(times, dtype=np.float64).ravel(),
                    np.asarray(offsets, dtype=np.int64).ravel(),
                    None if contrib is None else np.asarray(contrib, dtype=np.float64))
        if any(a.shape[0] != n for a in (out.flags, out.grades, out.times, out.offsets)):
            raise ValueError(f"{n} keys but flags/grades/times/offsets of other lengths")
        if (contrib is None) != (sensor_names is None):
            raise ValueError("contrib and sensor_names come together")
        if out.contrib is not None and sensor_names is not None:
            if out.contrib.shape != (n, len(sensor_names)):
                raise ValueError(f"contrib must be ({n}, {len(sensor_names)})")
            self._names = tuple(sensor_names)
        return out

    def _safe_end(self, keys: Sequence[str], flagged: list[int], start: int) -> int:
        """End of the rows from ``start`` in which no opening can find the table full: new keys
        counted against the room left (resolutions inside only free more). ``start`` itself
        when its row must evict first."""
        new: set[str] = set()
        for i in flagged[bisect.bisect_left(flagged, start) :]:
            k = keys[i]
            if k not in self._open and k not in new:
                if len(self._open) + len(new) + 1 > self.max_keys:
                    return i
                new.add(k)
        return len(keys)

    def _run(self, keys: Sequence[str], rows: _Rows, base: int, belong: I64,
             events: list[IncidentUpdate]) -> None:
        """Rows ``base:base+len(keys)`` (no eviction needed inside): walk the relevant keys."""
        ids, uniq = encode(keys)
        m = len(uniq)
        fl = rows.flags[base : base + len(keys)]
        rel = np.bincount(ids[fl], minlength=m) > 0
        rel |= np.fromiter((k in self._open for k in uniq), np.bool_, m)
        if not rel.any():
            return
        seg = segments(ids, m)
        last = last_rows(ids, m)
        for i in np.flatnonzero(rel).tolist():
            own = base + seg.order[seg.start[i] : seg.start[i] + seg.count[i]]
            self._walk(uniq[i], own, rows, belong, events)
        for i in np.argsort(last, kind="stable").tolist():  # LRU: by last row seen
            if rel[i] and uniq[i] in self._open:
                self._open.move_to_end(uniq[i])

    def _walk(self, key: str, own: I64, rows: _Rows, belong: I64,
              events: list[IncidentUpdate]) -> None:
        """One key's rows (batch indices, ascending): gaps as slices, flagged rows one by one."""
        if key in self._held:
            return
        inc = self._open.get(key)
        pos = 0
        for r in np.flatnonzero(rows.flags[own]).tolist():
            if inc is not None:
                inc = self._gap(key, inc, own[pos:r], belong, events)
            row = int(own[r])
            if inc is None:
                inc = self._new(rows, row)
                self._open[key] = inc
                events.append(self._message("opened", key, inc, row))
            else:
                self._extend(inc, rows, row)
                if self._lasting(inc):
                    belong[row] = inc.offset
                    events.append(self._finish(key, "new_normal", row))
                    self._held.add(key)
                    return
                if inc.flagged % self.update_every == 0:
                    events.append(self._message("updated", key, inc, row))
            belong[row] = inc.offset
            pos = r + 1
        if inc is not None:
            self._gap(key, inc, own[pos:], belong, events)

    def _gap(self, key: str, inc: _Open, gap: I64, belong: I64,
             events: list[IncidentUpdate]) -> _Open | None:
        """Unflagged rows of an open incident: they count, and may resolve it."""
        need = self.quiet_records - inc.quiet
        if gap.size < need:
            belong[gap] = inc.offset
            inc.records += gap.size
            inc.quiet += gap.size
            return inc
        belong[gap[:need]] = inc.offset
        inc.records += need
        events.append(self._finish(key, "quiet", int(gap[need - 1])))
        return None

    def _lasting(self, inc: _Open) -> bool:
        return ((self.max_records is not None and inc.records >= self.max_records)
                or (self.max_seconds is not None and inc.end - inc.start >= self.max_seconds))

    def _new(self, rows: _Rows, row: int) -> _Open:
        acc = (np.zeros(len(self._names)) if rows.contrib is None
               else rows.contrib[row].astype(np.float64, copy=True))
        return _Open(offset=int(rows.offsets[row]), start=float(rows.times[row]),
                     end=float(rows.times[row]), peak=float(rows.grades[row]), records=1,
                     flagged=1, quiet=0, acc=acc)

    @staticmethod
    def _extend(inc: _Open, rows: _Rows, row: int) -> None:
        g = float(rows.grades[row])
        inc.peak = g if math.isnan(inc.peak) else (inc.peak if math.isnan(g) else max(inc.peak, g))
        inc.end = float(rows.times[row])
        inc.records += 1
        inc.flagged += 1
        inc.quiet = 0
        if rows.contrib is not None:
            if inc.acc.size != rows.contrib.shape[1]:
                inc.acc = np.zeros(rows.contrib.shape[1])
            inc.acc += rows.contrib[row]

    def _finish(self, key: str, reason: str, row: int) -> IncidentUpdate:
        inc = self._open.pop(key)
        return self._message("resolved", key, inc, row, reason)

    def _message(self, kind: Literal["opened", "updated", "resolved"], key: str, inc: _Open,
                 row: int, reason: str = "") -> IncidentUpdate:
        return IncidentUpdate(kind=kind, key=key, opened_offset=inc.offset, row=row,
                              start_time=inc.start, end_time=inc.end, peak_grade=inc.peak,
                              records=inc.records, flagged=inc.flagged,
                              top_sensors=self._top(inc.acc), reason=reason)

    def _top(self, acc: F64) -> tuple[tuple[str, float], ...]:
        total = float(acc.sum()) if acc.size == len(self._names) else 0.0
        if not total > 0:
            return ()
        best = np.argsort(-acc, kind="stable")[:TOP_SENSORS]
        return tuple((self._names[j], float(acc[j] / total)) for j in best.tolist() if acc[j] > 0)

    def get_state(self) -> dict[str, Any]:
        """Plain data: open incidents in LRU order (oldest first), one array per field."""
        inc = list(self._open.values())
        width = len(self._names)
        acc = np.array([i.acc if i.acc.size == width else np.zeros(width) for i in inc],
                       dtype=np.float64).reshape(len(inc), width)
        return {
            "keys": list(self._open), "sensor_names": list(self._names),
            "offset": np.array([i.offset for i in inc], dtype=np.int64),
            "time": np.array([[i.start, i.end] for i in inc], dtype=np.float64).reshape(-1, 2),
            "peak": np.array([i.peak for i in inc], dtype=np.float64),
            "counts": np.array([[i.records, i.flagged, i.quiet] for i in inc],
                               dtype=np.int64).reshape(-1, 3),
            "acc": acc, "held": sorted(self._held),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_state` returned."""
        self._names = tuple(str(n) for n in state["sensor_names"])
        self._held = {str(k) for k in state.get("held", [])}
        off, tm = np.asarray(state["offset"], np.int64), np.asarray(state["time"], np.float64)
        peak, cnt = np.asarray(state["peak"], np.float64), np.asarray(state["counts"], np.int64)
        acc = np.asarray(state["acc"], np.float64).reshape(off.size, len(self._names))
        self._open = OrderedDict(
            (str(k), _Open(int(off[i]), float(tm[i, 0]), float(tm[i, 1]), float(peak[i]),
                           int(cnt[i, 0]), int(cnt[i, 1]), int(cnt[i, 2]), acc[i].copy()))
            for i, k in enumerate(state["keys"])
        )
