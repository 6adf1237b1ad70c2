"""The same records give the same decisions whichever way they arrive: through the service
loop (in-memory group source and sink) and as a JSON Lines file through the file backtest.
tests/integration/test_one_path.py adds the topic replay on the real broker."""

from __future__ import annotations

import pathlib

import pandas as pd
from structlog.testing import capture_logs

from stream_ae.backtest import FileInput, run_file_backtest
from tests.one_path import messages, replay_decisions, service_decisions, small_settings


def test_service_and_file_backtest_decide_the_same(tmp_path: pathlib.Path) -> None:
    settings = small_settings(tmp_path)
    msgs = messages()
    alerts, dead = service_decisions(settings, msgs)
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(msgs) + b"\n")
    out = tmp_path / "pred.csv"
    with capture_logs():
        run_file_backtest(settings, FileInput(path), out, progress=False)
    pred = pd.read_csv(out, keep_default_na=False)
    lines = out.with_suffix(".alerts.jsonl").read_bytes().splitlines()
    got, errors = replay_decisions(lines, pred, base=1)  # file lines are 1-based
    assert len(alerts) >= 10 and got == alerts
    assert errors == {o: f"{reason}: {detail}" for o, (reason, detail, _) in dead.items()}
    assert sorted(r for r, _, _ in dead.values()) == sorted(
        ["invalid_json", "missing_feature", "non_finite", "non_numeric", "not_object"])
