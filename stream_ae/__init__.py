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
from stream_ae.records import (
    Alert,
    Batch,
    DeadLetter,
    DriftEvent,
    RawMessage,
    SensorRecord,
    StepResult,
)

__version__ = "0.1.0"

# Names whose modules import torch, resolved on first use: `stream-ae --help`, the config
# and schema commands and the Kafka adapters stay free of torch's import cost.
_LAZY = {"Engine": "stream_ae.engine", "CheckpointStore": "stream_ae.checkpoint"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'stream_ae' has no attribute {name!r}")

__all__ = [
    "Alert",
    "Batch",
    "CheckpointStore",
    "ConfigError",
    "DeadLetter",
    "DecodeError",
    "DriftEvent",
    "Engine",
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
