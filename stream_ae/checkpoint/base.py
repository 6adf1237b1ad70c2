"""The checkpoint store protocol, and the store the configuration selects.

Three implementations keep the same contract (``stream_ae.checkpoint.checks``):

- ``CheckpointStore`` (``checkpoint.store: directory``): files in a directory, shared by
  every instance for scale-out;
- ``KafkaCheckpointStore`` (``kafka``): a compacted changelog topic, partition p of the
  changelog holding input partition p's state, so the state moves with the partition;
- ``S3CheckpointStore`` (``s3``): one object per checkpoint in an S3-compatible bucket.
"""

from __future__ import annotations

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
