"""The checkpoint-store contract (``stream_ae.checkpoint.checks``) against every store: a
directory, a compacted changelog topic on the real broker, and an S3 API server (moto)."""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import pytest
import structlog
from confluent_kafka.admin import AdminClient
from store_helpers import corrupt_directory, corrupt_kafka, corrupt_s3, create_bucket
from structlog.testing import capture_logs

from stream_ae.apps.broker import create_topics
from stream_ae.checkpoint import Checkpoint, CheckpointStore, encode_checkpoint
from stream_ae.checkpoint.base import Store
from stream_ae.checkpoint.checks import Subject, ckpt, yield_checks
from stream_ae.checkpoint.kafka_store import KafkaCheckpointStore
from stream_ae.checkpoint.s3_store import S3CheckpointStore
from stream_ae.config import KafkaConfig, KafkaStoreConfig, S3StoreConfig

STORES = ["directory", "kafka", "s3"]
CHECKS = list(yield_checks())


def subject_for(kind: str, request: pytest.FixtureRequest, tag: str,
                tmp_path: pathlib.Path) -> Subject:
    topic = f"in-{tag}"
    if kind == "directory":
        return Subject(lambda keep: CheckpointStore(tmp_path / "ckpt", keep), corrupt_directory,
                       topic)
    if kind == "kafka":
        bootstrap = request.getfixturevalue("bootstrap")
        create_topics(bootstrap, {topic: 2})
        kafka = KafkaConfig(bootstrap_servers=bootstrap, group_id=f"g-{tag}")
        cfg = KafkaStoreConfig(chunk_bytes=64 * 1024, timeout_s=20)

        def make(keep: int) -> Store:
            return KafkaCheckpointStore(kafka, cfg, keep)

        return Subject(make, corrupt_kafka, topic)
    endpoint = request.getfixturevalue("s3_endpoint")
    create_bucket(endpoint, f"b-{tag}")
    s3 = S3StoreConfig(bucket=f"b-{tag}", prefix="ae/", endpoint_url=endpoint,
                       region="us-east-1")
    return Subject(lambda keep: S3CheckpointStore(s3, keep), corrupt_s3, topic)


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
@pytest.mark.parametrize("kind", STORES)
def test_store_contract(kind: str, check: Callable[[Subject], None],
                        request: pytest.FixtureRequest, tag: str, tmp_path: pathlib.Path) -> None:
    subject = subject_for(kind, request, tag.replace("_", "-").lower(), tmp_path)
    with capture_logs():
        check(subject)


def test_kafka_store_creates_a_compacted_changelog_sized_like_the_input(
        bootstrap: str, tag: str) -> None:
    topic = f"in-{tag}"
    create_topics(bootstrap, {topic: 3})
    store = KafkaCheckpointStore(KafkaConfig(bootstrap_servers=bootstrap, group_id=f"g-{tag}"),
                                 KafkaStoreConfig(chunk_bytes=1024), keep=1)
    store.open()
    try:
        with capture_logs() as logs:
            store.save(ckpt(topic, 2, 9, 5000))
            store.save(ckpt(topic, 2, 10, 5000))
        changelog = f"g-{tag}-{topic}-checkpoints"
        meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(changelog, timeout=10)
        assert len(meta.topics[changelog].partitions) == 3
        written = [e for e in logs if e["event"] == "checkpoint_written"]
        size = len(encode_checkpoint(ckpt(topic, 2, 9, 5000)))
        assert [e["chunks"] for e in written] == [-(-size // 1024)] * 2
        assert [c.position for c in store.valid(topic, 2)] == [10]
        assert store.partitions(topic) == [2]
    finally:
        store.close()



@pytest.mark.parametrize("kind", ["kafka", "s3"])
def test_inspect_reads_the_configured_store(kind: str, request: pytest.FixtureRequest, tag: str,
                                            tmp_path: pathlib.Path) -> None:
    """``stream-ae checkpoint inspect -c FILE`` lists the configured store's checkpoints of
    every input topic, newest first, with the stored engine settings beside the current."""
    import json

    import yaml
    from typer.testing import CliRunner

    from stream_ae.cli import app
    from stream_ae.config import Settings, TrainingConfig
    from stream_ae.engine import Engine

    tag = tag.replace("_", "-").lower()
    subject = subject_for(kind, request, tag, tmp_path)
    store = subject.make(2)
    data: dict[str, object] = {"kafka": {"input_topics": [subject.topic], "group_id": f"g-{tag}"},
                               "log": {"format": "json"}}
    if isinstance(store, KafkaCheckpointStore):
        data["kafka"] |= {"bootstrap_servers": store.kafka.bootstrap_servers}  # type: ignore[operator]
        data["checkpoint"] = {"store": "kafka"}
    else:
        assert isinstance(store, S3CheckpointStore)
        data["checkpoint"] = {"store": "s3", "s3": store.config.model_dump()}
    settings = Settings.load(None, **data)
    engine = Engine(settings.engine.model_copy(update={"training": TrainingConfig(
        window=512, batch_size=64)}), ("a", "b"))
    store.open()
    try:
        with capture_logs():
            store.save(ckpt(subject.topic, 1, 10))
            store.save(Checkpoint(subject.topic, 1, 20, engine.snapshot(), ("a", "b")))
    finally:
        store.close()
    cfg = tmp_path / "current.yaml"
    cfg.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    saved = structlog.get_config()  # the command configures logging for the process
    try:
        result = CliRunner().invoke(app, ["checkpoint", "inspect", "-c", str(cfg)])
    finally:
        structlog.configure(**saved)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["partition"], r["position"], r["valid"]) for r in rows] == [
        (1, 20, True), (1, 10, True)]
    assert rows[0]["config_diff"]["training.window"] == {"stored": 512, "current": 4096}
    assert (rows[0]["learned_state_mismatch"], rows[0]["on_restart"]) == (
        ["training.window"], "fail")


def test_kafka_store_chunks_a_snapshot_larger_than_a_message(bootstrap: str, tag: str) -> None:
    """2.5 MB of engine state (beyond the brokers' default 1 MB message.max.bytes) in
    default-size chunks; a second store instance restores it byte for byte."""
    topic = f"in-{tag}"
    create_topics(bootstrap, {topic: 1})
    kafka = KafkaConfig(bootstrap_servers=bootstrap, group_id=f"g-{tag}")
    big = ckpt(topic, 0, 77, size=2_500_000)
    writer, reader = (KafkaCheckpointStore(kafka, KafkaStoreConfig()) for _ in range(2))
    writer.open()
    reader.open()
    try:
        with capture_logs() as logs:
            writer.save(big)
            got = reader.load(topic, 0)
    finally:
        writer.close()
        reader.close()
    written = next(e for e in logs if e["event"] == "checkpoint_written")
    assert written["chunks"] == -(-len(encode_checkpoint(big)) // (512 * 1024)) == 5
    assert got is not None and got.engine == big.engine and got.position == 77
