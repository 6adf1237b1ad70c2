"""The topic replay decides like the service loop for the same records (real broker)."""

from __future__ import annotations

import pathlib

import pandas as pd
from kafka_helpers import produce
from structlog.testing import capture_logs

from stream_ae.backtest import TopicInput, run_topic_backtest
from stream_ae.config import Settings
from tests.one_path import messages, replay_decisions, service_decisions, small_settings


def test_topic_replay_decides_like_the_service(bootstrap: str, topics: dict[str, str],
                                               tmp_path: pathlib.Path) -> None:
    base = small_settings(tmp_path)
    settings = Settings.load(None, **{**base.model_dump(mode="json"),
                                      "kafka": {"bootstrap_servers": bootstrap}})
    msgs = messages()
    alerts, dead = service_decisions(settings, msgs)
    produce(bootstrap, topics["in"], 0, msgs)
    out = tmp_path / "pred.csv"
    with capture_logs():
        run_topic_backtest(settings, TopicInput(topics["in"]), out, progress=False)
    pred = pd.read_csv(out, keep_default_na=False)
    pred = pred[pred["partition"] == 0]
    lines = out.with_suffix(".alerts.jsonl").read_bytes().splitlines()
    got, errors = replay_decisions(lines, pred, base=0)
    assert len(alerts) >= 10 and got == alerts
    assert errors == {o: f"{reason}: {detail}" for o, (reason, detail, _) in dead.items()}
