"""A real Prometheus scrapes a running ``stream-ae run``: every Grafana panel query returns
data, and the alert rules load and evaluate against the live series."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kafka_helpers import NAMES, produce, records, service_config, write_config

from tests.streams import messages

REPO = pathlib.Path(__file__).parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "stream-ae.json"
RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS = shutil.which("prometheus")
N = 1200  # per partition: warm-up 150, spikes, then a level shift (drift, regime change)

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus not found: install Debian's prometheus package "
    "(apt-get install prometheus; .ci/run does it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def shifted(p: int) -> list[bytes]:
    """Readings with spikes, a shift of every feature two-thirds through, and a bad message."""
    _, x = records(N, seed=40 + p, partition=p)
    x[2 * N // 3 :] += 6.0
    msgs = messages(x, NAMES, key=lambda i: f"dev-{p}", t0=1_700_000_000.0)
    msgs[400] = b"{oops"
    return msgs


def dashboard_queries() -> list[tuple[str, str]]:
    doc = json.loads(DASHBOARD.read_text())
    return [(panel["title"], t["expr"]) for panel in doc["panels"]
            for t in panel.get("targets", []) if t.get("expr")]


class Prom:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as r:
            doc = json.loads(r.read())
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def wait(self, what: str, ok: Any, alive: Any, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert alive(), f"the service exited while waiting for {what} (see service.log)"
            with contextlib.suppress(OSError):
                if ok():
                    return
            time.sleep(0.5)
        raise AssertionError(f"prometheus: {what} within {timeout:g} s")


@contextlib.contextmanager
def process(args: list[str], log: pathlib.Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def records_in(prom: Prom) -> list[float]:
    return [float(r["value"][1]) for r in prom.query("sum(stream_ae_records_in_total)")]


def prometheus_config(tmp: pathlib.Path, metrics_port: int) -> pathlib.Path:
    cfg = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
           "rule_files": [str(RULES)],
           "scrape_configs": [{"job_name": "stream-ae", "metrics_path": "/metrics",
                               "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}]}
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_prometheus_scrapes_the_service_and_every_dashboard_query_returns_data(
        bootstrap: str, tag: str, topics: dict[str, str], tmp_path: pathlib.Path) -> None:
    assert PROMETHEUS is not None
    metrics_port, web_port = free_port(), free_port()
    cfg = service_config(bootstrap, tag, tmp_path,
                         metrics={"enabled": True, "host": "127.0.0.1", "port": metrics_port},
                         engine={"regime": {"after_records": 100}})
    data = {p: shifted(p) for p in (0, 1)}
    half = N // 2
    for p, values in data.items():
        produce(bootstrap, topics["in"], p, values[:half])
    prom = Prom(web_port)
    service_args = [sys.executable, "-m", "stream_ae.cli", "run", "-c",
                    str(write_config(cfg, tmp_path / "service.yaml"))]
    prom_args = [PROMETHEUS, f"--config.file={prometheus_config(tmp_path, metrics_port)}",
                 f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{web_port}", "--log.level=warn"]
    with process(prom_args, tmp_path / "prometheus.log"), \
            process(service_args, tmp_path / "service.log") as service:
        # the first half scraped before the second is produced: rate() sees the counter move
        alive = lambda: service.poll() is None  # noqa: E731
        prom.wait("records_in reaching the first half", lambda: records_in(prom) == [2.0 * half],
                  alive)
        for p, values in data.items():
            produce(bootstrap, topics["in"], p, values[half:])
        prom.wait("records_in reaching the produced count", lambda: records_in(prom) == [2.0 * N],
                  alive)
        time.sleep(2.5)
        assert [r["value"][1] for r in prom.query('up{job="stream-ae"}')] == ["1"]
        empty = [(title, expr) for title, expr in dashboard_queries() if not prom.query(expr)]
        rate = prom.query("sum(rate(stream_ae_records_in_total[1m]))")
        rules = prom.get("/api/v1/rules")["groups"]
        alerts = prom.get("/api/v1/alerts")["alerts"]
    assert empty == [], f"dashboard queries without data: {empty}"
    assert float(rate[0]["value"][1]) > 0
    loaded = {r["name"]: r for g in rules for r in g["rules"]}
    assert set(loaded) == {"StreamAEDown", "StreamAEConsumerLagGrowing",
                           "StreamAECheckpointStale", "StreamAEDeadLetters"}
    assert {r["health"] for r in loaded.values()} == {"ok"}, loaded
    assert {r["lastError"] for r in loaded.values() if r.get("lastError")} == set()
    # a healthy service that just caught up: nothing fires (the dead letters are far below 1%)
    assert [a["labels"]["alertname"] for a in alerts if a["state"] == "firing"] == []
