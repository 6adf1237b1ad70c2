"""The Kafka checkpoint store: the only Kafka client code of checkpoints.

State moves with the partition, as Kafka Streams' changelogs do: each input topic has a
compacted changelog topic with as many partitions, and input partition p's checkpoints
live in changelog partition p. One checkpoint (a *generation*) is written as::

    key b"<p>/<generation>/c/<i>"  value: chunk i of encode_checkpoint(ckpt)
    ...
    key b"<p>/<generation>/m"      value: JSON manifest, written last

The generation id is ``<seq:012d>-<writer token>``; chunks are at most ``chunk_bytes`` (below
the broker's ``message.max.bytes``) and the manifest lists each chunk's sha256 and the
checkpoint header. A generation counts only when its manifest arrived and every chunk
verifies (and the whole checkpoint's own sha256, see ``stream_ae.checkpoint``), so a save
cut short by a crash is ignored. After a save, every generation but the last ``keep``
complete ones is tombstoned (a null value per key), which compaction then removes.

Restore reads only its changelog partition, from the beginning to its end (detected with
``enable.partition.eof``: some brokers report a wrong high watermark), later records of a
key replacing earlier ones, and yields the complete, valid generations newest first (by
the manifest's position in the log).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as KafkaTP
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from stream_ae.checkpoint import Checkpoint, decode_checkpoint, describe_bytes
from stream_ae.config import KafkaConfig, KafkaStoreConfig
from stream_ae.errors import SnapshotError, StoreError
from stream_ae.kafka_conf import client_config

log = structlog.get_logger()


@dataclass
class _Generation:
    """What a changelog partition holds of one generation."""

    chunks: dict[int, bytes] = field(default_factory=dict)
    manifest: dict[str, Any] | None = None
    manifest_offset: int = -1

    def keys(self, partition: int, gen: str) -> list[bytes]:
        n = max([*self.chunks, int((self.manifest or {}).get("chunks", 0)) - 1], default=-1)
        return [_chunk_key(partition, gen, i) for i in range(n + 1)] + [
            _manifest_key(partition, gen)]

    def assemble(self) -> bytes:
        """The checkpoint bytes; ``SnapshotError`` when a chunk is missing or corrupt."""
        m = self.manifest
        if m is None:
            raise SnapshotError("generation has no manifest (save cut short)")
        parts = []
        for i, digest in enumerate(m["sha256"]):
            chunk = self.chunks.get(i)
            if chunk is None:
                raise SnapshotError(f"chunk {i} of {len(m['sha256'])} is missing")
            if hashlib.sha256(chunk).hexdigest() != digest:
                raise SnapshotError(f"chunk {i} checksum mismatch")
            parts.append(chunk)
        return b"".join(parts)


def _chunk_key(partition: int, gen: str, i: int) -> bytes:
    return f"{partition}/{gen}/c/{i}".encode()


def _manifest_key(partition: int, gen: str) -> bytes:
    return f"{partition}/{gen}/m".encode()


def _parse_key(key: bytes | None) -> tuple[int, str, int | None] | None:
    """(partition, generation, chunk index or None for the manifest); None if foreign."""
    try:
        parts = (key or b"").decode().split("/")
        if len(parts) == 3 and parts[2] == "m":
            return int(parts[0]), parts[1], None
        if len(parts) == 4 and parts[2] == "c":
            return int(parts[0]), parts[1], int(parts[3])
    except (UnicodeDecodeError, ValueError):
        pass
    return None


def _seq(gen: str) -> int:
    head = gen.split("-", 1)[0]
    return int(head) if head.isdigit() else 0


class KafkaCheckpointStore:
    """Checkpoints in compacted changelog topics, one changelog partition per input partition.

    Parameters
    ----------
    kafka
        Connection settings (bootstrap, security, ``extra``) and the group id the changelog
        topic name is derived from.
    config
        Changelog topic name template, chunk size, replication factor, timeouts.
    keep
        Complete generations kept per partition; older ones are tombstoned.
    clock
        Wall clock for ``created_at``.

    Examples
    --------
    >>> store = KafkaCheckpointStore(KafkaConfig(group_id="g"), KafkaStoreConfig())
    >>> store.changelog("sensors")  # nothing connects before open()
    'g-sensors-checkpoints'
    """

    def __init__(self, kafka: KafkaConfig, config: KafkaStoreConfig, keep: int = 3,
                 clock: Callable[[], float] = time.time) -> None:
        self.kafka = kafka
        self.config = config
        self.keep = keep
        self.clock = clock
        self._producer: Producer | None = None
        self._admin: AdminClient | None = None
        self._reader: Consumer | None = None
        self._token = uuid.uuid4().hex[:8]
        self._index: dict[tuple[str, int], dict[str, _Generation]] = {}
        self._topics: dict[str, int] = {}
        self._errors: list[str] = []

    def changelog(self, topic: str) -> str:
        """The changelog topic of input topic ``topic``."""
        return self.config.topic.format(group_id=self.kafka.group_id, topic=topic)

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> None:
        """Create the producer and admin clients."""
        base = client_config(self.kafka)
        try:
            self._producer = Producer({
                **base, "acks": "all", "enable.idempotence": True, "linger.ms": 0,
                "message.max.bytes": self.config.chunk_bytes + 64 * 1024,
                "error_cb": self._on_error})
            self._admin = AdminClient(base)
        except KafkaException as exc:
            raise StoreError(f"cannot create checkpoint clients: {exc}") from exc

    def abandon(self) -> None:
        """Drop the clients without flushing or closing them, as a killed process leaves
        them. For fault tests."""
        self._producer, self._reader, self._admin = None, None, None

    def close(self) -> None:
        producer, self._producer, self._admin = self._producer, None, None
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
        if producer is not None:
            producer.flush(self.config.timeout_s)

    def _on_error(self, err: KafkaError) -> None:
        log.warning("checkpoint_store_client_error", code=err.name(), reason=err.str())

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            raise StoreError("checkpoint store is not open")
        return self._producer

    # ------------------------------------------------------------------ the changelog topic
    def _ensure_topic(self, topic: str, partition: int) -> str:
        """The changelog of ``topic``, created (compacted, as many partitions as ``topic``)
        when missing; ``StoreError`` when it lacks ``partition``."""
        name = self.changelog(topic)
        if self._topics.get(name, 0) <= partition:
            self._topics[name] = self._partition_count(name) or self._create(topic, name)
        if self._topics[name] <= partition:
            raise StoreError(f"changelog {name} has {self._topics[name]} partitions; "
                             f"input partition {partition} of {topic} has no place in it")
        return name

    def _partition_count(self, name: str) -> int:
        if self._admin is None:
            raise StoreError("checkpoint store is not open")
        try:  # all topics: asking for one by name auto-creates it on some brokers
            md = self._admin.list_topics(timeout=self.config.timeout_s)
        except KafkaException as exc:
            raise StoreError(f"cannot read metadata of {name}: {exc}") from exc
        t = md.topics.get(name)
        return len(t.partitions) if t is not None and t.error is None else 0

    def _create(self, topic: str, name: str) -> int:
        n = self._partition_count(topic)
        if n == 0:
            raise StoreError(f"input topic {topic} not found: cannot size its changelog")
        assert self._admin is not None
        new = NewTopic(name, num_partitions=n, replication_factor=self.config.replication_factor,
                       config={"cleanup.policy": "compact"})
        fut = self._admin.create_topics([new], request_timeout=self.config.timeout_s)[name]
        try:
            fut.result(timeout=self.config.timeout_s)
            log.info("checkpoint_changelog_created", topic=name, partitions=n)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise StoreError(f"cannot create changelog {name}: {exc}") from exc
        deadline = time.monotonic() + self.config.timeout_s
        while (found := self._partition_count(name)) == 0 and time.monotonic() < deadline:
            time.sleep(0.1)  # metadata of a new topic takes a moment to appear (setup only)
        return found

    # ------------------------------------------------------------------ write
    def save(self, ckpt: Checkpoint) -> str:
        """Write one generation (chunks, then the manifest), wait until it is acknowledged,
        then tombstone the generations beyond ``keep``; returns the generation id."""
        from stream_ae.checkpoint import encode_checkpoint

        name = self._ensure_topic(ckpt.topic, ckpt.partition)
        gens = self._gens(ckpt.topic, ckpt.partition)
        if not ckpt.created_at:
            ckpt = Checkpoint(ckpt.topic, ckpt.partition, ckpt.position, ckpt.engine,
                              ckpt.feature_names, self.clock(), ckpt.meta)
        data = encode_checkpoint(ckpt)
        gen = f"{max(map(_seq, gens), default=0) + 1:012d}-{self._token}"
        size = self.config.chunk_bytes
        chunks = [data[i:i + size] for i in range(0, len(data), size)] or [b""]
        manifest = {"generation": gen, "chunks": len(chunks), "bytes": len(data),
                    "sha256": [hashlib.sha256(c).hexdigest() for c in chunks],
                    "header": ckpt.header()}
        p = ckpt.partition
        for i, c in enumerate(chunks):
            self._produce(name, p, _chunk_key(p, gen, i), c)
        self._produce(name, p, _manifest_key(p, gen), json.dumps(manifest).encode())
        self._flush(name)
        # after everything read from the log, in save order
        gens[gen] = _Generation(dict(enumerate(chunks)), manifest, (1 << 62) + _seq(gen))
        self._prune(name, p, gens)
        log.info("checkpoint_written", topic=ckpt.topic, partition=p, position=ckpt.position,
                 changelog=name, generation=gen, chunks=len(chunks), engine_bytes=len(
                     ckpt.engine or b""))
        return gen

    def _produce(self, topic: str, partition: int, key: bytes, value: bytes | None) -> None:
        def on_delivery(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                self._errors.append(err.str())

        try:
            self.producer.produce(topic, value, key, partition=partition, on_delivery=on_delivery)
        except (KafkaException, BufferError) as exc:
            raise StoreError(f"cannot write checkpoint record to {topic}: {exc}") from exc
        self.producer.poll(0)

    def _flush(self, topic: str) -> None:
        left = self.producer.flush(self.config.timeout_s)
        errors, self._errors = self._errors, []
        if left or errors:
            raise StoreError(f"checkpoint write to {topic} not acknowledged: "
                             f"{errors or f'{left} records pending'}")

    def _prune(self, name: str, partition: int, gens: dict[str, _Generation]) -> None:
        complete = sorted((g for g, v in gens.items() if v.manifest is not None),
                          key=lambda g: gens[g].manifest_offset)
        kept = set(complete[-self.keep:])
        for gen in [g for g in gens if g not in kept]:
            for key in gens.pop(gen).keys(partition, gen):
                self._produce(name, partition, key, None)
        self._flush(name)

    # ------------------------------------------------------------------ read
    def _gens(self, topic: str, partition: int) -> dict[str, _Generation]:
        """What this instance knows of the partition's generations (read once, then kept
        up to date by its own saves)."""
        if (topic, partition) not in self._index:
            self._index[(topic, partition)] = self._scan(topic, partition)
        return self._index[(topic, partition)]

    def _scan(self, topic: str, partition: int) -> dict[str, _Generation]:
        name = self._ensure_topic(topic, partition)
        if self._reader is None:  # one reader, reassigned per scan: no reconnect each time
            self._reader = self._consumer()
        gens: dict[str, _Generation] = {}
        try:
            self._reader.assign([KafkaTP(name, partition, OFFSET_BEGINNING)])
            for m in self._to_end(self._reader, name, partition):
                self._absorb(gens, partition, m.key(), m.value(), m.offset())
        except KafkaException as exc:
            raise StoreError(f"cannot read changelog {name}/{partition}: {exc}") from exc
        finally:
            with contextlib.suppress(KafkaException):
                self._reader.unassign()
        return gens

    def _consumer(self) -> Consumer:
        try:
            return Consumer({
                **client_config(self.kafka), "group.id": f"{self.kafka.group_id}-ckpt-reader",
                "enable.auto.commit": False, "enable.partition.eof": True,
                "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                "fetch.queue.backoff.ms": 10, "fetch.wait.max.ms": 50,
                "fetch.message.max.bytes": self.config.chunk_bytes + 64 * 1024})
        except KafkaException as exc:
            raise StoreError(f"cannot create checkpoint reader: {exc}") from exc

    def _to_end(self, consumer: Consumer, name: str, partition: int) -> Iterator[Any]:
        deadline = time.monotonic() + self.config.timeout_s
        while time.monotonic() < deadline:
            try:
                msgs = consumer.consume(256, 0.02)  # returns at the timeout: keep it short
            except KafkaException as exc:
                raise StoreError(f"cannot read changelog {name}: {exc}") from exc
            for m in msgs:
                if (m.topic(), m.partition()) != (name, partition):
                    continue  # left over from the reader's previous assignment
                err = m.error()
                if err is None:
                    yield m
                elif err.code() == KafkaError._PARTITION_EOF:
                    return
                elif err.fatal() or not err.retriable():
                    raise StoreError(f"cannot read changelog {name}/{partition}: {err.str()}")
        raise StoreError(f"changelog {name}/{partition} not read to its end within "
                         f"{self.config.timeout_s} s")

    @staticmethod
    def _absorb(gens: dict[str, _Generation], partition: int, key: bytes | None,
                value: bytes | None, offset: int) -> None:
        parsed = _parse_key(key)
        if parsed is None or parsed[0] != partition:
            log.warning("checkpoint_foreign_record", partition=partition, offset=offset)
            return
        _, gen, index = parsed
        g = gens.setdefault(gen, _Generation())
        if index is None:
            g.manifest = None if value is None else _manifest(value)
            g.manifest_offset = offset
        elif value is None:
            g.chunks.pop(index, None)
        else:
            g.chunks[index] = value
        if g.manifest is None and not g.chunks and value is None:
            gens.pop(gen)  # fully tombstoned

    def valid(self, topic: str, partition: int) -> Iterator[Checkpoint]:
        """Read the changelog partition to its end; yield complete, valid generations,
        newest first."""
        gens = self._index[(topic, partition)] = self._scan(topic, partition)
        for gen, data in self._newest_first(gens):
            try:
                ckpt = decode_checkpoint(data())
            except SnapshotError as exc:
                log.warning("checkpoint_corrupt", topic=topic, partition=partition,
                            generation=gen, error=str(exc))
                continue
            if (ckpt.topic, ckpt.partition) != (topic, partition):
                log.warning("checkpoint_misplaced", generation=gen, topic=ckpt.topic)
                continue
            log.info("checkpoint_restored", topic=topic, partition=partition,
                     position=ckpt.position, changelog=self.changelog(topic), generation=gen)
            yield ckpt

    @staticmethod
    def _newest_first(gens: dict[str, _Generation]) -> list[tuple[str, Callable[[], bytes]]]:
        complete = sorted((g for g, v in gens.items() if v.manifest is not None),
                          key=lambda g: gens[g].manifest_offset, reverse=True)
        return [(g, gens[g].assemble) for g in complete]

    def load(self, topic: str, partition: int) -> Checkpoint | None:
        return next(self.valid(topic, partition), None)

    def partitions(self, topic: str) -> list[int]:
        """Changelog partitions that hold a generation (each one is read to its end)."""
        n = self._partition_count(self.changelog(topic))
        return [p for p in range(n) if self._scan(topic, p)]

    def describe(self, topic: str, partition: int) -> list[dict[str, Any]]:
        out = []
        for gen, data in self._newest_first(self._scan(topic, partition)):
            location = f"kafka:{self.changelog(topic)}/{partition}/{gen}"
            try:
                out.append(describe_bytes(location, data()))
            except SnapshotError as exc:
                out.append({"location": location, "valid": False, "error": str(exc)})
        return out


def _manifest(value: bytes) -> dict[str, Any] | None:
    try:
        m = json.loads(value)
        return m if isinstance(m, dict) and isinstance(m.get("sha256"), list) else None
    except ValueError:
        return None
