"""The service loop with the in-memory group source and sink, and the real engine."""

from __future__ import annotations

import pathlib

import numpy as np
import orjson
import pytest
from structlog.testing import capture_logs

from stream_ae.checkpoint import CheckpointStore
from stream_ae.config import Settings
from stream_ae.engine import Engine
from stream_ae.service.loop import ServiceLoop
from stream_ae.service.main import EngineFactory, build_loop, engine_factory, run_restarting
from stream_ae.sinks.memory import MemorySink
from stream_ae.sources.memory import MemoryGroupSource
from stream_ae.testing import FixedClock, ThresholdEngine
from tests import oracle
from tests.streams import gaussian, messages

NAMES = ("a", "b", "c")
TP0 = ("s", 0)


def small_settings(tmp: pathlib.Path, max_records: int = 64, **kw: object) -> Settings:
    data = {
        "engine": {"features": {"names": list(NAMES)},
                   "model": {"hidden": [8], "bottleneck": 2},
                   "training": {"warmup": 100, "window": 128, "batch_size": 64, "stride": 32,
                                "warmup_epochs": 3},
                   "threshold": {"window": 100, "q": 0.97},
                   "decision": {"false_alarm_rate": 1e-2, "min_scores": 20,
                                "key_min_records": 10}},
        "batching": {"max_records": max_records, "max_wait_ms": 50},
        "checkpoint": {"directory": str(tmp / "ckpt"), "interval_records": 150, "keep": 2},
    }
    return Settings.load(None, **{**data, **kw})


