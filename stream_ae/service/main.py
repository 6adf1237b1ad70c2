"""The service process: wiring, signals, gc, the metrics server and the restart policy.

Everything the loop needs is made by factories passed in as arguments (production: the
Kafka ones), so tests wire memory adapters the same way instead of patching modules.
"""

from __future__ import annotations

import gc
import signal
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType

import structlog

from stream_ae.checkpoint.base import build_store
from stream_ae.config import Settings, producer_max_bytes
from stream_ae.decode import FeatureSchema
from stream_ae.detect import calibrate
from stream_ae.errors import FencedError, GaveUpError, SinkError, SourceError, StoreError
from stream_ae.metrics import Health, ServiceMetrics
from stream_ae.processor import Detector, MakeEngine
from stream_ae.records import Batch
from stream_ae.service.batcher import Batcher
from stream_ae.service.loop import ServiceLoop
from stream_ae.service.restore import RestoreEngine, Restorer
from stream_ae.sinks.base import BatchSink
from stream_ae.sources.base import GroupSource, OffsetCommitter, StartPositions

log = structlog.get_logger()

#: (make, restore) engine constructors
EngineFactory = tuple[MakeEngine, RestoreEngine]
#: builds the group source, told where to start assigned partitions
MakeSource = Callable[[StartPositions], GroupSource]
#: builds the sink, given the source's offset committer
MakeSink = Callable[[OffsetCommitter], BatchSink]
#: builds a whole loop (one per in-process restart)
BuildLoop = Callable[[Settings, ServiceMetrics | None, Health | None, EngineFactory],
                     ServiceLoop]


def engine_factory(settings: Settings) -> EngineFactory:
    """Build and restore real engines (imported lazily: the engine pulls in torch)."""
    from stream_ae.engine import Engine, restore_under

    def make(names: Sequence[str]) -> Detector:
        return Engine(settings.engine, names)

    def restore(blob: bytes) -> Detector:
        """Under the configured engine settings; a contradiction of the stored learned state
        raises ``ConfigMismatchError`` unless ``on_config_mismatch`` is 'keep_stored'."""
        return restore_under(blob, settings.engine, settings.checkpoint.on_config_mismatch)

    return make, restore


def prewarm_engine(settings: Settings) -> EngineFactory:
    """The real engine factories, after paying the engine's one-time lazy imports (torch
    optimizer, river, scipy.stats for the GPD tail fits) now, before joining the group, not
    inside a batch. The throwaway engine is discarded."""
    make, restore = engine_factory(settings)
    make(("warm-up",)).step(Batch.from_arrays([[0.0]]))
    calibrate.preload()
    return make, restore


def build_loop(settings: Settings, make_source: MakeSource | GroupSource, make_sink: MakeSink |
               BatchSink, engines: EngineFactory, metrics: ServiceMetrics | None = None,
               health: Health | None = None, clock: Callable[[], float] = time.monotonic,
               wall: Callable[[], float] = time.time) -> ServiceLoop:
    """A loop over the given adapters. A ready-made source gets the restorer's
    ``start_positions``; a ready-made sink is used as it is."""
    schema = FeatureSchema(settings.record, settings.engine.features.names,
                           settings.engine.features.missing)
    ck = settings.checkpoint
    restorer = Restorer(build_store(settings), schema, engines[0], engines[1], ck, clock)
    if callable(make_source):
        source = make_source(restorer.start_positions)
    else:
        source = make_source
        source.start_positions = restorer.start_positions
    sink = make_sink(source.committer()) if callable(make_sink) else make_sink
    batcher = Batcher(settings.batching.max_records, settings.batching.max_wait_ms / 1000.0,
                      clock, settings.batching.adaptive)
    return ServiceLoop(source, sink, restorer, batcher, metrics, health, wall)


def kafka_loop(settings: Settings, metrics: ServiceMetrics | None, health: Health | None,
               engines: EngineFactory, decisions_topic: str | None = None) -> ServiceLoop:
    """The production loop: Kafka group source, Kafka sink, the configured checkpoint store."""
    from stream_ae.sinks.kafka import KafkaSink
    from stream_ae.sources.kafka import KafkaGroupSource

    limit = producer_max_bytes(settings)
    return build_loop(settings, lambda starts: KafkaGroupSource(settings.kafka, starts, limit),
                      lambda committer: KafkaSink(settings.kafka, committer, decisions_topic,
                                                  limit),
                      engines, metrics, health)


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGTERM/SIGINT set ``stop``: the loop finishes its batch, commits, checkpoints, exits."""

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("shutdown_requested", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def tune_gc() -> None:
    """Freeze start-up objects and collect young garbage less often.

    The hot loop allocates many short-lived objects (messages, dicts, small arrays) and
    Python's default thresholds collect every 700 allocations, which costs a large share
    of the loop (PERFORMANCE_NOTES). Called once by ``run_service`` (process-wide setting).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def run_service(settings: Settings, stop: threading.Event | None = None,
                build: BuildLoop = kafka_loop,
                engines: Callable[[Settings], EngineFactory] = prewarm_engine) -> None:
    """Serve the metrics endpoint, install signal handlers and run loops built by ``build``
    until stopped, starting over after a Kafka failure.

    The prometheus registry is created here, per process (no import-time state).
    """
    from prometheus_client import CollectorRegistry

    from stream_ae.metrics import MetricsServer

    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        install_signal_handlers(stop)
    registry = CollectorRegistry()
    health = Health(progress_timeout=settings.service.progress_timeout_s)
    server = None
    if settings.metrics.enabled:
        server = MetricsServer(registry, health, settings.metrics.host, settings.metrics.port)
        log.info("metrics_listening", host=settings.metrics.host, port=server.start())
    metrics = ServiceMetrics(registry)
    log.info("service_starting", group_id=settings.kafka.group_id,
             topics=list(settings.kafka.input_topics), guarantee=settings.kafka.guarantee)
    factories = engines(settings)  # before the GC freeze: torch's import state is frozen
    tune_gc()
    try:
        run_restarting(lambda: build(settings, metrics, health, factories), stop,
                       settings.service.restart_backoff_s,
                       settings.service.max_restarts_same_offset)
    finally:
        if server is not None:
            server.stop()


def run_restarting(make_loop: Callable[[], ServiceLoop], stop: threading.Event,
                   backoff_s: float = 2.0, max_same_offset: int = 5) -> None:
    """Run; after a Kafka failure (e.g. a transaction lost in a broker outage) start over
    with a fresh loop: engines are restored from their checkpoints and replay up to the
    committed offsets, exactly as after a process restart. A fenced instance stops; so does
    one whose batches failed ``max_same_offset`` times in a row at the same committed
    offsets (``GaveUpError``: exit non-zero, let the orchestrator act). Failures outside a
    batch (e.g. connecting during a broker outage) do not count."""
    same, last = 0, None
    while not stop.is_set():
        loop = make_loop()
        try:
            loop.run(stop)
            return
        except FencedError:
            raise
        except (SinkError, SourceError, StoreError) as exc:
            if loop.failed_at is not None:
                same, last = (same + 1 if loop.failed_at == last else 1), loop.failed_at
            if same >= max_same_offset:
                log.error("service_gave_up", error=str(exc), failures=same,
                          committed={f"{t}/{p}": o for (t, p), o in (last or {}).items()})
                raise GaveUpError(f"a batch failed {same} times at the same committed offsets "
                                  f"{last}; last error: {exc}") from exc
            log.error("service_restarting", error=str(exc), backoff_s=backoff_s,
                      failures_same_offset=same)
            stop.wait(backoff_s)
