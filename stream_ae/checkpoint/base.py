"""The checkpoint store protocol, and the store the configuration selects.

Three implementations keep the same contract (``stream_ae.checkpoint.checks``):

- ``CheckpointStore`` (``checkpoint.store: directory``): files in a directory, shared by
  every instance for scale-out;
- ``KafkaCheckpointStore`` (``kafka``): a compacted changelog topic, partition p of the
  changelog holding input partition p's state, so the state moves with the partition;
- ``S3CheckpointStore`` (``s3``): one object per checkpoint in an S3-compatible bucket.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from stream_ae.checkpoint import Checkpoint
    from stream_ae.config import Settings


class Store(Protocol):
    """Where per-partition checkpoints live.

    ``open`` makes the clients (nothing connects before it); ``save`` is durable when it
    returns; ``valid`` yields every checkpoint of a partition whose checksum verifies,
    newest first (falling back to older ones when newer ones are corrupt or incomplete);
    only the last ``keep`` are kept. Read and write failures raise ``StoreError``.
    """

    keep: int

    def open(self) -> None: ...

    def close(self) -> None: ...

    def save(self, ckpt: Checkpoint) -> object:
        """Write ``ckpt``, drop generations beyond ``keep``; return where it went."""
        ...

    def valid(self, topic: str, partition: int) -> Iterator[Checkpoint]: ...

    def load(self, topic: str, partition: int) -> Checkpoint | None:
        """The newest valid checkpoint, or None."""
        ...

    def partitions(self, topic: str) -> list[int]:
        """Partitions of ``topic`` that have anything stored."""
        ...

    def describe(self, topic: str, partition: int) -> list[dict[str, Any]]:
        """One row per stored checkpoint, newest first (for ``checkpoint inspect``):
        ``location``, ``bytes``, ``valid`` and the header fields, or ``error``."""
        ...


def build_store(settings: Settings) -> Store:
    """The store ``settings.checkpoint.store`` selects (not opened)."""
    ck = settings.checkpoint
    if ck.store == "kafka":
        from stream_ae.checkpoint.kafka_store import KafkaCheckpointStore

        return KafkaCheckpointStore(settings.kafka, ck.kafka, ck.keep)
    if ck.store == "s3":
        from stream_ae.checkpoint.s3_store import S3CheckpointStore

        return S3CheckpointStore(ck.s3, ck.keep)
    from stream_ae.checkpoint import CheckpointStore

    return CheckpointStore(ck.directory, ck.keep)


def inspect_rows(settings: Settings | None, path: pathlib.Path | None) -> list[dict[str, Any]]:
    """``checkpoint inspect``: one row per stored checkpoint, from the files at ``path`` or
    (no path) from the store ``settings`` selects, every input topic's partitions. Given
    ``settings``, each row compares the stored engine configuration with the configured
    one (:func:`compare_config`)."""
    from stream_ae.checkpoint import summarise
    from stream_ae.errors import ConfigError

    if path is not None:
        rows = summarise(path)
    elif settings is None:
        raise ConfigError("give a checkpoint path, or --config to inspect the configured store")
    else:
        store = build_store(settings)
        store.open()
        try:
            rows = [row for topic in settings.kafka.input_topics
                    for p in store.partitions(topic) for row in store.describe(topic, p)]
        finally:
            store.close()
    return rows if settings is None else [compare_config(r, settings) for r in rows]


def compare_config(row: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Replace a row's ``engine_config`` by its difference from ``settings.engine``
    (``config_diff``: ``{path: {"stored", "current"}}``), the learned-state settings that
    contradict it, and what a restart would do with this checkpoint (``on_restart``)."""
    from stream_ae.config import EngineConfig, config_diff, learned_state_diff

    stored_raw = row.get("engine_config")
    if stored_raw is None:
        return row
    stored = EngineConfig.model_validate(stored_raw)
    diff = config_diff(stored, settings.engine)
    if not stored.features.names:  # inferred from the data: the checkpoint has them
        stored = stored.model_copy(update={"features": stored.features.model_copy(
            update={"names": tuple(row.get("feature_names", ()))})})
    learned = learned_state_diff(stored, settings.engine)
    out = {k: v for k, v in row.items() if k != "engine_config"}
    return out | {
        "config_diff": {k: {"stored": a, "current": b} for k, (a, b) in diff.items()},
        "learned_state_mismatch": list(learned),
        "on_restart": settings.checkpoint.on_config_mismatch if learned else "apply",
    }