def stream(n: int, seed: int = 0) -> tuple[list[bytes], np.ndarray]:
    x, _ = gaussian(n, len(NAMES), seed, anomalies=n // 50, after=150, shift=8.0)
    return messages(x, NAMES), x


def offline_flags(settings: Settings, x: np.ndarray) -> list[int]:
    return oracle.alert_offsets(settings, messages(x, NAMES), NAMES)


RULES: EngineFactory = (lambda n: ThresholdEngine(n, 5.0), ThresholdEngine.restore)


def make(settings: Settings, src: MemoryGroupSource, sink: MemorySink | None = None,
         engines: EngineFactory | None = None, **kw: object) -> ServiceLoop:
    return build_loop(settings, src, sink or MemorySink(src.committer()),
                      engines or engine_factory(settings), **kw)  # type: ignore[arg-type]


def run(settings: Settings, src: MemoryGroupSource, sink: MemorySink | None = None,
        engines: EngineFactory | None = None) -> MemorySink:
    sink = sink or MemorySink(src.committer())
    with capture_logs():
        make(settings, src, sink, engines).run_until_idle()
    return sink


def test_alerts_equal_offline_engine_flags(tmp_path: pathlib.Path) -> None:
    settings = small_settings(tmp_path, max_records=37)
    msgs, x = stream(600)
    sink = run(settings, MemoryGroupSource({TP0: msgs}, max_per_poll=23))
    expected = offline_flags(settings, x)
    assert len(expected) > 5
    assert [a.position.offset for a in sink.alerts if a.position] == expected
    assert sink.offsets == {TP0: 600}
    a = sink.alerts[0]
    assert a.alert_id == f"s/0/{expected[0]}"
    assert a.features == pytest.approx(dict(zip(NAMES, x[expected[0]].tolist(), strict=False)))
    assert a.key == f"k{expected[0] % 3}" and a.timestamp == 1000.0 + expected[0]
    assert len(a.top_features) == 3 and a.incident_id == f"s/0/{expected[0]}/incident"
    assert {t.name for t in a.top_features} == set(NAMES) and 0 < a.grade <= 1


def test_every_offset_gets_one_decision_and_bad_input_is_dead_lettered(
        tmp_path: pathlib.Path) -> None:
    good = [orjson.dumps({"a": 1.0, "b": 2.0, "c": float(i)}) for i in range(6)]
    bad = [b"{not json", None, b"[1, 2]", b'{"a": 1, "b": 2}', b'{"a": "x", "b": 1, "c": 1}',
           b'{"a": NaN, "b": 1, "c": 1}', b'{"a": 1, "b": 1, "c": 1, "ts": "yesterday"}',
           b'{"a": 1, "b": 1, "c": 1e39}']
    msgs = [m for pair in zip(good, bad, strict=False) for m in pair] + good[len(bad):] + bad[6:]
    settings = small_settings(tmp_path)
    sink = run(settings, MemoryGroupSource({TP0: msgs}))
    reasons = {d.original.position.offset: d.reason for d in sink.dead_letters}
    assert sorted(reasons.values()) == sorted(["invalid_json", "empty", "not_object",
                                              "missing_feature", "non_numeric", "non_finite",
                                              "bad_timestamp", "non_finite"])
    assert all(msgs[o] is None or msgs[o] == d.original.value
               for o, d in zip(reasons, sink.dead_letters, strict=True))
    covered = [o for d in sink.decisions for o in range(d.start, d.end)]
    assert covered == list(range(len(msgs)))
    assert sorted(o for d in sink.decisions for o in d.dead_letters) == sorted(reasons)


def test_engine_rejections_become_dead_letters(tmp_path: pathlib.Path) -> None:
    msgs = [b'{"a": 1}', b'{"a": NaN}', b'{"a": 9}']
    settings = small_settings(tmp_path, engine={"features": {"names": ["a"], "missing": "ffill"}})
    sink = run(settings, MemoryGroupSource({TP0: msgs}), engines=RULES)
    assert [(d.reason, d.original.position.offset) for d in sink.dead_letters] == [
        ("rejected:non_finite", 1)]
    assert [a.alert_id for a in sink.alerts] == ["s/0/2"]


def test_restart_replays_without_publishing_and_loses_nothing(tmp_path: pathlib.Path) -> None:
    settings = small_settings(tmp_path, max_records=40)
    msgs, x = stream(700, seed=1)
    src = MemoryGroupSource({TP0: msgs[:430]})
    first = run(settings, src)
    # the crash: the newest checkpoints are lost, so the restart must replay silently
    store = CheckpointStore(settings.checkpoint.directory)
    newest = store.paths(*TP0)[-1]
    newest.unlink()
    assert store.load(*TP0).position < 430
    second = run(settings, MemoryGroupSource({TP0: msgs}, committed=src.committed))
    ids = [a.alert_id for a in first.alerts] + [a.alert_id for a in second.alerts]
    assert ids == [f"s/0/{o}" for o in offline_flags(settings, x)]
    assert min(d.start for d in second.decisions) == 430


def test_revoke_checkpoints_and_hands_over(tmp_path: pathlib.Path) -> None:
    settings = small_settings(tmp_path)
    msgs, x = stream(300, seed=2)
    src = MemoryGroupSource({TP0: msgs})
    sink = MemorySink(src.committer())
    loop = make(settings, src, sink)
    with capture_logs() as logs:
        loop.open()
        for _ in range(3):
            loop.cycle(idle_timeout=0.0)
        loop.flush()
        src.revoke([TP0])
        loop.cycle(idle_timeout=0.0)  # the revocation arrives as a value with the next poll
    assert loop.positions() == {}
    done = src.committed[TP0]
    assert CheckpointStore(settings.checkpoint.directory).load(*TP0).position == done
    assert "checkpoint_written" in [e["event"] for e in logs]
    other = run(settings, MemoryGroupSource({TP0: msgs}, committed=src.committed))
    ids = [a.alert_id for a in sink.alerts + other.alerts]
    assert ids == [f"s/0/{o}" for o in offline_flags(settings, x)]


def test_lost_partition_is_dropped_without_a_checkpoint(tmp_path: pathlib.Path) -> None:
    """A lost partition already belongs to someone else: no checkpoint of it is written
    (it could overwrite the new owner's); the new owner replays from the committed offset
    and the alerts of both add up to the offline run's."""
    settings = small_settings(tmp_path)
    msgs, x = stream(300, seed=2)
    src = MemoryGroupSource({TP0: msgs})
    sink = MemorySink(src.committer())
    loop = make(settings, src, sink)
    store = CheckpointStore(settings.checkpoint.directory)
    with capture_logs():
        loop.open()
        for _ in range(4):  # 256 records: checkpointed at 192, then 64 more processed
            loop.cycle(idle_timeout=0.0)
        loop.flush()
        before = [c.position for c in store.valid(*TP0)]
        assert loop.positions()[TP0] > before[0]  # state a revocation would checkpoint
        src.lose([TP0])
        loop.cycle(idle_timeout=0.0)
    assert loop.positions() == {}
    assert [c.position for c in store.valid(*TP0)] == before
    other = run(settings, MemoryGroupSource({TP0: msgs}, committed=src.committed))
    ids = [a.alert_id for a in sink.alerts + other.alerts]
    assert ids == [f"s/0/{o}" for o in offline_flags(settings, x)]


def test_feature_names_inferred_and_persisted(tmp_path: pathlib.Path) -> None:
    settings = small_settings(tmp_path, engine={"features": {"names": []}})
    msgs = [b"junk"] + [orjson.dumps({"key": "k", "ts": 1.0, "u": 1.0, "site": "x", "v": 2.0})] * 5
    sink = run(settings, MemoryGroupSource({TP0: msgs}))
    ckpt = CheckpointStore(settings.checkpoint.directory).load(*TP0)
    assert ckpt.feature_names == ("u", "v")
    assert ckpt.position == 6 and ckpt.engine is not None
    assert [d.reason for d in sink.dead_letters] == ["invalid_json"]


def test_partial_batch_waits_for_max_wait_then_is_processed(tmp_path: pathlib.Path) -> None:
    clock = FixedClock(100.0)
    settings = small_settings(tmp_path, batching={"max_records": 1000, "max_wait_ms": 200,
                                                  "adaptive": False},
                              checkpoint={"directory": str(tmp_path / "c"), "interval_s": 5.0,
                                          "interval_records": 10**6})
    msgs = [orjson.dumps({"a": 1.0, "b": 2.0, "c": 3.0})] * 50
    src = MemoryGroupSource({TP0: msgs}, max_per_poll=10)
    sink = MemorySink(src.committer())
    r = make(settings, src, sink, RULES, clock=clock)
    with capture_logs():
        r.open()
        r.cycle()  # first arrival: the 200 ms deadline starts now
        assert (src.committed, r.positions()) == ({}, {TP0: 0})
        clock.advance(0.1)
        r.cycle()
        assert sink.commits == 0
        clock.advance(0.15)
        r.cycle()
    assert sink.offsets == {TP0: 31}  # 1 + 10 at the first arrival, then 10 per poll
    assert sum(d.end - d.start for d in sink.decisions) == 31
    store = CheckpointStore(tmp_path / "c")
    assert store.load(*TP0).position == 0  # interval_s not reached yet
    clock.advance(5.0)
    with capture_logs():
        r.cycle()  # polls a new partial batch; the time-based checkpoint covers what is done
        checkpoint = store.load(*TP0)
    assert checkpoint.position == 31 and sink.offsets == {TP0: 31}


def test_adaptive_batch_goes_when_nothing_more_is_fetched(tmp_path: pathlib.Path) -> None:
    """Slow input (the source has 10 records fetched at a time): each batch is what was
    there, processed in the same cycle, without waiting for max_wait_ms."""
    clock = FixedClock(100.0)
    settings = small_settings(tmp_path, batching={"max_records": 1000, "max_wait_ms": 200})
    msgs = [orjson.dumps({"a": 1.0, "b": 2.0, "c": 3.0})] * 50
    src = MemoryGroupSource({TP0: msgs}, max_per_poll=10)
    sink = MemorySink(src.committer())
    r = make(settings, src, sink, RULES, clock=clock)
    with capture_logs():
        r.open()
        r.cycle()  # 1 record, then the 10 already fetched: drained, so due now
        assert sink.offsets == {TP0: 11} and sink.commits == 1
        r.cycle()
        assert sink.offsets == {TP0: 22} and sink.commits == 2


def test_adaptive_batches_fill_up_under_load(tmp_path: pathlib.Path) -> None:
    """Fast input (more fetched than a batch takes): batches of max_records."""
    settings = small_settings(tmp_path, batching={"max_records": 20, "max_wait_ms": 200})
    msgs = [orjson.dumps({"a": 1.0, "b": 2.0, "c": 3.0})] * 50
    src = MemoryGroupSource({TP0: msgs}, max_per_poll=1000)
    sink = MemorySink(src.committer())
    r = make(settings, src, sink, RULES, clock=FixedClock(100.0))
    with capture_logs():
        r.open()
        r.cycle()
        assert sink.offsets == {TP0: 20}
        r.cycle()
        assert sink.offsets == {TP0: 40}
    assert [d.end - d.start for d in sink.decisions] == [20, 20]


def test_service_starts_over_after_a_kafka_failure(tmp_path: pathlib.Path) -> None:
    """A lost transaction (SinkError) restarts the runner in-process: checkpoint + catch-up,
    no alert lost, nothing published twice."""
    import threading

    from stream_ae.errors import SinkError

    settings = small_settings(tmp_path)
    msgs, x = stream(400, seed=3)
    stop, committed, sinks = threading.Event(), {}, []

    class FlakySink(MemorySink):
        def commit(self, offsets: object, timeout: float = 60.0) -> None:
            if len(sinks) == 1 and self.commits == 3:
                raise SinkError("transaction lost in a broker outage")
            super().commit(offsets, timeout)  # type: ignore[arg-type]
            committed.update(offsets)  # type: ignore[arg-type]  # the group coordinator's
            if committed.get(TP0) == len(msgs):
                stop.set()

    def build() -> ServiceLoop:
        src = MemoryGroupSource({TP0: msgs}, committed=committed)  # the group's offsets
        sinks.append(FlakySink(src.committer()))
        return make(settings, src, sinks[-1])

    with capture_logs() as logs:
        run_restarting(build, stop, backoff_s=0.0)
    assert len(sinks) == 2 and "service_restarting" in [e["event"] for e in logs]
    ids = [a.alert_id for s in sinks for a in s.alerts]
    assert ids == [f"s/0/{o}" for o in offline_flags(settings, x)]


def test_unrestorable_engine_falls_back_to_an_older_checkpoint(tmp_path: pathlib.Path) -> None:
    from stream_ae.checkpoint import Checkpoint
    from stream_ae.errors import SnapshotError

    store = CheckpointStore(tmp_path / "c")
    good = ThresholdEngine(("a", "b", "c"), 5.0)
    with capture_logs():
        store.save(Checkpoint("s", 0, 2, good.snapshot(), ("a", "b", "c")))
        store.save(Checkpoint("s", 0, 4, b"valid checksum, foreign engine", ("a", "b", "c")))

    def restore(blob: bytes) -> ThresholdEngine:
        if not blob.startswith(b"{"):
            raise SnapshotError("not an engine snapshot")
        return ThresholdEngine.restore(blob)

    msgs = [b'{"a": 1, "b": 1, "c": 1}'] * 4 + [b'{"a": 9, "b": 1, "c": 1}']
    settings = small_settings(tmp_path, checkpoint={"directory": str(tmp_path / "c")})
    src = MemoryGroupSource({TP0: msgs}, committed={TP0: 4})
    sink = MemorySink(src.committer())
    with capture_logs() as logs:
        make(settings, src, sink, (RULES[0], restore)).run_until_idle()
    ready = next(e for e in logs if e["event"] == "partition_ready")
    assert "checkpoint_unusable" in [e["event"] for e in logs]
    assert (ready["start"], ready["publish_from"]) == (2, 4)
    assert [a.alert_id for a in sink.alerts] == ["s/0/4"]


def test_not_ready_while_a_partition_catches_up(tmp_path: pathlib.Path) -> None:
    """Restored at offset 2 with outputs committed up to 4: /readyz stays 503 until the
    replay reaches the committed offset, then the partition is live."""
    from stream_ae.checkpoint import Checkpoint
    from stream_ae.metrics import Health

    store = CheckpointStore(tmp_path / "c")
    with capture_logs():
        store.save(Checkpoint("s", 0, 2, ThresholdEngine(NAMES, 5.0).snapshot(), NAMES))
    msgs = [b'{"a": 1, "b": 1, "c": 1}'] * 6
    health = Health()
    settings = small_settings(tmp_path, max_records=1,
                              checkpoint={"directory": str(tmp_path / "c")})
    src = MemoryGroupSource({TP0: msgs}, committed={TP0: 4}, max_per_poll=1)
    r = make(settings, src, None, RULES, health=health)
    seen = []
    with capture_logs():
        r.open()
        seen.append((r.positions()[TP0], health.ready))
        for _ in range(4):
            r.cycle(idle_timeout=0.0)
            seen.append((r.positions()[TP0], health.ready))
        r.close()
    assert seen == [(2, False), (3, False), (4, True), (5, True), (6, True)]
    assert health.ready is False  # stopped


def _engine_checkpoint(settings: Settings, tmp: pathlib.Path, n: int = 300) -> list[bytes]:
    """Run the real engine over ``n`` records; its checkpoint is in the settings' store."""
    msgs, _ = stream(n)
    run(settings, MemoryGroupSource({TP0: msgs}), MemorySink())
    return msgs


@pytest.mark.parametrize("policy", ["fail", "reset", "keep_stored"])
def test_learned_state_config_change_follows_on_config_mismatch(
        tmp_path: pathlib.Path, policy: str) -> None:
    from stream_ae.errors import ConfigMismatchError

    before = small_settings(tmp_path)
    msgs = _engine_checkpoint(before, tmp_path)
    changed = small_settings(tmp_path, checkpoint={**before.checkpoint.model_dump(mode="json"),
                                                   "on_config_mismatch": policy},
                             engine={**before.engine.model_dump(mode="json"),
                                     "model": {"hidden": [4], "bottleneck": 2}})
    more, _ = stream(400)
    src = MemoryGroupSource({TP0: msgs + more[300:]}, committed={TP0: 300})
    r = make(changed, src)
    with capture_logs() as logs:
        if policy == "fail":
            with pytest.raises(ConfigMismatchError, match=r"model\.hidden") as err:
                r.run_until_idle()
            assert err.value.fields == ("model.hidden",)
            return
        r.run_until_idle()
    ready = next(e for e in logs if e["event"] == "partition_ready")
    mismatch = next(e for e in logs if e["event"] == "checkpoint_config_mismatch")
    assert (mismatch["fields"], mismatch["action"]) == (["model.hidden"], policy)
    final = CheckpointStore(changed.checkpoint.directory).load(*TP0)
    assert final is not None and final.engine is not None
    eng = Engine.restore(final.engine)
    if policy == "reset":  # a fresh engine from the committed offset, under the new config
        assert (ready["restored"], ready["start"]) == (False, 300)
        assert eng.records_seen == 100 and eng.config.model.hidden == (4,)
    else:  # the stored engine goes on, under the stored config
        assert (ready["restored"], ready["start"]) == (True, 300)
        assert eng.records_seen == 400 and eng.config.model.hidden == (8,)


def test_decision_settings_apply_to_the_restored_engine(tmp_path: pathlib.Path) -> None:
    before = small_settings(tmp_path)
    msgs = _engine_checkpoint(before, tmp_path)
    engine = before.engine.model_dump(mode="json")
    engine["threshold"]["q"], engine["decision"]["mode"] = 0.5, "quantile"
    changed = small_settings(tmp_path, engine=engine)
    more, _ = stream(400)
    src = MemoryGroupSource({TP0: msgs + more[300:]}, committed={TP0: 300})
    sink = MemorySink(src.committer())
    r = make(changed, src, sink)
    with capture_logs() as logs:
        r.run_until_idle()
    assert "checkpoint_config_mismatch" not in [e["event"] for e in logs]
    final = CheckpointStore(changed.checkpoint.directory).load(*TP0)
    assert final is not None and final.engine is not None
    eng = Engine.restore(final.engine)
    assert eng.records_seen == 400 and eng.config.threshold.q == 0.5
    assert eng.config.decision.mode == "quantile"
    assert len(sink.alerts) > 20  # the median threshold flags about half of 100 records


def test_inspect_shows_stored_config_beside_the_current_one(tmp_path: pathlib.Path) -> None:
    import json

    import structlog
    import yaml
    from typer.testing import CliRunner

    from stream_ae.cli import app

    before = small_settings(tmp_path)
    _engine_checkpoint(before, tmp_path)
    data = before.model_dump(mode="json")
    data["engine"]["threshold"]["q"] = 0.9
    data["engine"]["training"]["window"] = 256
    data["kafka"]["input_topics"] = ["s"]
    cfg = tmp_path / "now.yaml"
    cfg.write_text(yaml.safe_dump(data))
    saved = structlog.get_config()  # the command configures logging for the process
    try:
        result = CliRunner().invoke(app, ["checkpoint", "inspect", "-c", str(cfg)])
    finally:
        structlog.configure(**saved)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    newest = rows[0]
    assert newest["valid"] and newest["position"] == 300
    assert newest["config_diff"] == {
        "threshold.q": {"stored": 0.97, "current": 0.9},
        "training.window": {"stored": 128, "current": 256}}
    assert (newest["learned_state_mismatch"], newest["on_restart"]) == (
        ["training.window"], "fail")
    plain = CliRunner().invoke(app, ["checkpoint", "inspect",
                                     str(before.checkpoint.directory)])
    stored = json.loads(plain.stdout.splitlines()[-1])["engine_config"]
    assert stored["threshold"]["q"] == 0.97
