"""Wire models of the published messages (pydantic) and their JSON Schemas.

Subscribers read alerts, events and decisions as JSON; every message carries
``schema_version`` and the headers ``stream-ae.schema-version`` and ``content-type``.
The service builds the JSON directly (:mod:`stream_ae.encode`, hot path); these models
define the contract, and the tests check that what the service writes validates here.

>>> sorted(alert_json_schema()["required"])[:3]
['alert_id', 'context', 'detected_at']
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION: Final = "1"


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SourceCoordinates(_Wire):
    """Where the input record came from."""

    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)


class FeatureContribution(_Wire):
    """One model input and its squared reconstruction error."""

    name: str
    error: float


class AlertContext(_Wire):
    """The detector's state when it flagged the record."""

    warmup: bool = Field(description="Always false: records in the warm-up are never flagged.")
    drift_recent: bool = Field(description="A drift/regime event fired in the same batch.")


class AlertMessage(_Wire):
    """One flagged record on the alerts topic (message key = the record's sensor key).

    Examples
    --------
    >>> m = AlertMessage.model_validate({
    ...     "schema_version": "1", "alert_id": "s/0/7",
    ...     "source": {"topic": "s", "partition": 0, "offset": 7}, "key": "pump",
    ...     "event_time": 1.5, "features": {"t": 9.0}, "score": 3.0, "threshold": 1.0,
    ...     "top_features": [{"name": "t", "error": 3.0}],
    ...     "context": {"warmup": False, "drift_recent": False},
    ...     "model_version": 2, "detected_at": 2.0})
    >>> m.alert_id
    's/0/7'
    """

    schema_version: Literal["1"] = SCHEMA_VERSION
    alert_id: str = Field(description="Deterministic: '<topic>/<partition>/<offset>' of the "
                          "source record; a re-published alert has the same id and content.")
    source: SourceCoordinates
    key: str = Field(description="Sensor key (also the Kafka message key).")
    event_time: float | None = Field(description="Event time of the record, epoch seconds.")
    features: dict[str, float | None] = Field(description="The record's raw feature values.")
    score: float = Field(description="Anomaly score (reconstruction error, standardised).")
    threshold: float = Field(description="Threshold in force; flagged because score > threshold.")
    top_features: list[FeatureContribution] = Field(description="Largest error contributions.")
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

    schema_version: Literal["1"] = SCHEMA_VERSION
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

    schema_version: Literal["1"] = SCHEMA_VERSION
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
    """JSON Schema by message name: ``alert``, ``event`` or ``decision``."""
    models: dict[str, type[BaseModel]] = {
        "alert": AlertMessage, "event": EventMessage, "decision": DecisionMessage,
    }
    return models[name].model_json_schema()
