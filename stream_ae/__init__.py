"""stream_ae: streaming anomaly detection for Kafka sensor pipelines."""

from stream_ae.config import EngineConfig, Settings
from stream_ae.errors import (
    ConfigError,
    DecodeError,
    SinkError,
    SnapshotError,
    SourceError,
    StreamAEError,
)
from stream_ae.records import Alert, Batch, DeadLetter, DriftEvent, RawMessage, SensorRecord, StepResult

__version__ = "0.1.0"

__all__ = [
    "Alert",
    "Batch",
    "ConfigError",
    "DeadLetter",
    "DecodeError",
    "DriftEvent",
    "EngineConfig",
    "RawMessage",
    "SensorRecord",
    "Settings",
    "SinkError",
    "SnapshotError",
    "SourceError",
    "StepResult",
    "StreamAEError",
    "__version__",
]
