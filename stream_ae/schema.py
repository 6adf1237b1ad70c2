"""Wire models of the published messages (pydantic) and their JSON Schemas.

Subscribers read alerts, incidents, events and decisions as JSON; every message carries
``schema_version`` and the headers ``stream-ae.schema-version`` and ``content-type``.
Version 2 (this one) added the calibrated ``grade``, the ``incident_id`` and sensor-level
``top_features`` to alerts, and the incident messages.
The service builds the JSON directly (:mod:`stream_ae.encode`, hot path); these models
define the contract, and the tests check that what the service writes validates here.

>>> sorted(alert_json_schema()["required"])[:3]
['alert_id', 'context', 'detected_at']
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION: Final = "2"


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SourceCoordinates(_Wire):
    """Where the input record came from."""

    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)


class FeatureContribution(_Wire):
    """One sensor's part in the anomaly: what it read, what the model expected, how much of
    the reconstruction error is its (lag and difference inputs folded into their sensor)."""

    name: str = Field(description="The sensor (a raw feature field).")
    observed: float | None = Field(description="The reading, in the sensor's own units.")
    expected: float | None = Field(description="The model's reconstruction of the reading, "
                                   "in the sensor's own units.")
    direction: Literal["high", "low"] = Field(description="observed above or below expected.")
    share: float = Field(ge=0.0, le=1.0, description="Share of the record's reconstruction "
                         "error (all its inputs: the reading, its lags and difference).")
    lag: int = Field(ge=0, description="Records back of the input that carried most of this "
                     "sensor's error (0: the current reading).")


class AlertContext(_Wire):
    """The detector's state when it flagged the record."""

    warmup: bool = Field(description="Always false: records in the warm-up are never flagged.")
    drift_recent: bool = Field(description="A drift or regime event fired within the last "
                               "engine.decision.drift_recent_records records of the partition.")


class AlertMessage(_Wire):
    """One flagged record on the alerts topic (message key = the record's sensor key).

    Examples
    --------
    >>> m = AlertMessage.model_validate({
    ...     "schema_version": "2", "alert_id": "s/0/7",
    ...     "source": {"topic": "s", "partition": 0, "offset": 7}, "key": "pump",
    ...     "event_time": 1.5, "features": {"t": 9.0}, "score": 3.0, "threshold": 1.0,
    ...     "grade": 0.7, "incident_id": "s/0/5/incident",
    ...     "top_features": [{"name": "t", "observed": 9.0, "expected": 1.2,
    ...                       "direction": "high", "share": 1.0, "lag": 0}],
    ...     "context": {"warmup": False, "drift_recent": False},
    ...     "model_version": 2, "detected_at": 2.0})
    >>> m.alert_id
    's/0/7'
    """

    schema_version: Literal["2"] = SCHEMA_VERSION
    alert_id: str = Field(description="Deterministic: '<topic>/<partition>/<offset>' of the "
                          "source record; a re-published alert has the same id and content.")
    source: SourceCoordinates
    key: str = Field(description="Sensor key (also the Kafka message key).")
    event_time: float | None = Field(description="Event time of the record, epoch seconds.")
    features: dict[str, float | None] = Field(description="The record's raw feature values.")
    score: float = Field(description="Anomaly score (reconstruction error, standardised).")
    threshold: float = Field(description="The score a single record of this key needs to be "
                             "flagged on its own (the false-alarm budget's score); records "
                             "below it are flagged by accumulated evidence.")
    grade: float = Field(ge=0.0, le=1.0, description="Calibrated surprise: -log10 of the "
                         "score's tail probability under the key's recent normal scores, "
                         "divided by 10 (0.5: a one-in-100,000 score; 1: one in 10^10).")
    incident_id: str = Field(description="The incident this alert belongs to (see the "
                             "incidents topic).")
    top_features: list[FeatureContribution] = Field(description="The sensors that carried "
                                                    "most of the error, largest first.")
    context: AlertContext
    model_version: int = Field(ge=0, description="Learning steps the model had taken.")
    detected_at: float = Field(description="Wall-clock time of the decision, epoch seconds.")


