"""Scores -> decisions: calibrated grades, the false-alarm budget, evidence and incidents.

One :class:`DecisionLayer` per engine composes the pure components of :mod:`stream_ae.detect`:

1. :class:`~stream_ae.detect.calibrate.TailCalibrator` turns a score into ``p``, its tail
   probability under the recent normal scores of its key (peaks over threshold, GPD tail);
   ``grade = clip(-log10 p / grade_decades, 0, 1)``.
2. The budget ``false_alarm_rate`` (expected false flags per normal record) is split: a
   record is flagged on its own when ``p < point_share * rate``; and
3. :class:`~stream_ae.detect.evidence.EvidenceAccumulator` adds up surprise per key (a
   CUSUM of ``-ln p - k``), flagging while it is above the level ``h`` whose up-crossing
   rate under calibrated p-values is the rest of the budget
   (:func:`~stream_ae.detect.evidence.threshold_for_rate`). A sustained moderate excursion
   is found by (3), a single extreme record by (2); a single moderate noise crossing by
   neither. The evidence flags of a run (the records since the evidence was last ``h_iid``,
   the level for independent records, below ``h``) end once it has fallen ``h_iid`` below
   the run's peak: the fall is the CUSUM of a return to normal, and ending early costs
   recall only, never a false flag (see :meth:`DecisionLayer.decide`).
4. :class:`~stream_ae.detect.incidents.IncidentTracker` groups a key's flags into incidents
   (opened / updated / resolved after ``quiet_records`` quiet records); an incident that
   lasts ``regime.after_records`` records (or ``regime.after_seconds``) becomes the key's
   new normal: resolved with reason ``new_normal``, the key held (its flags dropped) until
   the engine has re-based it at its next learning boundary (:meth:`DecisionLayer.rebase`).

Calibration state changes only at the engine's boundaries (:meth:`absorb`); evidence and
incidents advance record by record, so decisions do not depend on batch splits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream_ae.config import DecisionConfig, RegimeConfig
from stream_ae.detect._keys import BatchKeys
from stream_ae.detect.attribution import SensorAttribution
from stream_ae.detect.calibrate import TailCalibrator, grade
from stream_ae.detect.evidence import EvidenceAccumulator, threshold_for_rate
from stream_ae.detect.incidents import IncidentTracker, IncidentUpdate
from stream_ae.types import F32, F64, I64, Bool
from stream_ae.windowing import RecordWindow

_LEVEL_MIN_VALUES = 1024  # evidence values of normal records before the level is learned


@dataclass(frozen=True)
class Decided:
    """Per-row decisions of one chunk."""

    flags: Bool
    grades: F64
    thresholds: F64 | None  # the score a single record of the key needs to be flagged on
    # its own (budget mode; None in the legacy modes, whose threshold is the engine's)
    p: F64  # tail probabilities (what the calibration learns from at the next boundary)
    incident: I64  # opened_offset of the row's incident, -1 for none
    updates: list[IncidentUpdate]


class DecisionLayer:
    """Grades, budgeted flags and incidents for one partition's scored records.

    Parameters
    ----------
    config, regime
        The decision and per-key regime settings.
    sensor_names, lags, diffs
        How model inputs fold into sensors (attribution of incidents).
    max_keys
        Keys whose calibration level, evidence and open incident are kept.
    """

    def __init__(self, config: DecisionConfig, regime: RegimeConfig,
                 sensor_names: Sequence[str], lags: int, diffs: bool, max_keys: int) -> None:
        self.config = config
        self.regime = regime
        self.sensor_names = tuple(sensor_names)
        self.lags = lags
        self.diffs = diffs
        self.max_keys = max_keys
        c = config
        self._alpha = c.point_share * c.false_alarm_rate
        self._rate_ev = (1.0 - c.point_share) * c.false_alarm_rate
        self._p_k = float(np.exp(-c.evidence_k))
        self._h_iid = threshold_for_rate(c.evidence_k, self._rate_ev)
        # the evidence of normal records only, to learn how often it runs high on this
        # stream (consecutive scores are correlated: lags share inputs, sensors drift)
        self._null = EvidenceAccumulator(k=c.evidence_k, cap=1e4, max_keys=max_keys)
        self._null_s = RecordWindow(c.calibration_window)
        self._null_new = 0
        self._cal = TailCalibrator(window=c.calibration_window, min_count=c.min_scores,
                                   key_min_count=c.key_min_records, max_keys=max_keys)
        self._ev = EvidenceAccumulator(k=c.evidence_k, max_keys=max_keys)
        self._set_level(self._h_iid)
        self._inc = IncidentTracker(
            c.quiet_records, c.update_every, max_keys,
            max_records=regime.after_records if regime.enabled else None,
            max_seconds=regime.after_seconds if regime.enabled else None)
        self.attribution = SensorAttribution(self.sensor_names, lags, diffs)

    @property
    def held(self) -> list[str]:
        """Keys whose new normal waits for :meth:`rebase`."""
        return self._inc.held

    def typical_score(self, key: str) -> float:
        """The key's typical normal score (``exp`` of its calibration level)."""
        return float(np.exp(self._cal.levels([key])[0]))

    def decide(self, keys: Sequence[str], scores: F64, times: F64, ids: I64, errors: F32,
               legacy: Bool | None = None) -> Decided:
        """Flags, grades and incidents of consecutive scored rows (advances evidence and
        incidents). ``legacy``: flags of the rolling threshold (modes quantile, mean_std)."""
        bk = BatchKeys(keys)
        p = self._cal.survival(bk, scores)
        grades = grade(p, self.config.grade_decades)
        thresholds = None
        if legacy is None:
            thresholds = self._cal.score_at(bk, self._alpha)
            s, fall = self._ev.update_run(bk, p)
            # while the evidence is high, the records that add to it (p < e^-k) are flagged,
            # until it has fallen h_iid below its run's peak: after a fault the evidence
            # drains from its cap for (cap - h) / (k - 1) records, and those with p < e^-k
            # were false flags. A run ends only h_iid below h (the runs of _ev.level), so
            # the evidence bobbing around h on its way down opens no new run
            flags = (p < self._alpha) | ((s > self._h) & (p < self._p_k) & (fall <= self._h_iid))
            flags &= ~self._echo(errors)
            # a key without a level of its own is read on the pooled level: learn it first
            flags &= self._cal.has_level(bk) & self._cal.is_warm
        else:
            flags = legacy.copy()
        contrib = self.attribution.sensor_errors(errors) if flags.any() else None
        names = self.sensor_names if contrib is not None else None
        incident, updates = self._inc.update(bk, flags, grades, times, ids, contrib, names)
        flags &= incident >= 0  # held keys: their new normal is being learned
        return Decided(flags, grades, thresholds, p, incident, updates)

    def _echo(self, errors: F32) -> Bool:
        """Rows whose error sits in their lagged inputs while the current readings carry less
        than half their share (1 / (lags + 1)): the echo of an anomaly already seen in an
        earlier record of the key. They stay part of its incident but raise no alert."""
        if self.lags == 0:
            return np.zeros(errors.shape[0], np.bool_)
        n_raw = len(self.sensor_names)
        with np.errstate(invalid="ignore", divide="ignore"):
            now = errors[:, :n_raw].sum(axis=1) / errors.sum(axis=1)
        echo: Bool = now < 0.5 / (self.lags + 1)
        return echo

    def absorb(self, keys: Sequence[str], scores: F64, p: F64, flags: Bool) -> None:
        """At a boundary: the scores of the stride teach the calibration, all but the
        extreme ones (``p`` below ten times the single-record budget). Leaving out every
        flagged score would censor the tail the fit extrapolates: a tail estimated too
        short flags more, which censors more, and the estimate spirals down; censoring
        only this far out (the top 0.05 % at the defaults) moves a fit of the top 2 %
        little, while anomalies just short of an alert stay out. The model never learns
        from flagged records (the training gate); the calibration learns from the moderate
        ones. ``p``: the tail probabilities :meth:`decide` gave these rows (the calibration
        changes only here, so they are what it would say now)."""
        bk = BatchKeys(keys)
        moderate = ~(p < 10 * self._alpha)
        # rows of a key without a level of its own were read on the pooled level and never
        # flagged (``decide``): they are learned whatever their p, so that the key gets its
        # level. Censoring them too deadlocked a stream whose keys outnumber the warm-up
        # (every key below key_min_records, every score extreme on the pooled level: the
        # calibration never learned again and nothing was ever flagged)
        learn = moderate | ~self._cal.has_level(bk)
        if moderate.any() and self._cal.is_warm:
            # the evidence level learns from every record but the extreme ones: leaving out
            # the records flagged on evidence would cut off the very tail it is set from
            self._learn_evidence_level(_subset(keys, bk, moderate), p[moderate])
        keep = learn & ~flags
        if keep.any():
            self._cal.update(_subset(keys, bk, keep), scores[keep])

    def _learn_evidence_level(self, keys: Sequence[str], p: F64) -> None:
        """The evidence level from the evidence of recent normal records: the stationary
        tail of a CUSUM is exponential, ``P(S > s) = q0 exp(-(s - s0) / mu)``, fitted above
        its 98 % quantile ``s0``; ``h`` is where that tail falls to the evidence share of the
        budget (never below the level for independent records, :func:`threshold_for_rate`).
        Correlated scores (shared lag inputs, slowly moving sensors) raise it."""
        s = self._null.update(keys, p)[-self._null_s.size:]
        self._null_s.push(s=s)
        n = len(self._null_s)
        self._null_new += s.size
        fitted_at = n - self._null_new  # values in the window at the last fit (0: none yet)
        first = n == s.size and n >= self.config.min_scores
        need = min(_LEVEL_MIN_VALUES, self._null_s.size)
        if not first and (n < need or self._null_new < min(4096, fitted_at)):
            # fits: when the first stride after warm-up brings min_scores values at once (an
            # eighth of a warm-up of 800 records or more; a first fit can only raise the
            # level), at 1024 values, as the window doubles, then one every 4096 values.
            # Below 1024 the 98 % quantile of correlated values and the ~20 excesses above
            # it are too loose: fits from the first few hundred values of SKAB's files
            # raise the level well above the independent-records one and lose recall.
            return
        self._null_new = 0
        window = self._null_s.column("s")
        s0 = float(np.quantile(window, 0.98))
        above = window[window > s0] - s0
        q0 = above.size / n
        mu = float(above.mean()) if above.size else 0.0
        h = s0 + mu * math.log(q0 / self._rate_ev) if q0 > self._rate_ev and mu > 0 else s0
        self._set_level(max(self._h_iid, float(h)))

    def _set_level(self, h: float) -> None:
        """The evidence level ``h``, the evidence's cap (``evidence_cap`` x ``h``) and the level
        its runs are counted above (``h_iid`` below ``h``)."""
        self._h = h
        self._ev.cap, self._ev.level = self.config.evidence_cap * h, h - self._h_iid

    def prime(self, keys: Sequence[str], scores: F64) -> None:
        """After warm-up: the held-out warm-up scores start the calibration."""
        self._cal.update(keys, scores)

    def rebase(self, key: str, scores: F64) -> None:
        """The key's new normal: its level from these recent scores, evidence reset,
        incidents allowed again."""
        self._cal.reset_key(key, scores)
        self._ev.reset(key)
        self._inc.release(key)

    def get_state(self) -> dict[str, Any]:
        return {"calibrator": self._cal.get_state(), "evidence": self._ev.get_state(),
                "incidents": self._inc.get_state(), "null": self._null.get_state(),
                "null_s": self._null_s.get_state(), "null_new": self._null_new, "h": self._h}

    def set_state(self, state: dict[str, Any]) -> None:
        self._cal.set_state(state["calibrator"])
        self._ev.set_state(state["evidence"])
        self._inc.set_state(state["incidents"])
        self._null.set_state(state["null"])
        self._null_s.set_state(state["null_s"])
        self._set_level(float(state["h"]))
        self._null_new = int(state["null_new"])


def _subset(keys: Sequence[str], bk: BatchKeys, mask: Bool) -> Sequence[str]:
    return bk if mask.all() else [k for k, ok in zip(keys, mask.tolist(), strict=True) if ok]
