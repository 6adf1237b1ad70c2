"""Prometheus metrics of the service and the HTTP endpoint (/metrics, /healthz, /readyz).

Every metric is registered here, on a registry the caller creates (the CLI), never at
import time.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from stream_ae.outputs import Outputs
from stream_ae.records import SourcePosition

_PART = ("topic", "partition")


class ServiceMetrics:
    """The service's metrics, on ``registry``.

    Examples
    --------
    >>> from prometheus_client import CollectorRegistry
    >>> reg = CollectorRegistry()
    >>> m = ServiceMetrics(reg)
    >>> m.records_in.labels("s", "0").inc(3)
    >>> reg.get_sample_value("stream_ae_records_in_total", {"topic": "s", "partition": "0"})
    3.0
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.records_in = Counter("stream_ae_records_in", "Records consumed (live and catch-up).",
                                  _PART, registry=registry)
        self.alerts = Counter("stream_ae_alerts", "Alerts published.", _PART, registry=registry)
        self.dead_letters = Counter("stream_ae_dead_letters", "Dead letters published.",
                                    (*_PART, "reason"), registry=registry)
        self.drift_events = Counter("stream_ae_drift_events", "Drift/regime events.",
                                    (*_PART, "kind"), registry=registry)
        self.threshold = Gauge("stream_ae_threshold", "Current threshold.", _PART,
                               registry=registry)
        self.score = Gauge("stream_ae_score", "Score quantiles of the last batch.",
                           (*_PART, "quantile"), registry=registry)
        self.lag = Gauge("stream_ae_consumer_lag", "High watermark minus position.", _PART,
                         registry=registry)
        self.checkpoint_age = Gauge("stream_ae_checkpoint_age_seconds",
                                    "Seconds since the partition's last checkpoint.", _PART,
                                    registry=registry)
        self.batch_latency = Histogram(
            "stream_ae_batch_seconds", "Time to decode, score, publish and commit a batch.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=registry)
        self.batch_records = Histogram(
            "stream_ae_batch_records", "Records per processed batch.",
            buckets=(1, 16, 64, 256, 1024, 4096, 16384), registry=registry)

    def observe_scores(self, topic: str, partition: int, scores: npt.NDArray[np.float64],
                       threshold: float) -> None:
        """Score quantiles (0.5, 0.9, 0.99) of a batch and the threshold in force."""
        finite = scores[np.isfinite(scores)]
        if finite.size:
            qs = np.quantile(finite, (0.5, 0.9, 0.99))
            for q, v in zip(("0.5", "0.9", "0.99"), qs, strict=True):
                self.score.labels(topic, str(partition), q).set(float(v))
        if np.isfinite(threshold):
            self.threshold.labels(topic, str(partition)).set(threshold)

    def count_outputs(self, out: Outputs) -> None:
        """Count one batch's alerts, dead letters and events."""
        for a in out.alerts:
            p = a.position or SourcePosition("", 0, 0)
            self.alerts.labels(p.topic, str(p.partition)).inc()
        for d in out.dead_letters:
            p = d.original.position
            self.dead_letters.labels(p.topic, str(p.partition), d.reason).inc()
        for e in out.events:
            p = e.position
            self.drift_events.labels(p.topic, str(p.partition), e.event.kind).inc()

    def forget(self, topic: str, partition: int) -> None:
        """Drop a revoked partition's gauges (another instance reports them now)."""
        labels = (topic, str(partition))
        for g in (self.threshold, self.lag, self.checkpoint_age):
            with contextlib.suppress(KeyError):
                g.remove(*labels)
        for q in ("0.5", "0.9", "0.99"):
            with contextlib.suppress(KeyError):
                self.score.remove(*labels, q)


class Health:
    """Liveness and readiness of the service.

    Alive while the loop ticked within ``stale_after`` seconds and, when there is input
    (the runner's ``tick(backlog=True)``), made progress within ``progress_timeout``
    seconds: processed a batch that took a partition past the furthest position reported
    so far (``progress(positions)``). A service that restarts over and over on the same
    input (replaying what it had processed before) is not alive. With per-partition lags
    (``tick(lags=...)``), each owned partition that has input must also move within
    ``progress_timeout``: one blocked partition is not hidden by the others moving. Ready
    while partitions are assigned.

    Examples
    --------
    >>> now = [100.0]
    >>> h = Health(stale_after=5.0, progress_timeout=30.0, clock=lambda: now[0])
    >>> h.tick(backlog=True); h.alive(), h.ready
    (True, False)
    >>> now[0] = 131.0; h.tick(backlog=True); h.alive()
    False
    >>> h.progress(); h.alive()
    True
    >>> tp0, tp1 = ("in", 0), ("in", 1)
    >>> h.tick(backlog=True, lags={tp0: 5, tp1: 5}); now[0] = 150.0
    >>> h.progress({tp0: 10}); h.tick(backlog=True, lags={tp0: 5, tp1: 5}); h.alive()
    True
    >>> now[0] = 162.0; h.progress({tp0: 20}); h.tick(backlog=True, lags={tp0: 5, tp1: 5})
    >>> h.alive()  # partition 1 has input and has not moved for 31 s
    False
    """

    def __init__(self, stale_after: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 progress_timeout: float = 300.0) -> None:
        self.stale_after = stale_after
        self.clock = clock
        self.progress_timeout = progress_timeout
        self._last_tick = clock()
        self._last_progress = self._last_tick
        self._furthest: dict[tuple[str, int], int] = {}
        self._moved: dict[tuple[str, int], float] = {}  # owned partition -> when it last moved
        self._blocked = False
        self.ready = False

    def tick(self, backlog: bool | None = None,
             lags: Mapping[tuple[str, int], int | None] | None = None) -> None:
        """The loop is running; ``backlog``: input waits (True), none does (False: the
        progress clock restarts), unknown (None: e.g. while joining the group); ``lags``:
        each owned partition's records waiting (None: unknown), for the per-partition rule
        (a partition's clock starts when it is first owned and restarts when it is caught up
        or moves)."""
        now = self._last_tick = self.clock()
        if backlog is False:
            self._last_progress = now
        if lags is None:
            return
        self._moved = {tp: (now if not lag or tp not in self._moved else self._moved[tp])
                       for tp, lag in lags.items()}
        self._blocked = any(lag and now - self._moved[tp] >= self.progress_timeout
                            for tp, lag in lags.items())

    def progress(self, positions: Mapping[tuple[str, int], int] | None = None) -> None:
        """A batch was processed; it is progress when a partition's next offset in
        ``positions`` is past the furthest one reported before (None: progress anyway)."""
        now = self.clock()
        if positions is not None:
            ahead = {tp: o for tp, o in positions.items() if o > self._furthest.get(tp, -1)}
            if not ahead:
                return
            self._furthest.update(ahead)
            for tp in ahead.keys() & self._moved.keys():
                self._moved[tp] = now
        self._last_progress = now

    def alive(self) -> bool:
        now = self.clock()
        return (now - self._last_tick < self.stale_after
                and now - self._last_progress < self.progress_timeout
                and not self._blocked)


def _handler(registry: CollectorRegistry, health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                ok = health.alive()
                self._send(200 if ok else 503, b"ok\n" if ok else b"stalled\n")
            elif path == "/readyz":
                self._send(200 if health.ready else 503,
                           b"ready\n" if health.ready else b"not ready\n")
            else:
                self._send(404, b"not found\n")

        def _send(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            """Silence the per-request stderr lines."""

    return Handler


class MetricsServer:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` from a daemon thread.

    Examples
    --------
    >>> from prometheus_client import CollectorRegistry
    >>> srv = MetricsServer(CollectorRegistry(), Health(), "127.0.0.1", 0)
    >>> srv.start() > 0
    True
    >>> srv.stop()
    """

    def __init__(self, registry: CollectorRegistry, health: Health, host: str = "127.0.0.1",
                 port: int = 9108) -> None:
        self.registry = registry
        self.health = health
        self.host = host
        self.port = port
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> int:
        """Bind and serve; returns the bound port."""
        self._server = ThreadingHTTPServer((self.host, self.port),
                                           _handler(self.registry, self.health))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="metrics-http",
                         daemon=True).start()
        return int(self._server.server_address[1])

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
