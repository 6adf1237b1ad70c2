"""One partition's step -> the values to publish: alerts, dead letters, events, a decision.

The service, the topic replay and the file backtest all assemble their outputs here
(through :class:`stream_ae.processor.PartitionProcessor`), so they make the same alerts
and dead letters for the same records. Encoding to bytes is :mod:`stream_ae.encode`'s job,
publishing the sinks'.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

import numpy as np

from stream_ae.decode import Decoded, dead_letter
from stream_ae.records import (
    Alert,
    DeadLetter,
    DriftEvent,
    Incident,
    RawBlock,
    SensorContribution,
    SourcePosition,
    StepResult,
)


def incident_id(topic: str, partition: int, opened_offset: int) -> str:
    """Deterministic id of an incident: its first flagged record's ``topic/partition/offset``
    plus ``/incident``.

    >>> incident_id("sensors", 3, 40)
    'sensors/3/40/incident'
    """
    return f"{topic}/{partition}/{opened_offset}/incident"


def message_id(pos: SourcePosition) -> str:
    """Deterministic id of the output derived from a source record: ``topic/partition/offset``.

    >>> message_id(SourcePosition("sensors", 3, 42))
    'sensors/3/42'
    """
    return f"{pos.topic}/{pos.partition}/{pos.offset}"


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A drift or regime event with the source record it happened at."""

    event: DriftEvent
    position: SourcePosition
    model_version: int


@dataclass(frozen=True)
class Decision:
    """What happened to offsets ``[start, end)`` of one partition, as published in one batch."""

    topic: str
    partition: int
    start: int
    end: int
    alerts: tuple[int, ...]
    dead_letters: tuple[int, ...]


@dataclass
class Outputs:
    """What one batch publishes (one partition's step or several), in order."""

    alerts: list[Alert] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    incidents: list[Incident] = field(default_factory=list)

    def extend(self, other: Outputs) -> None:
        self.alerts += other.alerts
        self.dead_letters += other.dead_letters
        self.events += other.events
        self.decisions += other.decisions
        self.incidents += other.incidents

    def empty(self) -> bool:
        return not (self.alerts or self.dead_letters or self.events or self.decisions
                    or self.incidents)


def build_alerts(decoded: Decoded, result: StepResult, topic: str, partition: int,
                 now: float, from_offset: int = 0) -> list[Alert]:
    """One alert per flagged row of a partition's step at or past ``from_offset`` (rows
    below it are catch-up replays that were published before), in row order."""
    rows = np.flatnonzero(result.is_anomaly & (decoded.offsets >= from_offset))
    raw = decoded.raw_values if decoded.raw_values is not None else decoded.batch.values
    out = []
    for r in map(int, rows):
        pos = SourcePosition(topic, partition, int(decoded.offsets[r]))
        inc = int(result.incident[r]) if result.incident is not None else -1
        out.append(Alert(
            alert_id=message_id(pos), key=decoded.batch.keys[r],
            timestamp=float(decoded.batch.timestamps[r]),
            features=dict(zip(decoded.names, raw[r].tolist(), strict=True)),
            score=float(result.scores[r]), threshold=float(result.thresholds[r]),
            top_features=_top(result, r), model_version=result.version(r),
            position=pos, detected_at=now,
            drift_recent=bool(result.drift_recent[r]) if result.drift_recent is not None
            else False,
            grade=float(result.grades[r]) if result.grades is not None else 0.0,
            incident_id=incident_id(topic, partition, inc) if inc >= 0 else "",
        ))
    return out


def _top(result: StepResult, r: int) -> tuple[SensorContribution, ...]:
    """The row's sensor attribution; engines without one: the inputs with the largest error
    (observed/expected unknown)."""
    if r in result.explanations:
        return result.explanations[r]
    total = float(np.nansum(result.feature_errors[r])) or 1.0
    return tuple(SensorContribution(n, math.nan, math.nan, "high", e / total, 0)
                 for n, e in result.top_features(r))


def build_incidents(decoded: Decoded, result: StepResult, topic: str, partition: int,
                    now: float, from_offset: int = 0) -> list[Incident]:
    """The incident lifecycle messages of a partition's step (rows at or past
    ``from_offset``), in row order."""
    out = []
    for ch in result.incidents:
        offset = int(decoded.offsets[ch.row])
        if offset >= from_offset:
            out.append(Incident(incident_id(topic, partition, ch.opened_offset), ch,
                                SourcePosition(topic, partition, offset), result.version(ch.row),
                                now))
    return out


def rejected_dead_letters(block: RawBlock, decoded: Decoded, result: StepResult,
                          from_offset: int = 0) -> list[DeadLetter]:
    """Rows the engine rejected (at or past ``from_offset``) as dead letters."""
    out = []
    for row, reason in result.rejected:
        offset = int(decoded.offsets[row])
        if offset >= from_offset:
            i = bisect.bisect_left(block.offsets, offset)
            out.append(dead_letter(block, i, f"rejected:{reason}", "rejected by the engine"))
    return out


def assemble(block: RawBlock, decoded: Decoded, result: StepResult | None, from_offset: int,
             now: float) -> Outputs:
    """The outputs of one partition's step for offsets at or past ``from_offset``."""
    out = Outputs()
    dead = [d for d in decoded.dead_letters if d.original.position.offset >= from_offset]
    if result is not None:
        out.alerts = build_alerts(decoded, result, block.topic, block.partition, now,
                                  from_offset)
        out.incidents = build_incidents(decoded, result, block.topic, block.partition, now,
                                        from_offset)
        dead = rejected_dead_letters(block, decoded, result, from_offset) + dead
        out.events = [
            EventRecord(e, SourcePosition(block.topic, block.partition,
                                          int(decoded.offsets[e.batch_index])),
                        result.version(e.batch_index))
            for e in result.drift_events if decoded.offsets[e.batch_index] >= from_offset]
    out.dead_letters = dead
    end = block.offsets[-1] + 1
    if end > from_offset:
        dead_offsets = sorted(d.original.position.offset for d in dead)
        alerts = tuple(a.position.offset for a in out.alerts if a.position is not None)
        out.decisions.append(Decision(block.topic, block.partition,
                                      max(block.offsets[0], from_offset), end, alerts,
                                      tuple(dead_offsets)))
    return out
