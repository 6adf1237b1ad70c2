"""The S3 checkpoint store: the only object-storage (boto3) code of checkpoints.

One object per checkpoint, ``<prefix><topic>/<partition>/ckpt-<seq:012d>.bin``, holding
``encode_checkpoint`` bytes (checksummed). A PUT is atomic (a reader sees the whole object
or none), so no temp-and-rename is needed; after a save, objects beyond the last ``keep``
are deleted. Any S3-compatible service works (``endpoint_url``: MinIO, Ceph, moto...).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import structlog

from stream_ae.checkpoint import Checkpoint, decode_checkpoint, describe_bytes, encode_checkpoint
from stream_ae.config import S3StoreConfig
from stream_ae.errors import SnapshotError, StoreError

log = structlog.get_logger()

_NAME = re.compile(r"ckpt-(\d{12})\.bin$")


class S3CheckpointStore:
    """Checkpoints as objects in an S3-compatible bucket, the last ``keep`` per partition.

    Parameters
    ----------
    config
        Bucket, key prefix, endpoint URL and region (credentials: the AWS default chain).
    keep
        Checkpoints kept per partition.
    clock
        Wall clock for ``created_at``.

    Examples
    --------
    >>> store = S3CheckpointStore(S3StoreConfig(bucket="b", prefix="ae/"))  # no I/O yet
    >>> store.key("sensors", 2, 7)
    'ae/sensors/2/ckpt-000000000007.bin'
    """

    def __init__(self, config: S3StoreConfig, keep: int = 3,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.keep = keep
        self.clock = clock
        self._client: Any = None

    def open(self) -> None:
        """Create the boto3 client (imported here: an optional dependency, the ``s3`` extra)."""
        try:
            import boto3
        except ImportError as exc:
            raise StoreError("the s3 checkpoint store needs boto3: pip install "
                             "'stream-ae[s3]'") from exc
        self._client = boto3.client("s3", endpoint_url=self.config.endpoint_url,
                                    region_name=self.config.region)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    @property
    def client(self) -> Any:
        if self._client is None:
            raise StoreError("checkpoint store is not open")
        return self._client

    def key(self, topic: str, partition: int, seq: int) -> str:
        return f"{self._dir(topic, partition)}ckpt-{seq:012d}.bin"

    def _dir(self, topic: str, partition: int) -> str:
        if not topic or "/" in topic:
            raise SnapshotError(f"topic name {topic!r} cannot be a checkpoint key prefix")
        return f"{self.config.prefix}{topic}/{partition}/"

    def _call(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.config.bucket, **kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise StoreError(f"s3 {what} failed (bucket {self.config.bucket}): {exc}") from exc

    def _pages(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        token: dict[str, str] = {}
        while True:
            page = self._call("list", self.client.list_objects_v2, **kwargs, **token)
            yield page
            if not page.get("IsTruncated"):
                return
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def keys(self, topic: str, partition: int) -> list[str]:
        """Checkpoint object keys of a partition, oldest first."""
        prefix = self._dir(topic, partition)
        return sorted(o["Key"] for page in self._pages(Prefix=prefix)
                      for o in page.get("Contents", ()) if _NAME.fullmatch(o["Key"][len(prefix):]))

    def save(self, ckpt: Checkpoint) -> str:
        """PUT the checkpoint as the next object, delete the ones beyond ``keep``."""
        existing = self.keys(ckpt.topic, ckpt.partition)
        seq = _seq(existing[-1]) + 1 if existing else 1
        if not ckpt.created_at:
            ckpt = Checkpoint(ckpt.topic, ckpt.partition, ckpt.position, ckpt.engine,
                              ckpt.feature_names, self.clock(), ckpt.meta)
        key = self.key(ckpt.topic, ckpt.partition, seq)
        self._call("put", self.client.put_object, Key=key, Body=encode_checkpoint(ckpt))
        old = existing[:max(0, len(existing) + 1 - self.keep)]
        if old:
            self._call("delete", self.client.delete_objects,
                       Delete={"Objects": [{"Key": k} for k in old], "Quiet": True})
        log.info("checkpoint_written", topic=ckpt.topic, partition=ckpt.partition,
                 position=ckpt.position, key=key, engine_bytes=len(ckpt.engine or b""))
        return key

    def _get(self, key: str) -> bytes:
        body = self._call("get", self.client.get_object, Key=key)["Body"]
        try:
            return bytes(body.read())
        finally:
            body.close()

    def valid(self, topic: str, partition: int) -> Iterator[Checkpoint]:
        """Every checkpoint object whose checksum verifies, newest first."""
        for key in reversed(self.keys(topic, partition)):
            try:
                ckpt = decode_checkpoint(self._get(key))
            except SnapshotError as exc:
                log.warning("checkpoint_corrupt", topic=topic, partition=partition, key=key,
                            error=str(exc))
                continue
            if (ckpt.topic, ckpt.partition) != (topic, partition):
                log.warning("checkpoint_misplaced", key=key, topic=ckpt.topic)
                continue
            log.info("checkpoint_restored", topic=topic, partition=partition,
                     position=ckpt.position, key=key)
            yield ckpt

    def load(self, topic: str, partition: int) -> Checkpoint | None:
        return next(self.valid(topic, partition), None)

    def partitions(self, topic: str) -> list[int]:
        prefix = f"{self.config.prefix}{topic}/"
        names = {cp["Prefix"][len(prefix):].rstrip("/")
                 for page in self._pages(Prefix=prefix, Delimiter="/")
                 for cp in page.get("CommonPrefixes", ())}
        return sorted(int(n) for n in names if n.isdigit())

    def describe(self, topic: str, partition: int) -> list[dict[str, Any]]:
        return [describe_bytes(f"s3://{self.config.bucket}/{k}", self._get(k))
                for k in reversed(self.keys(topic, partition))]


def _seq(key: str) -> int:
    m = _NAME.search(key)
    return int(m.group(1)) if m else 0