class EventMessage(_Wire):
    """A drift or regime-change event on the events topic.

    Examples
    --------
    >>> EventMessage.model_json_schema()["properties"]["kind"]["enum"]
    ['drift', 'regime_change']
    """

    schema_version: Literal["2"] = SCHEMA_VERSION
    event_id: str = Field(description="'<topic>/<partition>/<offset>/<kind>', deterministic.")
    kind: Literal["drift", "regime_change"]
    detector: str
    source: SourceCoordinates = Field(description="The record at which the event fired.")
    event_time: float | None
    record_index: int = Field(ge=0, description="Records the partition's engine had seen.")
    level_before: float | None
    level_after: float | None
    action: str = Field(description="What the engine did (e.g. boost learning rate, rewarm).")
    model_version: int = Field(ge=0)
    detected_at: float


class SensorShare(_Wire):
    """A sensor's share of an incident's reconstruction error."""

    name: str
    share: float = Field(ge=0.0, le=1.0)


class IncidentMessage(_Wire):
    """A lifecycle message of an incident on the incidents topic (key = the sensor key).

    Flags of one key close in time form one incident: ``opened`` with its first flagged
    record, ``updated`` (at most every ``engine.decision.update_every`` flagged records),
    ``resolved`` after ``engine.decision.quiet_records`` records of the key without a flag
    (``reason: quiet``), or when the key's behaviour was re-learned as its new normal
    (``reason: new_normal``).

    Examples
    --------
    >>> IncidentMessage.model_json_schema()["properties"]["status"]["enum"]
    ['opened', 'updated', 'resolved']
    """

    schema_version: Literal["2"] = SCHEMA_VERSION
    incident_id: str = Field(description="'<topic>/<partition>/<offset>/incident' of the "
                             "incident's first flagged record: deterministic.")
    status: Literal["opened", "updated", "resolved"]
    key: str
    source: SourceCoordinates = Field(description="The record that caused this message.")
    start_time: float | None = Field(description="Event time of the first flagged record.")
    end_time: float | None = Field(description="Event time of the last flagged record.")
    peak_grade: float = Field(ge=0.0, le=1.0)
    records: int = Field(ge=1, description="Records of the key since the incident opened.")
    flagged: int = Field(ge=1, description="Flagged records (alerts) of the incident.")
    top_sensors: list[SensorShare] = Field(description="Sensors by their share of the "
                                           "incident's error, largest first.")
    reason: Literal["", "quiet", "new_normal"] = Field(description="Why it was resolved.")
    model_version: int = Field(ge=0)
    detected_at: float


class DecisionMessage(_Wire):
    """Optional audit trail (``kafka.decisions_topic``): the outcome of a range of offsets.

    Every input offset of ``[start_offset, end_offset)`` was scored; those listed were
    alerted or dead-lettered, the others were scored as normal (or in warm-up).

    Examples
    --------
    >>> DecisionMessage(topic="s", partition=0, start_offset=0, end_offset=3,
    ...                 alert_offsets=[1], dead_letter_offsets=[]).end_offset
    3
    """

    schema_version: Literal["2"] = SCHEMA_VERSION
    topic: str
    partition: int = Field(ge=0)
    start_offset: int = Field(ge=0)
    end_offset: int = Field(ge=0)
    alert_offsets: list[int]
    dead_letter_offsets: list[int]


def alert_json_schema() -> dict[str, Any]:
    """JSON Schema of :class:`AlertMessage` (what ``stream-ae schema alert`` prints)."""
    return AlertMessage.model_json_schema()


def json_schema(name: str) -> dict[str, Any]:
    """JSON Schema by message name: ``alert``, ``incident``, ``event`` or ``decision``."""
    models: dict[str, type[BaseModel]] = {
        "alert": AlertMessage, "incident": IncidentMessage, "event": EventMessage,
        "decision": DecisionMessage,
    }
    return models[name].model_json_schema()
