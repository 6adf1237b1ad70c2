"""The exception tree of stream_ae.

::

    StreamAEError
    ├── ConfigError            invalid or inconsistent configuration
    │   └── ConfigMismatchError a checkpoint's learned state contradicts the config (``fields``)
    ├── DecodeError            a message that cannot become a record (carries ``reason``)
    ├── SnapshotError          a snapshot/checkpoint that cannot be read or does not fit
    ├── StoreError             the checkpoint store cannot be reached or written
    ├── SourceError            the input side failed (wraps confluent_kafka / file errors)
    │   ├── InputFileError     an input file that cannot be read (missing, unreadable, bad format)
    │   └── BrokerUnreachable  the Kafka cluster did not answer a metadata request
    ├── SinkError              the output side failed (wraps confluent_kafka errors)
    │   └── FencedError        a newer instance owns our transactional id: stop at once
    ├── BrokerError            the embedded test/demo broker could not be started
    ├── MissingExtraError      a command needs an optional dependency (names its extra)
    └── GaveUpError            the service stopped retrying: no progress at the same offsets

Adapters translate library errors at the edge with ``raise ... from exc``.
"""

from __future__ import annotations


class StreamAEError(Exception):
    """Root of every error raised on purpose by stream_ae."""


class ConfigError(StreamAEError):
    """Invalid or inconsistent configuration."""


class ConfigMismatchError(ConfigError):
    """A checkpoint's learned state contradicts the configured engine.

    ``fields`` are the dotted settings (e.g. ``"features.lags"``) whose stored and
    configured values differ; ``checkpoint.on_config_mismatch`` decides what happens.
    """

    def __init__(self, fields: tuple[str, ...], detail: str = "") -> None:
        super().__init__(
            f"the checkpoint's learned state was built under other values of {', '.join(fields)}"
            f"{': ' + detail if detail else ''} (set checkpoint.on_config_mismatch to 'reset' "
            "to start these partitions afresh, or 'keep_stored' to keep the stored settings)")
        self.fields = fields


class DecodeError(StreamAEError):
    """A message that cannot become a record.

    ``reason`` is a short machine-readable code (e.g. ``"invalid_json"``,
    ``"missing_feature"``, ``"non_finite"``) and ``detail`` a human sentence.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class SnapshotError(StreamAEError):
    """A snapshot or checkpoint that cannot be read, or that does not fit the config."""


class StoreError(StreamAEError):
    """The checkpoint store (directory, Kafka changelog, S3 bucket) cannot be read or written."""


class SourceError(StreamAEError):
    """The input side failed."""


class InputFileError(SourceError):
    """An input file that cannot be read: missing, unreadable, or of an unknown format."""


class BrokerUnreachable(SourceError):
    """The Kafka cluster did not answer (wrong address, down, or a network/TLS problem)."""


class SinkError(StreamAEError):
    """The output side failed."""


class FencedError(SinkError):
    """A newer instance owns our transactional id; this one must stop."""


class BrokerError(StreamAEError):
    """The embedded Kafka-protocol broker could not be started or reached."""


class GaveUpError(StreamAEError):
    """The service gave up: batches kept failing at the same committed offsets after
    ``service.max_restarts_same_offset`` in-process restarts (the process exits non-zero so
    an orchestrator can act)."""


class MissingExtraError(StreamAEError):
    """A feature needs an optional dependency that is not installed.

    ``package`` is what pip installs and ``extra`` the stream-ae extra that brings it
    (``pip install 'stream-ae[<extra>]'``).
    """

    def __init__(self, feature: str, package: str, extra: str) -> None:
        super().__init__(f"{feature} needs {package}: pip install 'stream-ae[{extra}]'")
        self.feature = feature
        self.package = package
        self.extra = extra
