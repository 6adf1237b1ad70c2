"""CheckpointStore: atomic writes, pruning, checksum fallback, inspect command."""

from __future__ import annotations

import json
import pathlib

import pytest
from structlog.testing import capture_logs
from typer.testing import CliRunner

from stream_ae.checkpoint import (
    Checkpoint,
    CheckpointStore,
    decode_checkpoint,
    encode_checkpoint,
    summarise,
)
from stream_ae.cli import app
from stream_ae.errors import SnapshotError


def save_n(store: CheckpointStore, n: int) -> list[pathlib.Path]:
    with capture_logs():
        return [store.save(Checkpoint("s", 1, 100 * i, bytes([i]) * 50, ("a", "b"),
                                      meta={"records_seen": i})) for i in range(1, n + 1)]


def test_round_trip_keeps_every_field() -> None:
    c = Checkpoint("s", 3, 42, b"\x00engine", ("x",), 12.5, {"model_version": 7})
    assert decode_checkpoint(encode_checkpoint(c)) == c
    origin = Checkpoint("s", 3, 0, None)
    assert decode_checkpoint(encode_checkpoint(origin)).engine is None


def test_keeps_last_k_with_a_manifest(tmp_path: pathlib.Path) -> None:
    store = CheckpointStore(tmp_path, keep=3, clock=lambda: 5.0)
    paths = save_n(store, 5)
    assert store.paths("s", 1) == paths[-3:]
    manifest = json.loads((tmp_path / "s" / "1" / "manifest.json").read_text())
    assert [e["file"] for e in manifest["checkpoints"]] == [p.name for p in paths[-3:]]
    with capture_logs():
        c = store.load("s", 1)
    assert c is not None and (c.position, c.created_at, c.engine) == (500, 5.0, bytes([5]) * 50)
    assert not list((tmp_path / "s" / "1").glob("*.tmp"))


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty"])
def test_corrupt_newest_falls_back_to_previous(tmp_path: pathlib.Path, damage: str) -> None:
    store = CheckpointStore(tmp_path, keep=3)
    newest = save_n(store, 3)[-1]
    data = newest.read_bytes()
    broken = {"truncate": data[: len(data) // 2], "empty": b"",
              "flip": data[:40] + bytes([data[40] ^ 1]) + data[41:]}[damage]
    newest.write_bytes(broken)
    with capture_logs() as logs:
        c = store.load("s", 1)
    assert c is not None and c.position == 200
    assert [e["event"] for e in logs] == ["checkpoint_corrupt", "checkpoint_restored"]


def test_no_checkpoint_and_all_corrupt_give_none(tmp_path: pathlib.Path) -> None:
    store = CheckpointStore(tmp_path)
    assert store.load("s", 1) is None
    for p in save_n(store, 2):
        p.write_bytes(b"SAECKPT1 garbage")
    with capture_logs():
        assert store.load("s", 1) is None


def test_foreign_bytes_are_refused() -> None:
    with pytest.raises(SnapshotError):
        decode_checkpoint(b"\x80\x04pickle-looking bytes that are long enough to parse" * 2)


def test_inspect_summarises_directory_and_marks_corrupt(tmp_path: pathlib.Path) -> None:
    store = CheckpointStore(tmp_path, keep=2)
    paths = save_n(store, 2)
    paths[0].write_bytes(b"junk")
    rows = summarise(tmp_path)
    assert [r["valid"] for r in rows] == [False, True]
    assert rows[1]["position"] == 200 and rows[1]["feature_names"] == ["a", "b"]
    result = CliRunner().invoke(app, ["checkpoint", "inspect", str(paths[1])])
    assert result.exit_code == 0
    assert json.loads(result.output)["meta"] == {"records_seen": 2}
    assert CliRunner().invoke(app, ["checkpoint", "inspect", str(tmp_path / "none")]).exit_code == 1


def test_build_store_picks_the_configured_store(tmp_path: pathlib.Path) -> None:
    from stream_ae.checkpoint.base import build_store
    from stream_ae.checkpoint.kafka_store import KafkaCheckpointStore
    from stream_ae.checkpoint.s3_store import S3CheckpointStore
    from stream_ae.config import Settings

    def store(**ck: object) -> object:
        return build_store(Settings.load(None, kafka={"group_id": "g"}, checkpoint=ck))

    directory = store(directory=str(tmp_path), keep=5)
    assert isinstance(directory, CheckpointStore) and directory.keep == 5
    kafka = store(store="kafka")
    assert isinstance(kafka, KafkaCheckpointStore) and kafka.changelog("s") == "g-s-checkpoints"
    s3 = store(store="s3", s3={"bucket": "b", "endpoint_url": "http://x:9000"})
    assert isinstance(s3, S3CheckpointStore) and s3.key("s", 1, 2) == (
        "stream-ae/s/1/ckpt-000000000002.bin")
