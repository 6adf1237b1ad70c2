"""Checkpoints: atomic, checksummed snapshots of one engine per input partition.

This module holds the checkpoint format and the directory store; ``base.Store`` is the
protocol every store keeps, ``base.build_store`` picks the configured one
(``kafka_store``, ``s3_store``), and ``checks`` is their shared contract suite.

Directory layout: ``DIR/<topic>/<partition>/ckpt-<seq>.bin`` plus ``manifest.json`` listing the
kept checkpoints, newest last. A file is::

    b"SAECKPT1" | u32 header length | header (JSON) | engine snapshot | sha256 of all before

The header holds the position the state covers (the *next* offset to read), the raw
feature names, counters and timestamps. Writes go to a temp file, are fsynced and renamed,
so a crash leaves either the old or the new file. Loading verifies the checksum and falls
back to the previous checkpoint when the newest is corrupt or truncated; it never
unpickles anything (the engine blob is handed to ``Engine.restore`` as bytes).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import struct
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from stream_ae.errors import SnapshotError

log = structlog.get_logger()

MAGIC = b"SAECKPT1"
_LEN = struct.Struct(">I")
_DIGEST = 32
_NAME = re.compile(r"ckpt-(\d{12})\.bin$")


@dataclass(frozen=True)
class Checkpoint:
    """The state of one partition's engine and the source position it covers.

    ``engine`` is ``None`` for an origin checkpoint (no record seen yet: start fresh at
    ``position``).

    Examples
    --------
    >>> Checkpoint("sensors", 0, 120, b"...", ("a", "b")).position
    120
    """

    topic: str
    partition: int
    position: int
    engine: bytes | None
    feature_names: tuple[str, ...] = ()
    created_at: float = 0.0
    meta: Mapping[str, Any] = field(default_factory=dict)

    def header(self) -> dict[str, Any]:
        return {
            "topic": self.topic, "partition": self.partition, "position": self.position,
            "has_engine": self.engine is not None, "engine_bytes": len(self.engine or b""),
            "feature_names": list(self.feature_names), "created_at": self.created_at,
            "meta": dict(self.meta),
        }


def encode_checkpoint(ckpt: Checkpoint) -> bytes:
    """Serialise with a trailing sha256.

    >>> c = Checkpoint("t", 1, 5, b"blob")
    >>> decode_checkpoint(encode_checkpoint(c)) == c
    True
    """
    head = json.dumps(ckpt.header(), sort_keys=True).encode()
    body = MAGIC + _LEN.pack(len(head)) + head + (ckpt.engine or b"")
    return body + hashlib.sha256(body).digest()


def decode_checkpoint(data: bytes) -> Checkpoint:
    """Parse and verify; ``SnapshotError`` when corrupt, truncated or foreign."""
    if len(data) < len(MAGIC) + _LEN.size + _DIGEST or not data.startswith(MAGIC):
        raise SnapshotError("not a stream-ae checkpoint (bad magic or too short)")
    body, digest = data[:-_DIGEST], data[-_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise SnapshotError("checkpoint checksum mismatch (corrupt or truncated)")
    (n,) = _LEN.unpack_from(body, len(MAGIC))
    start = len(MAGIC) + _LEN.size
    try:
        h = json.loads(body[start:start + n])
        blob = body[start + n:]
        return Checkpoint(
            h["topic"], int(h["partition"]), int(h["position"]),
            blob if h["has_engine"] else None, tuple(h["feature_names"]),
            float(h["created_at"]), h.get("meta", {}),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise SnapshotError(f"checkpoint header unreadable: {exc}") from exc


def read_checkpoint(path: str | pathlib.Path) -> Checkpoint:
    """Read and verify one checkpoint file."""
    try:
        data = pathlib.Path(path).read_bytes()
    except OSError as exc:
        raise SnapshotError(f"cannot read checkpoint {path}: {exc}") from exc
    return decode_checkpoint(data)


def _write_atomic(path: pathlib.Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class CheckpointStore:
    """Save and load per-partition checkpoints under ``directory``, keeping the last ``keep``.

    Parameters
    ----------
    directory
        Root directory; instances that share it hand partitions over on rebalance.
    keep
        Checkpoints kept per partition (older ones are deleted after a save).
    clock
        Wall clock for ``created_at`` (injected in tests).

    Examples
    --------
    >>> import tempfile
    >>> from structlog.testing import capture_logs
    >>> store = CheckpointStore(tempfile.mkdtemp(), keep=2)
    >>> with capture_logs() as logs:
    ...     for pos in (10, 20, 30):
    ...         _ = store.save(Checkpoint("s", 0, pos, b"state"))
    ...     newest = store.load("s", 0)
    >>> newest.position, len(store.paths("s", 0)), logs[-1]["event"]
    (30, 2, 'checkpoint_restored')
    """

    def __init__(
        self, directory: str | pathlib.Path, keep: int = 3, clock: Callable[[], float] = time.time
    ) -> None:
        self.directory = pathlib.Path(directory)
        self.keep = keep
        self.clock = clock

    def open(self) -> None:
        """Nothing to connect: files are opened per call."""

    def close(self) -> None:
        """Nothing to release."""

    def _dir(self, topic: str, partition: int) -> pathlib.Path:
        if not topic or "/" in topic or topic in (".", ".."):
            raise SnapshotError(f"topic name {topic!r} cannot be a checkpoint directory")
        return self.directory / topic / str(partition)

    def paths(self, topic: str, partition: int) -> list[pathlib.Path]:
        """Checkpoint files of a partition, oldest first."""
        d = self._dir(topic, partition)
        if not d.is_dir():
            return []
        return sorted(p for p in d.iterdir() if _NAME.match(p.name))

    def save(self, ckpt: Checkpoint) -> pathlib.Path:
        """Write ``ckpt`` atomically, prune old ones, rewrite the manifest; return the path."""
        d = self._dir(ckpt.topic, ckpt.partition)
        d.mkdir(parents=True, exist_ok=True)
        existing = self.paths(ckpt.topic, ckpt.partition)
        seq = int(_NAME.match(existing[-1].name).group(1)) + 1 if existing else 1  # type: ignore[union-attr]
        if not ckpt.created_at:
            ckpt = Checkpoint(ckpt.topic, ckpt.partition, ckpt.position, ckpt.engine,
                              ckpt.feature_names, self.clock(), ckpt.meta)
        path = d / f"ckpt-{seq:012d}.bin"
        _write_atomic(path, encode_checkpoint(ckpt))
        kept = [*existing, path][-self.keep:]
        for old in existing:
            if old not in kept:
                old.unlink(missing_ok=True)
        self._write_manifest(d, kept)
        log.info("checkpoint_written", topic=ckpt.topic, partition=ckpt.partition,
                 position=ckpt.position, path=str(path), engine_bytes=len(ckpt.engine or b""))
        return path

    def _write_manifest(self, d: pathlib.Path, kept: list[pathlib.Path]) -> None:
        entries = []
        for p in kept:
            with p.open("rb") as f:  # size and trailing digest only, not the engine snapshot
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - _DIGEST))
                digest = f.read()
            entries.append({"file": p.name, "bytes": size, "sha256": digest.hex()})
        _write_atomic(d / "manifest.json", json.dumps({"checkpoints": entries}, indent=1).encode())

    def load(self, topic: str, partition: int) -> Checkpoint | None:
        """The newest valid checkpoint of a partition (older ones if newer are corrupt), or None."""
        return next(self.valid(topic, partition), None)

    def valid(self, topic: str, partition: int) -> Iterator[Checkpoint]:
        """Every checkpoint of a partition whose checksum verifies, newest first."""
        for path in reversed(self.paths(topic, partition)):
            try:
                ckpt = read_checkpoint(path)
            except SnapshotError as exc:
                log.warning("checkpoint_corrupt", topic=topic, partition=partition,
                            path=str(path), error=str(exc))
                continue
            if (ckpt.topic, ckpt.partition) != (topic, partition):
                log.warning("checkpoint_misplaced", path=str(path), topic=ckpt.topic)
                continue
            log.info("checkpoint_restored", topic=topic, partition=partition,
                     position=ckpt.position, path=str(path))
            yield ckpt


    def partitions(self, topic: str) -> list[int]:
        """Partitions of ``topic`` with a checkpoint directory."""
        d = self.directory / topic
        return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []

    def describe(self, topic: str, partition: int) -> list[dict[str, Any]]:
        """One row per checkpoint file, newest first."""
        return [describe_bytes(str(f), f.read_bytes())
                for f in reversed(self.paths(topic, partition))]


def describe_bytes(location: str, data: bytes) -> dict[str, Any]:
    """An inspect row for one stored checkpoint: where, how big, valid, its header and the
    engine configuration its state was learned under (``engine_config``, when it has one)."""
    row: dict[str, Any] = {"location": location, "bytes": len(data)}
    try:
        ckpt = decode_checkpoint(data)
    except SnapshotError as exc:
        return row | {"valid": False, "error": str(exc)}
    return row | {"valid": True, **ckpt.header(), **_engine_config(ckpt.engine)}


def _engine_config(engine: bytes | None) -> dict[str, Any]:
    from stream_ae import snapshot

    if engine is None:
        return {}
    try:
        tree, _ = snapshot.decode(engine)
    except SnapshotError:
        return {}  # another engine's bytes (tests): nothing to show
    return {"engine_config": tree.get("config")}


def summarise(path: str | pathlib.Path) -> list[dict[str, Any]]:
    """One summary per checkpoint file under ``path`` (a file, a partition or a root dir)."""
    p = pathlib.Path(path)
    files = [p] if p.is_file() else sorted(x for x in p.rglob("ckpt-*.bin") if _NAME.match(x.name))
    if not files:
        raise SnapshotError(f"no checkpoint files at {p}")
    out = []
    for f in files:
        try:
            row = describe_bytes(str(f), f.read_bytes())
        except OSError as exc:
            row = {"location": str(f), "valid": False, "error": str(exc)}
        out.append({"path": row.pop("location"), **row})
    return out
