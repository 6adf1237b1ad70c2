"""``stream-ae backtest --topic T --from-store``: a topic replay that starts from the newest
checkpoints in the configured store, for every store kind (directory, a compacted Kafka
topic, S3 on a local moto server), continues exactly like an uninterrupted replay."""

from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd
import pytest
from structlog.testing import capture_logs
from test_rebalance import store_settings
from test_replay_topic import SENSORS, _config, replay_setup  # noqa: F401 (a fixture)

from stream_ae.backtest import TopicInput, run_topic_backtest
from stream_ae.checkpoint import Checkpoint
from stream_ae.checkpoint.base import build_store
from stream_ae.config import Settings
from stream_ae.decode import Decoder
from stream_ae.engine import Engine
from stream_ae.errors import ConfigError
from stream_ae.records import RawBlock


@pytest.mark.parametrize("kind", ["directory", "kafka", "s3"])
def test_from_store_continues_like_an_uninterrupted_replay(
        kind: str, replay_setup: tuple[Settings, dict[int, list[bytes]], str],  # noqa: F811
        bootstrap: str, tag: str, tmp_path: pathlib.Path, request: pytest.FixtureRequest
        ) -> None:
    _, sent, topic = replay_setup
    endpoint = request.getfixturevalue("s3_endpoint") if kind == "s3" else None
    cfg = _config(bootstrap, tag, tmp_path)
    cfg["checkpoint"] = {**cfg["checkpoint"], **store_settings(kind, tag.lower(), tmp_path,
                                                               endpoint)}
    settings = Settings.load(None, **cfg)
    store = build_store(settings)
    store.open()
    try:
        for p in (0, 1):  # what a service would have left: state after 500 records
            values = sent[p][:500]
            block = RawBlock(topic, p, list(range(500)), values, [None] * 500, [None] * 500)
            engine = Engine(settings.engine, SENSORS)
            engine.step(Decoder(tuple(SENSORS), settings.record).decode(block).batch)
            store.save(Checkpoint(topic, p, 500, engine.snapshot(), tuple(SENSORS)))
    finally:
        store.close()
    full = tmp_path / "full.csv"
    run_topic_backtest(settings, TopicInput(topic), full, progress=False)
    resumed = tmp_path / "resumed.csv"
    with capture_logs() as logs:
        s = run_topic_backtest(settings, TopicInput(topic, from_store=True), resumed,
                               progress=False)
    start = [e for e in logs if e["event"] == "backtest_from_checkpoint"]
    assert start[0]["partitions"] == [0, 1] and start[0]["start_offsets"] == {0: 500, 1: 500}
    a, b = pd.read_csv(full), pd.read_csv(resumed)
    assert s.records == 600 and b["offset"].min() == 500
    tail = a[a["offset"] >= 500].sort_values(["partition", "offset"]).reset_index(drop=True)
    b = b.sort_values(["partition", "offset"]).reset_index(drop=True)
    np.testing.assert_allclose(b["score"], tail["score"], rtol=1e-6)
    assert b["warmup"].sum() == 0
    with pytest.raises(ConfigError, match="not both"):
        run_topic_backtest(settings, TopicInput(topic, from_checkpoint=tmp_path, from_store=True),
                           tmp_path / "x.csv", progress=False)
