"""Checkpoint-store subjects for the contract suite and the rebalance tests: a local S3 API
server (moto), and how each store's newest checkpoint is damaged."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from confluent_kafka import Producer

from stream_ae.apps.broker import free_port

S3_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
          "AWS_DEFAULT_REGION": "us-east-1"}


def moto_server_exe() -> str | None:
    beside = pathlib.Path(sys.executable).parent / "moto_server"
    return str(beside) if beside.exists() else shutil.which("moto_server")


def run_moto_server(log: pathlib.Path) -> Iterator[str]:
    """Start ``moto_server`` on a free localhost port; yield its endpoint URL."""
    import boto3

    exe = moto_server_exe()
    assert exe is not None, "needs moto[server]"
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
        deadline = time.monotonic() + 20
        while True:
            try:
                s3.list_buckets()
                break
            except Exception:  # not listening yet
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def create_bucket(endpoint: str, bucket: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
        Bucket=bucket)


def corrupt_directory(store: Any, topic: str, partition: int) -> None:
    newest = store.paths(topic, partition)[-1]
    newest.write_bytes(newest.read_bytes()[:-100])  # a torn write


def corrupt_s3(store: Any, topic: str, partition: int) -> None:
    key = store.keys(topic, partition)[-1]
    body = store.client.get_object(Bucket=store.config.bucket, Key=key)["Body"].read()
    store.client.put_object(Bucket=store.config.bucket, Key=key, Body=body[:-100])


def corrupt_kafka(store: Any, topic: str, partition: int) -> None:
    """Overwrite chunk 0 of the newest generation with garbage (compaction semantics: the
    later record of a key replaces the earlier one)."""
    gen = store.describe(topic, partition)[0]["location"].rsplit("/", 1)[1]
    p = Producer({"bootstrap.servers": store.kafka.bootstrap_servers})
    p.produce(store.changelog(topic), b"garbage", f"{partition}/{gen}/c/0".encode(),
              partition=partition)
    assert p.flush(10) == 0
