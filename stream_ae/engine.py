"""Engine: features -> score -> threshold -> drift -> gated learning. Pure, no I/O.

Learned state (scaler, model, threshold value, drift adaptation, regime policy)
changes only at *boundaries*: deterministic counts of accepted records. Between
two boundaries every record is scored with the state frozen at the last one, and
the records are buffered; at the boundary they update the threshold window, the
scaler and the replay buffer, and the model takes its learning steps. Boundaries
ramp up: ``stride_k = min(stride, max(16, (n - n0) // 8))`` records after the
boundary at ``n`` accepted records, where ``n0`` is the record count at the last
drift or regime change (0 at the start). The end of warm-up is always a
boundary, and so is a record at which the drift detector fires (the detector is
fed record by record, so where it fires is a function of the record sequence
alone). So the results for a record sequence do not depend on how it is split
into ``step`` calls, and snapshot -> restore -> continue equals an
uninterrupted run.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import structlog
from pydantic import ValidationError

from stream_ae import snapshot as snap
from stream_ae.config import EngineConfig, learned_state_diff
from stream_ae.detect.decide import DecisionLayer
from stream_ae.detect.drift import DriftMonitor
from stream_ae.detect.threshold import RollingQuantileThreshold
from stream_ae.errors import ConfigError, ConfigMismatchError, SnapshotError
from stream_ae.model.online import OnlineAutoencoder, RunningScaler
from stream_ae.records import (
    Batch,
    DriftEvent,
    IncidentChange,
    SensorContribution,
    StepResult,
)
from stream_ae.types import F32, F64, I64
from stream_ae.windowing import FeatureStage, RecordWindow, feature_names

STATE_SCHEMA = 4  # 2: decision state (calibration, evidence, incidents), quarantine, keys;
# 3: the pending window keeps each row's tail probability (column "p"); 4: the evidence keeps
# the peak of each key's run above its level (column "peak")
#: schemas this build restores: a schema-3 snapshot (before the run peaks) continues with
#: each key's peak at its current evidence (an upgrade keeps every learned state)
_READS = (3, STATE_SCHEMA)
_LOG_EPS = 1e-12
_MIN_STRIDE = 16

log = structlog.get_logger(__name__)


@dataclass
class _Out:
    """Per-row outputs of one ``step`` call, filled chunk by chunk."""

    scores: F64
    thresholds: F64
    flags: npt.NDArray[np.bool_]
    warmup: npt.NDArray[np.bool_]
    errors: F32
    batch: Batch
    base: int
    grades: F64
    incident: I64
    versions: I64
    ids: I64
    events: list[DriftEvent] = field(default_factory=list)
    incidents: list[IncidentChange] = field(default_factory=list)
    explanations: dict[int, tuple[SensorContribution, ...]] = field(default_factory=dict)

    @classmethod
    def empty(cls, batch: Batch, n_features: int, base: int) -> _Out:
        n = len(batch)
        return cls(
            scores=np.full(n, np.nan),
            thresholds=np.full(n, np.nan),
            flags=np.zeros(n, dtype=np.bool_),
            warmup=np.zeros(n, dtype=np.bool_),
            errors=np.full((n, n_features), np.nan, dtype=np.float32),
            batch=batch,
            base=base,
            grades=np.full(n, np.nan),
            incident=np.full(n, -1, dtype=np.int64),
            versions=np.zeros(n, dtype=np.int64),
            ids=(batch.ids if batch.ids is not None
                 else np.arange(base, base + n, dtype=np.int64)),
        )

    def event(self, kind: str, detector: str, row: int, levels: tuple[float, float],
              action: str) -> DriftEvent:
        ev = DriftEvent(kind=kind, detector=detector, record_index=self.base + row,
                        batch_index=row, timestamp=float(self.batch.timestamps[row]),
                        level_before=levels[0], level_after=levels[1], action=action)
        self.events.append(ev)
        return ev


def bottleneck_for(n_inputs: int) -> int:
    """The default code width: a quarter of the inputs, at least 1, always fewer than the
    inputs (a code as wide as its input reconstructs it exactly: no signal).

    >>> [bottleneck_for(n) for n in (1, 2, 9, 72)]
    [1, 1, 2, 18]
    """
    return max(1, min(n_inputs // 4, n_inputs - 1))


class Engine:
    """The streaming detector: call ``step`` with batches in arrival order.

    Parameters
    ----------
    config
        The engine section of the settings.
    raw_feature_names
        Raw feature columns of the batches, in order.

    Examples
    --------
    >>> import numpy as np
    >>> from stream_ae.config import EngineConfig, TrainingConfig
    >>> cfg = EngineConfig(training=TrainingConfig(warmup=200, window=256, batch_size=64,
    ...                                            warmup_epochs=5))
    >>> eng = Engine(cfg, ["a", "b"])
    >>> rng = np.random.default_rng(0)
    >>> res = eng.step(Batch.from_arrays(rng.normal(size=(300, 2))))
    >>> (int(res.warmup.sum()), eng.records_seen, eng.feature_names[:3], eng.lags)
    (200, 300, ('a', 'b', 'a_lag1'), 8)
    >>> eng2 = Engine.restore(eng.snapshot())
    >>> x = Batch.from_arrays(rng.normal(size=(50, 2)))
    >>> bool(np.array_equal(eng.step(x).scores, eng2.step(x).scores))
    True
    """

    _last_event: int  # record index of the latest drift/regime event (-1: none yet)

    def __init__(self, config: EngineConfig, raw_feature_names: Sequence[str]) -> None:
        self.config = config
        self.raw_feature_names = tuple(raw_feature_names)
        # config and names are fixed for the engine's life: the names once, not per step
        self._feature_names = feature_names(self.raw_feature_names, self.lags,
                                            config.features.diffs)
        self._built = False

    # ------------------------------------------------------------------ public API
    @property
    def feature_names(self) -> tuple[str, ...]:
        """Model-input column names (readings, lags, differences)."""
        return self._feature_names

    @property
    def lags(self) -> int:
        """Lag blocks of the model inputs (``features.lags``, resolved for this width)."""
        return self.config.features.lags_for(len(self.raw_feature_names))

    @property
    def records_seen(self) -> int:
        """Rows passed to ``step`` (rejected ones included)."""
        return self._records_seen if self._built else 0

    @property
    def model_version(self) -> int:
        """Learning (optimiser) steps taken."""
        return self._model.n_steps if self._built else 0

    @property
    def threshold(self) -> float:
        """The threshold now in force (NaN while not warm)."""
        return self._thr.value if self._built else math.nan

    def step(self, batch: Batch) -> StepResult:
        """Score, flag and (at boundaries) learn from a batch; results in batch order."""
        self._check_batch(batch)
        if not self._built:
            self._build()
        out = _Out.empty(batch, self._feat.n_features, self._records_seen)
        feats, rows, rejected = self._feat.transform(batch.keys, batch.values)
        pos = 0
        while pos < rows.size:
            k = min(rows.size - pos, self._next_boundary - self._n_scored)
            pos += self._score_chunk(feats[pos : pos + k], rows[pos : pos + k], out)
            if self._n_scored == self._next_boundary:
                self._boundary(out, int(rows[pos - 1]))
        for r, _ in rejected:
            out.thresholds[r] = self._thr.value
            out.versions[r] = self._model.n_steps
        out.events.sort(key=lambda e: e.record_index)  # a drift ends a chunk before its
        # decisions are made: order by record, whatever the chunks
        recent = self._drift_recent(out)
        self._records_seen += len(batch)
        return StepResult(
            scores=out.scores, thresholds=out.thresholds, is_anomaly=out.flags,
            warmup=out.warmup, feature_errors=out.errors, feature_names=self.feature_names,
            drift_events=tuple(out.events), rejected=rejected, model_version=self.model_version,
            grades=out.grades, incident=out.incident, incidents=tuple(out.incidents),
            model_versions=out.versions, drift_recent=recent, explanations=out.explanations,
        )

    def _drift_recent(self, out: _Out) -> npt.NDArray[np.bool_]:
        """Rows within ``decision.drift_recent_records`` records after a drift/regime event
        (a function of the record sequence alone)."""
        n = len(out.batch)
        idx = np.arange(out.base, out.base + n)
        marks = np.array([self._last_event] + [e.record_index for e in out.events], np.int64)
        marks = np.sort(marks[marks >= 0])
        if n and len(out.events):
            self._last_event = int(marks[-1])
        if not marks.size:
            return np.zeros(n, dtype=np.bool_)
        pos = np.searchsorted(marks, idx, side="right") - 1
        last = np.where(pos >= 0, marks[np.maximum(pos, 0)], -1)
        recent: npt.NDArray[np.bool_] = (last >= 0) & (
            idx - last <= self.config.decision.drift_recent_records)
        return recent

    def snapshot(self) -> bytes:
        """The whole state as bytes (an immutable copy); see :mod:`stream_ae.snapshot`."""
        tree: dict[str, Any] = {
            "schema": STATE_SCHEMA,
            "config": self.config.model_dump(mode="json"),
            "raw_feature_names": list(self.raw_feature_names),
            "built": self._built,
        }
        if not self._built:
            return snap.encode(tree, {})
        tree.update(self._state_tree())
        return snap.encode(tree, {"model": self._model.to_bytes()})

    @classmethod
    def restore(cls, blob: bytes, config: EngineConfig | None = None) -> Engine:
        """An engine from :meth:`snapshot` bytes, under the stored configuration or (given
        ``config``) under ``config``: settings that are not learned state take its values;
        ``ConfigMismatchError`` names the learned-state ones it contradicts
        (``stream_ae.config.learned_state_diff``). ``SnapshotError`` when the bytes are not
        a valid snapshot."""
        tree, blobs = snap.decode(blob)
        stored, names = stored_config(tree)
        eng = cls(stored if config is None else _continuing(stored, names, config), names)
        if tree.get("built"):
            eng._build()
            eng._load_state(tree, blobs)
            if eng.config.threshold != stored.threshold:
                eng._thr.refresh()  # the new decision settings apply from the first record
        return eng

    # ------------------------------------------------------------------ build / checks
    def _check_batch(self, batch: Batch) -> None:
        if not self.raw_feature_names:
            raise ConfigError("the engine needs at least one feature name")
        if batch.values.ndim != 2 or batch.values.shape[1] != len(self.raw_feature_names):
            raise ConfigError(
                f"batch has {batch.values.shape[1:]} columns, "
                f"engine expects {len(self.raw_feature_names)} ({self.raw_feature_names})"
            )

    def _build(self) -> None:
        c = self.config
        f, m, t, tr = c.features, c.model, c.threshold, c.training
        self._feat = FeatureStage(len(self.raw_feature_names), self.lags, f.diffs, f.missing,
                                  f.max_keys)
        n_in = self._feat.n_features
        code = m.bottleneck or bottleneck_for(n_in)
        self._model = OnlineAutoencoder(n_in, m.hidden, code, m.activation, m.dropout,
                                        m.weight_decay, m.lr, m.seed)
        self._scaler = RunningScaler(n_in, tr.scaler_memory)
        self._thr = RollingQuantileThreshold(t.q, t.window, t.multiplier, t.floor, t.mode, t.k,
                                             t.min_count)
        self._drift = (None if c.drift.detector == "none"
                       else DriftMonitor(c.drift.detector, c.drift.delta, c.drift.history, m.seed,
                                         math.log(c.drift.min_ratio) if c.drift.report_only
                                         else -math.inf))
        self._dec = DecisionLayer(c.decision, c.regime, self.raw_feature_names, self.lags, f.diffs,
                                  f.max_keys)
        self._replay = RecordWindow(tr.window)
        self._warm = RecordWindow(max(1, tr.warmup))
        self._warm_keys: list[str] = []
        self._quar = RecordWindow(max(tr.window, 4 * c.regime.after_records))
        self._quar_keys: list[str] = []
        self._pend = RecordWindow(tr.stride)
        self._pend_keys: list[str] = []
        self._last_event = -1
        self._rng = np.random.default_rng(m.seed)
        self._records_seen = 0
        self._n_scored = 0
        self._boost_left = 0
        self._drift_at = -1
        self._ramp_origin = 0
        self._next_boundary = self._schedule(0)
        self._built = True

    def _schedule(self, n: int) -> int:
        tr = self.config.training
        nxt = n + min(tr.stride, max(_MIN_STRIDE, (n - self._ramp_origin) // 8))
        return min(nxt, tr.warmup) if n < tr.warmup else nxt

    # ------------------------------------------------------------------ scoring
    def _score_chunk(self, x: F32, rows: I64, out: _Out) -> int:
        """Score rows with the frozen state; returns how many were consumed. A drift
        detection ends the chunk: its record becomes a boundary and the rows after it
        are scored again, after the adaptation (the next loop iteration)."""
        xs = self._scaler.transform(x)
        mse, cols = self._model.score_many(xs)
        warm = self._n_scored < self.config.training.warmup
        used = rows.size
        if not warm and self._drift is not None:
            used = self._feed_drift(mse, rows, out)
        r, mse, cols = rows[:used], mse[:used], cols[:used]
        keys = [out.batch.keys[i] for i in r.tolist()]
        if warm:
            flags = np.zeros(used, np.bool_)
            out.thresholds[r] = math.nan
            p = np.ones(used)  # never read: warm-up rows teach no calibration
        else:
            flags, p = self._decide(keys, mse, cols, r, out)
            if flags.any():
                self._explain(xs[:used], x[:used], cols, flags, r, out)
        out.scores[r], out.flags[r] = mse, flags
        out.warmup[r], out.errors[r] = warm, cols
        out.versions[r] = self._model.n_steps
        self._pend.push(x=x[:used], s=mse, f=flags, p=p)
        self._pend_keys += keys
        self._n_scored += used
        return used

    def _decide(self, keys: list[str], mse: F64, cols: F32, r: I64, out: _Out
                ) -> tuple[npt.NDArray[np.bool_], F64]:
        thr = self._thr.value  # changes only at boundaries: frozen in between
        legacy = None
        if self.config.decision.mode != "budget":
            legacy = (mse > thr) if not math.isnan(thr) else np.zeros(mse.size, np.bool_)
        d = self._dec.decide(keys, mse, out.batch.timestamps[r], out.ids[r], cols, legacy)
        out.grades[r], out.incident[r] = d.grades, d.incident
        out.thresholds[r] = thr if d.thresholds is None else d.thresholds
        for u in d.updates:
            row = int(r[u.row])
            out.incidents.append(replace(u, row=row))
            if u.reason == "new_normal":
                ev = out.event("regime_change", "new_normal", row,
                               (self._dec.typical_score(u.key), float(mse[u.row])),
                               "relearn_key")
                log.info("regime_change", key=u.key, record_index=ev.record_index,
                         incident_records=u.records)
        return d.flags, d.p

    def _explain(self, xs: F32, x: F32, cols: F32, flags: npt.NDArray[np.bool_], r: I64,
                 out: _Out) -> None:
        """Sensor-level attribution of the flagged rows: observed and expected (the
        reconstruction of the current readings, in the sensors' own units)."""
        idx = np.flatnonzero(flags)
        n_raw = len(self.raw_feature_names)
        expected = self._scaler.inverse(self._model.reconstruct(xs[idx])[:, :n_raw],
                                        slice(0, n_raw))
        att = self._dec.attribution
        for j, i in enumerate(idx.tolist()):
            out.explanations[int(r[i])] = tuple(att.explain(cols[i], x[i, :n_raw], expected[j]))

    def _feed_drift(self, mse: F64, rows: I64, out: _Out) -> int:
        assert self._drift is not None
        d = self.config.drift
        hit, used = self._drift.update_until(np.log(mse + _LOG_EPS))
        if hit is None:
            return used
        self._next_boundary = self._n_scored + used
        self._drift_at = len(self._pend) + hit.index
        if not hit.significant:
            return used  # a fall or a small rise (report-only): the detector restarted
        levels = (math.exp(hit.level_before), math.exp(hit.level_after))
        action = ("report" if d.report_only  # the defaults: learning goes on as scheduled
                  else "lr_boost" + ("+rewarm_threshold" if d.rewarm_threshold else ""))
        ev = out.event("drift", d.detector, int(rows[hit.index]), levels, action)
        log.info("drift_detected", record_index=ev.record_index,
                 level_before=ev.level_before, level_after=ev.level_after)
        return used

    # ------------------------------------------------------------------ boundaries
    def _boundary(self, out: _Out, row: int) -> None:
        x, s, f, p = (self._pend.column(c) for c in ("x", "s", "f", "p"))
        f = f.astype(np.bool_)
        tr = self.config.training
        if self._n_scored <= tr.warmup:
            self._scaler.update(x)
            self._warm.push(x=x, s=s)
            self._warm_keys = (self._warm_keys + self._pend_keys)[-self._warm.size:]
            if self._n_scored == tr.warmup:
                self._finish_warmup()
            else:
                self._learn(self._warm, tr.steps_per_stride, clip=False)
        else:
            self._absorb(x, s, p, f)
            self._adapt_to_drift(s)
            extra = self._relearn_held()
            self._learn(self._replay, tr.steps_per_stride + extra, clip=True)
        self._pend.clear()
        self._pend_keys = []
        self._drift_at = -1
        self._next_boundary = self._schedule(self._n_scored)

    def _absorb(self, x: F32, s: F64, p: F64, f: npt.NDArray[np.bool_]) -> None:
        """Threshold window, regime window, and (through the gate) scaler and replay buffer."""
        if self.config.threshold.flagged == "capped":
            # at the statistic, not the threshold: a multiplier > 1 would otherwise ratchet
            # the threshold up by that factor at every boundary of a long alarm run
            s_in = np.where(f, self._thr.statistic, s) if f.any() else s
        else:
            s_in = s
        self._thr.update(s_in)
        self._dec.absorb(self._pend_keys, s, p, f)
        gated = self.config.training.gate == "threshold"
        keep = ~f if gated else np.ones_like(f)
        self._scaler.update(x[keep])
        self._replay.push(x=x[keep], s=s[keep])
        if gated and f.any():  # flagged records wait here: a key's new normal learns them
            self._quar.push(x=x[f], s=s[f])
            self._quar_keys = (self._quar_keys + [k for k, fl in zip(
                self._pend_keys, f.tolist(), strict=True) if fl])[-self._quar.size:]

    def _adapt_to_drift(self, s: F64) -> None:
        if self._drift_at < 0:
            return
        d = self.config.drift
        if d.report_only:
            return  # report-only: the event is out, learning goes on as scheduled
        self._boost_left = d.boost_steps
        self._ramp_origin = self._n_scored
        if d.rewarm_threshold:
            self._thr.reset()
            self._thr.update(s[self._drift_at + 1 :])

    def _relearn_held(self) -> int:
        """Keys whose incident became their new normal: their quarantined records join the
        replay buffer and the scaler, their calibration re-bases on those scores; returns
        the extra learning steps to take now."""
        held = self._dec.held
        if not held:
            return 0
        keys = np.array(self._quar_keys, dtype=object)
        mine = np.isin(keys, held) if keys.size else np.zeros(0, np.bool_)
        x, s = self._quar.column("x"), self._quar.column("s")
        for key in held:
            k = keys == key if keys.size else np.zeros(0, np.bool_)
            self._dec.rebase(key, s[k][-self.config.regime.after_records:])
        if mine.any():
            self._scaler.update(x[mine])
            self._replay.push(x=x[mine], s=s[mine])
            rest = ~mine
            self._quar.clear()
            self._quar.push(x=x[rest], s=s[rest])
            self._quar_keys = [k for k, m in zip(self._quar_keys, mine.tolist(), strict=True)
                               if not m]
        # the partition's learning schedule goes on: one key's new normal is not a change of
        # the whole stream (restarting the boundary ramp per key made learning 14x busier)
        return self.config.regime.relearn_steps

    def _finish_warmup(self) -> None:
        """Fit on the warm-up records; the threshold starts from held-out scores."""
        tr = self.config.training
        x = self._warm.column("x")
        n = x.shape[0]
        hold = int(n * tr.holdout) if n >= 10 else 0
        xs = self._scaler.transform(x)
        self._fit_warmup(xs[: n - hold], tr.warmup_epochs)
        init, _ = self._model.score_many(xs[n - hold :] if hold else xs)
        fitted, _ = self._model.score_many(xs[: n - hold]) if hold else (init, None)
        if hold:
            self._fit_warmup(xs, max(1, round(tr.warmup_epochs * tr.holdout)))
        self._thr.prime(init)
        # the calibration starts from every warm-up score: the held-out ones and, so that a
        # short warm-up still leaves a tail to fit, the in-sample ones of the first fit
        both = np.concatenate([fitted, init]) if hold else init
        self._dec.prime(self._warm_keys[-n:][: both.size], both)
        self._warm_keys = []
        self._replay.push(x=x, s=self._model.score_many(xs)[0])
        self._warm = RecordWindow(1)

    # ------------------------------------------------------------------ learning
    def _fit_warmup(self, xs: F32, epochs: int) -> None:
        if self.config.training.warmup_fit == "pca" and self._model.is_linear and len(xs) > 1:
            self._model.fit_pca(xs)
        else:
            self._epochs(xs, epochs)

    def _epochs(self, xs: F32, epochs: int) -> None:
        bs = self.config.training.warmup_batch_size
        for _ in range(epochs):
            perm = self._rng.permutation(xs.shape[0])
            for start in range(0, xs.shape[0], bs):
                self._model.learn_many(xs[perm[start : start + bs]])

    def _learn(self, window: RecordWindow, steps: int, clip: bool) -> None:
        if len(window) == 0 or steps == 0:
            return
        x, s = window.column("x"), window.column("s")
        bs = self.config.training.batch_size
        cap = self._thr.quantile(self.config.training.clip_quantile) if clip else math.nan
        boost = self.config.drift.lr_boost
        for _ in range(steps):
            idx = (np.arange(x.shape[0]) if x.shape[0] <= bs
                   else self._rng.choice(x.shape[0], bs, replace=False))
            w = None if math.isnan(cap) else np.minimum(1.0, cap / np.maximum(s[idx], _LOG_EPS))
            scale = boost if self._boost_left > 0 else 1.0
            self._model.learn_many(self._scaler.transform(x[idx]), w, scale)
            self._boost_left = max(0, self._boost_left - 1)

    # ------------------------------------------------------------------ state
    def _parts(self) -> dict[str, Any]:
        parts: dict[str, Any] = {
            "features": self._feat, "scaler": self._scaler, "threshold": self._thr,
            "replay": self._replay, "warm": self._warm, "quarantine": self._quar,
            "pending": self._pend, "decision": self._dec,
        }
        if self._drift is not None:
            parts["drift"] = self._drift
        return parts

    def _state_tree(self) -> dict[str, Any]:
        counters = {
            "records_seen": self._records_seen, "n_scored": self._n_scored,
            "next_boundary": self._next_boundary, "boost_left": self._boost_left,
            "drift_at": self._drift_at,
            "warm_size": self._warm.size, "ramp_origin": self._ramp_origin,
            "last_event": self._last_event,
        }
        parts = {k: v.get_state() for k, v in self._parts().items()}
        keys = {"warm": self._warm_keys, "quarantine": self._quar_keys,
                "pending": self._pend_keys}
        return {"counters": counters, "rng": self._rng.bit_generator.state, "parts": parts,
                "keys": keys}

    def _load_state(self, tree: dict[str, Any], blobs: dict[str, bytes]) -> None:
        try:
            c = tree["counters"]
            self._records_seen, self._n_scored = int(c["records_seen"]), int(c["n_scored"])
            self._next_boundary, self._boost_left = int(c["next_boundary"]), int(c["boost_left"])
            self._drift_at = int(c["drift_at"])
            self._warm = RecordWindow(int(c["warm_size"]))
            self._ramp_origin = int(c["ramp_origin"])
            self._last_event = int(c["last_event"])
            keys = tree["keys"]
            self._warm_keys = [str(k) for k in keys["warm"]]
            self._quar_keys = [str(k) for k in keys["quarantine"]]
            self._pend_keys = [str(k) for k in keys["pending"]]
            self._rng.bit_generator.state = tree["rng"]
            for name, part in self._parts().items():
                part.set_state(tree["parts"][name])
            self._model.load_bytes(blobs["model"])
            self._check_shapes()
        except SnapshotError:
            raise
        except Exception as exc:  # translated at the edge: any bad field is a bad snapshot
            raise SnapshotError(f"snapshot state does not fit its config: {exc!r}") from exc

    def _check_shapes(self) -> None:
        n_in = self._feat.n_features
        for w in (self._replay, self._quar, self._pend, self._warm):
            if len(w) and w.column("x").shape[1] != n_in:
                raise SnapshotError(f"stored records have the wrong width (expected {n_in})")
        if self._scaler.get_state()["mean"].shape != (n_in,):
            raise SnapshotError("stored scaler has the wrong width")

    # ------------------------------------------------------------------ side-effect-free scoring
    def score_only(self, batch: Batch) -> StepResult:
        """Score and decide a batch with the current state, changing nothing.

        What ``step`` would return for these rows if no boundary fell inside the batch: the
        same scaler, model, calibration and threshold; the per-key lags, evidence and
        incidents continued from *copies* (rows of the batch see earlier rows of the same
        batch); no drift detection, no learning. A fresh engine scores with its untrained
        model, as the first ``step`` would. For ``score_one``/``decision_function`` facades.

        Examples
        --------
        >>> import numpy as np
        >>> from stream_ae.config import EngineConfig, TrainingConfig
        >>> eng = Engine(EngineConfig(training=TrainingConfig(warmup=100, warmup_epochs=2)), ["a"])
        >>> x = Batch.from_arrays(np.arange(10, dtype=np.float32).reshape(-1, 1))
        >>> before = eng.snapshot()
        >>> s = eng.score_only(x)
        >>> (eng.snapshot() == before, bool(np.array_equal(s.scores, eng.step(x).scores)))
        (True, True)
        """
        self._check_batch(batch)
        twin = copy.copy(self)  # shares the model, scaler and threshold: read-only below
        if not self._built:
            twin._build()
        else:
            # the parts a step changes while scoring, as copies
            twin._feat, twin._dec = copy.deepcopy(self._feat), copy.deepcopy(self._dec)
        twin._pend, twin._pend_keys = RecordWindow(self.config.training.stride), []
        twin._drift = None
        twin._next_boundary = twin._n_scored + len(batch) + 1  # no boundary: no learning
        return twin.step(batch)


def restore_under(blob: bytes, config: EngineConfig,
                  on_mismatch: Literal["fail", "reset", "keep_stored"] = "fail") -> Engine:
    """``Engine.restore(blob, config)``; when the stored learned state contradicts
    ``config``, 'keep_stored' keeps the snapshot's own configuration (logged), otherwise
    ``ConfigMismatchError`` propagates ('reset' is the caller's decision: a fresh engine)."""
    try:
        return Engine.restore(blob, config)
    except ConfigMismatchError as exc:
        if on_mismatch != "keep_stored":
            raise
        log.warning("checkpoint_config_mismatch", fields=list(exc.fields), action="keep_stored")
        return Engine.restore(blob)


def stored_config(tree: dict[str, Any]) -> tuple[EngineConfig, list[str]]:
    """The engine configuration and raw feature names a decoded snapshot tree was taken with."""
    if tree.get("schema") not in _READS:
        raise SnapshotError(f"engine state schema {tree.get('schema')!r}, "
                            f"this build reads {', '.join(map(str, _READS))}")
    try:
        return (EngineConfig.model_validate(tree["config"]),
                [str(n) for n in tree["raw_feature_names"]])
    except (ValidationError, KeyError, TypeError) as exc:
        raise SnapshotError(f"snapshot config is not valid: {exc}") from exc


def _continuing(stored: EngineConfig, names: Sequence[str], config: EngineConfig
                ) -> EngineConfig:
    """``config`` for a restored engine, or ``ConfigMismatchError`` naming what contradicts
    the stored state. Feature names inferred from the data count as the stored names."""
    if not stored.features.names:
        stored = stored.model_copy(update={"features": stored.features.model_copy(
            update={"names": tuple(names)})})
    fields = learned_state_diff(stored, config)
    if fields:
        raise ConfigMismatchError(fields)
    return config
