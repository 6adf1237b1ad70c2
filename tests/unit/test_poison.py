"""Hostile input: bounded dead letters, key/field limits, deterministic dead letters, the
healthz progress watchdog, giving up after repeated failures, bounded per-key memory."""

from __future__ import annotations

import hashlib
import pathlib
import threading
from collections.abc import Callable

import numpy as np
import orjson
import pytest
from structlog.testing import capture_logs

from stream_ae import decode, encode
from stream_ae.config import RecordFormat, Settings, producer_max_bytes
from stream_ae.decode import Decoder
from stream_ae.errors import ConfigError, GaveUpError, SinkError
from stream_ae.metrics import Health
from stream_ae.outputs import Outputs
from stream_ae.records import DeadLetter, RawBlock, RawMessage, SourcePosition
from stream_ae.service.loop import ServiceLoop
from stream_ae.service.main import build_loop, run_restarting
from stream_ae.sinks.kafka import producer_config
from stream_ae.sinks.memory import MemorySink
from stream_ae.sources.files import Columns, FileSource
from stream_ae.sources.kafka import consumer_config
from stream_ae.sources.memory import MemoryGroupSource
from stream_ae.testing import ThresholdEngine
from stream_ae.windowing import FeatureStage

TP0 = ("s", 0)
ENGINES = (lambda n: ThresholdEngine(n, 5.0), ThresholdEngine.restore)
POS = SourcePosition("sensors", 3, 42)


def letter(value: bytes | None, headers: tuple[tuple[str, bytes], ...] = (),
           key: bytes | None = b"k", detail: str = "") -> DeadLetter:
    return DeadLetter("invalid_json", detail, RawMessage(value, key, headers, None, POS))


# --------------------------------------------------------------------------- dead letters
@pytest.mark.parametrize("size", [999_900, 1_000_001, 1_048_000, 5_000_000])
def test_a_dead_letter_never_exceeds_the_producer_limit(size: int) -> None:
    value = b"{" + b"x" * (size - 1)
    out = encode.dead_letter_message(letter(value, (("trace", b"t" * 5000),)), 1.0, 1_000_000)
    h = dict(out.headers)
    assert out.size <= 1_000_000
    assert h["stream-ae.truncated"] == b"true"
    assert h["stream-ae.original-size"] == str(size).encode()
    assert h["stream-ae.original-sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert value.startswith(out.value) and len(out.value) > 990_000
    assert h["trace"] == b"t" * encode.HEADER_VALUE_BYTES
    assert h["stream-ae.headers-truncated"] == b"1"


def test_a_dead_letter_that_fits_keeps_its_payload_and_has_no_truncation_headers() -> None:
    value = b"{" + b"x" * 999_899
    out = encode.dead_letter_message(letter(value, (("h", b"1"),)), 1.0)  # default limit
    assert out.value == value and out.key == b"k"
    assert not any(k.startswith("stream-ae.truncated") for k, _ in out.headers)
    assert out.headers[0] == ("h", b"1")


def test_dead_letter_headers_and_key_are_bounded() -> None:
    many = tuple((f"h{i}" * 200, b"v" * 3000) for i in range(500))
    d = letter(b"x", many, key=b"K" * 100_000, detail="\u00e9" * 10_000)
    out = encode.dead_letter_message(d, 1.0, 1_000_000)
    h = dict(out.headers)
    assert len(out.key or b"") == encode.DEAD_LETTER_KEY_BYTES
    assert h["stream-ae.original-key-size"] == b"100000"
    assert len(h["stream-ae.detail"]) <= encode.DETAIL_BYTES
    assert h["stream-ae.detail"].decode() == "\u00e9" * 250  # cut on a character boundary
    originals = [(k, v) for k, v in out.headers if not k.startswith("stream-ae.")]
    assert 0 < len(originals) < 500 and h["stream-ae.headers-truncated"] == b"500"
    assert sum(len(k) + len(v) for k, v in originals) <= 1_000_000 // 8
    assert out.value == b"x" and out.size <= 1_000_000


# --------------------------------------------------------------------------- limits
def test_long_keys_and_too_many_fields_are_dead_lettered() -> None:
    fmt = RecordFormat(max_key_length=8, max_fields=5)
    values = [b'{"key": "short", "a": 1}', b'{"key": "' + b"k" * 9 + b'", "a": 1}',
              b'{"a": 1, "ts": 2.0}', b'{"key": "k", "a": 1, "b": 2, "c": 3, "d": 4, "e": 5}',
              b'{"key": "k", "ts": 1.0, "a": 1, "b": 2, "c": 3}']
    keys: list[bytes | None] = [None, None, b"m" * 9, None, None]
    blk = RawBlock("t", 0, list(range(5)), values, keys, [None] * 5)
    out = Decoder(("a",), fmt).decode(blk)
    assert [(d.original.position.offset, d.reason) for d in out.dead_letters] == [
        (1, "key_too_long"), (2, "key_too_long"), (3, "too_many_fields")]
    assert out.batch.keys == ("short", "k")


def test_feature_names_are_not_inferred_from_hostile_records() -> None:
    fmt = RecordFormat(max_fields=50, max_field_name_length=10)
    wide = orjson.dumps({f"f{i}": i for i in range(51)})
    long_name = orjson.dumps({"x" * 11: 1.0, "a": 2.0})
    blk = RawBlock("t", 0, [0, 1, 2, 3], [wide, long_name, b'{"key": "k"}', b'{"a": 1, "b": 2}'],
                   [None] * 4, [None] * 4)
    assert decode.infer_feature_names(blk, fmt) == ("a", "b")
    decoder, out = decode.decode_inferring(blk, fmt)
    assert decoder is not None and decoder.names == ("a", "b")
    assert [d.reason for d in out.dead_letters] == ["too_many_fields", "field_name_too_long",
                                                    "no_features"]
    assert out.offsets.tolist() == [3]


def test_configured_names_must_respect_the_limits() -> None:
    with pytest.raises(ConfigError, match="max_field_name_length"):
        Settings.load(None, engine={"features": {"names": ["x" * 200]}})


def _file_dead_letters(path: pathlib.Path, max_key_length: int = 256, max_fields: int = 1000
                       ) -> tuple[list[str], list[tuple[int, str]]]:
    """Keys decoded and (line, reason) of the dead letters of a file, through the decoder."""
    src = FileSource(path, Columns(key="key"), max_key_length=max_key_length,
                     max_fields=max_fields)
    keys, dead = [], []
    while not src.done:
        for blk in src.poll_blocks(1000, 0.0):
            fmt = src.record_format()
            names = src.roles.features
            out = Decoder(names, fmt).decode(blk)
            keys += list(out.batch.keys)
            dead += [(d.original.position.offset, d.reason) for d in out.dead_letters]
    return keys, dead


def test_file_rows_with_long_keys_or_too_many_fields_are_dead_lettered(
        tmp_path: pathlib.Path) -> None:
    csv = tmp_path / "k.csv"
    csv.write_text("key,x\nshort,1\n" + "k" * 300 + ",2\nok,3\n")
    assert _file_dead_letters(csv) == (["short", "ok"], [(3, "key_too_long")])
    import pandas as pd

    parquet = tmp_path / "k.parquet"
    pd.DataFrame({"key": ["a", "b" * 20], "x": [1.0, 2.0]}).to_parquet(parquet)
    assert _file_dead_letters(parquet, max_key_length=10) == (["a"], [(2, "key_too_long")])
    jsonl = tmp_path / "w.jsonl"
    rows = [{"key": "a", "x": 1}, {"key": "w", "x": 0, **{f"f{i}": i for i in range(20)}},
            {"key": "b", "x": 2}]
    jsonl.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    assert _file_dead_letters(jsonl, max_fields=10) == (["a", "b"], [(2, "too_many_fields")])


def test_size_limits_are_consistent_across_producer_and_consumer() -> None:
    default = Settings()
    assert producer_max_bytes(default) == 1_032_768 <= 1_048_588  # Kafka's default topic limit
    big = Settings.load(None, record={"max_message_bytes": 5_000_000})
    limit = producer_max_bytes(big)
    assert producer_config(big.kafka, limit)["message.max.bytes"] == 5_032_768
    consumer = consumer_config(big.kafka, limit)
    assert consumer["max.partition.fetch.bytes"] == 5_032_768
    assert consumer["receive.message.max.bytes"] >= consumer["fetch.max.bytes"] + 512
    own = Settings.load(None, kafka={"max_message_bytes": 2_000_000})
    assert producer_config(own.kafka, producer_max_bytes(own))["message.max.bytes"] == 2_000_000
    with pytest.raises(ConfigError, match="fetch_max_bytes"):
        Settings.load(None, kafka={"max_message_bytes": 2_000_000, "fetch_max_bytes": 1_000_000})


# --------------------------------------------------------------------------- determinism
class HeaderSource(MemoryGroupSource):
    """Blocks with message keys and headers, as the Kafka source hands them over."""

    def poll_blocks(self, max_n: int, timeout: float) -> list[RawBlock]:
        out = []
        for b in super().poll_blocks(max_n, timeout):
            offs = list(b.offsets)
            out.append(RawBlock(b.topic, b.partition, offs, b.values,
                                [b"key-%d" % o for o in offs], [1000 * o for o in offs],
                                _trace(offs)))
        return out


def _trace(offsets: list[int]) -> Callable[[int], tuple[tuple[str, bytes], ...]]:
    return lambda i: (("trace", b"t-%d" % offsets[i]),)


Wire = tuple[bytes, bytes | None, list[tuple[str, bytes]]]


def dead_letter_bytes(max_records: int, per_poll: int, msgs: list[bytes | None],
                      tmp: pathlib.Path) -> dict[int, Wire]:
    settings = Settings.load(None, batching={"max_records": max_records, "max_wait_ms": 1},
                             checkpoint={"directory": str(tmp)},
                             record={"max_message_bytes": 2000})
    src = HeaderSource({TP0: msgs}, max_per_poll=per_poll)
    sink = MemorySink(src.committer())
    loop = build_loop(settings, src, sink, ENGINES)
    with capture_logs():
        loop.run_until_idle()
    out = {}
    for d in sink.dead_letters:
        m = encode.dead_letter_message(d, 0.0, 20_000)
        out[d.original.position.offset] = (m.value, m.key, m.headers)
    return out


def test_dead_letters_do_not_depend_on_how_batches_were_split(tmp_path: pathlib.Path) -> None:
    good = [orjson.dumps({"a": float(i % 7), "b": 1.0}) for i in range(48)]
    bad: list[bytes | None] = [b"{oops", b'{"key": "k"}', None, b'{"a": "x", "b": 1}',
                               b'{"a": NaN, "b": 1}', b"{" + b"x" * 30_000,
                               b'{"a": 1, "b": 2, "key": "' + b"k" * 300 + b'"}']
    msgs: list[bytes | None] = [*bad[:3]]  # before the first record that names the features
    for i, g in enumerate(good):
        msgs.append(g)
        if i % 6 == 5:
            msgs.append(bad[(i // 6) % len(bad)])
    runs = [dead_letter_bytes(mr, pp, msgs, tmp_path / f"c{mr}-{pp}")
            for mr, pp in ((1000, 1000), (3, 1), (7, 2), (1, 1))]
    assert len(runs[0]) == 3 + len(good) // 6
    assert {h[1] for _, _, hs in runs[0].values() for h in hs if h[0] == "stream-ae.reason"} \
        >= {b"invalid_json", b"no_features", b"empty", b"oversized", b"key_too_long"}
    for other in runs[1:]:
        assert other == runs[0]


# --------------------------------------------------------------------------- liveness
def test_healthz_watchdog_fails_only_without_progress_while_there_is_input() -> None:
    now = [0.0]
    h = Health(stale_after=60.0, progress_timeout=30.0, clock=lambda: now[0])
    for t in range(0, 100, 10):  # idle for 100 s: nothing to do is not a stall
        now[0] = float(t)
        h.tick(backlog=False)
        assert h.alive()
    for when in (100.0, 110.0, 119.0):  # input waits, no commit yet (idle until 90)
        now[0] = when
        h.tick(backlog=True)
        assert h.alive()
    now[0] = 121.0
    h.tick(backlog=None)  # joining the group again: unknown does not reset the clock
    assert not h.alive()
    h.progress()
    assert h.alive()
    now[0] = 190.0  # the loop itself stopped ticking
    assert not h.alive()


def test_replaying_processed_offsets_after_a_restart_is_not_progress() -> None:
    now = [0.0]
    h = Health(stale_after=1e9, progress_timeout=30.0, clock=lambda: now[0])
    h.progress({TP0: 100, ("s", 1): 50})
    for t in (20.0, 40.0):  # restarts replay up to the committed offsets, and fail again
        now[0] = t
        h.tick(backlog=True)
        h.progress({TP0: 60, ("s", 1): 50})
    assert not h.alive()
    h.progress({TP0: 60, ("s", 1): 51})
    assert h.alive()


def test_one_blocked_partition_is_not_hidden_by_the_others_moving() -> None:
    """The stall seen on the test broker: partitions 1 and 3 trickled while 0 and 2 sat on
    a lag; the whole-service clock kept resetting, so /healthz stayed 200."""
    now = [0.0]
    h = Health(stale_after=1e9, progress_timeout=30.0, clock=lambda: now[0])
    tp1 = ("s", 1)
    position = 0
    for t in range(0, 60, 5):
        now[0] = float(t)
        position += 10  # partition 0 moves, partition 1 never does
        h.progress({TP0: position})
        h.tick(backlog=True, lags={TP0: 100, tp1: 100})
        assert h.alive() == (t < 30), t
    now[0] = 60.0
    h.tick(backlog=True, lags={TP0: 100, tp1: 0})  # partition 1 caught up: not blocked
    assert h.alive()
    now[0] = 65.0
    h.tick(backlog=True, lags={TP0: 100})  # partition 1 moved away, and comes back later:
    now[0] = 200.0
    h.progress({TP0: position + 10})
    h.tick(backlog=True, lags={TP0: 100, tp1: 100})  # its clock starts when it is owned again
    assert h.alive()


class PoisonSink(MemorySink):
    """Refuses any batch holding a dead letter of offset ``bad`` (as the producer refused an
    unbounded dead letter before), fine otherwise."""

    def __init__(self, committer: object, bad: int) -> None:
        super().__init__(committer)  # type: ignore[arg-type]
        self.bad = bad

    def write(self, out: Outputs) -> None:
        if any(d.original.position.offset == self.bad for d in out.dead_letters):
            raise SinkError("produce to dlq failed: MSG_SIZE_TOO_LARGE")
        super().write(out)


def test_the_service_gives_up_after_repeated_failures_at_the_same_offsets(
        tmp_path: pathlib.Path) -> None:
    settings = Settings.load(None, batching={"max_records": 4, "max_wait_ms": 1},
                             checkpoint={"directory": str(tmp_path)})
    msgs = [b'{"a": 1}'] * 10 + [b"{poison"] + [b'{"a": 2}'] * 10
    committed: dict[tuple[str, int], int] = {}  # the group coordinator's offsets
    built: list[ServiceLoop] = []

    def build() -> ServiceLoop:
        src = MemoryGroupSource({TP0: msgs}, committed=committed, max_per_poll=4)
        src.committed = committed  # shared across restarts, as the broker's
        built.append(build_loop(settings, src, PoisonSink(src.committer(), bad=10), ENGINES))
        return built[-1]

    with capture_logs() as logs, pytest.raises(GaveUpError, match="3 times"):
        run_restarting(build, threading.Event(), backoff_s=0.0, max_same_offset=3)
    events = [e["event"] for e in logs]
    assert events.count("service_restarting") == 2 and "service_gave_up" in events
    assert len(built) == 3 and [lp.failed_at for lp in built] == [{TP0: 8}] * 3
    assert committed == {TP0: 8}  # the batches before the poison were committed


def test_failures_at_different_offsets_or_outside_a_batch_do_not_give_up(
        tmp_path: pathlib.Path) -> None:
    settings = Settings.load(None, batching={"max_records": 4, "max_wait_ms": 1},
                             checkpoint={"directory": str(tmp_path)})
    msgs = [b'{"a": 1}'] * 40
    committed: dict[tuple[str, int], int] = {}
    stop, attempts = threading.Event(), [0]

    class FlakySink(MemorySink):
        def open(self) -> None:
            attempts[0] += 1
            if attempts[0] % 2 == 0:  # every other start fails before any batch (an outage)
                raise SinkError("cannot start producer")

        def commit(self, offsets: object, timeout: float = 60.0) -> None:
            if self.commits == 1:  # the second batch of every run fails
                raise SinkError("transaction lost")
            super().commit(offsets, timeout)  # type: ignore[arg-type]
            if committed.get(TP0) == len(msgs):
                stop.set()

    def build() -> ServiceLoop:
        src = MemoryGroupSource({TP0: msgs}, committed=committed, max_per_poll=4)
        src.committed = committed
        return build_loop(settings, src, FlakySink(src.committer()), ENGINES)

    with capture_logs():
        run_restarting(build, stop, backoff_s=0.0, max_same_offset=2)
    assert committed == {TP0: 40} and attempts[0] >= 19  # 10 runs, 9 failed starts


# --------------------------------------------------------------------------- memory
def _rss_kib() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))


def test_per_key_history_stays_bounded_with_a_million_distinct_keys() -> None:
    fs = FeatureStage(n_raw=4, lags=8, diffs=True, max_keys=10_000)
    values = np.ones((8192, 4), np.float32)
    fs.transform([f"warm-{i}" for i in range(10_000)], values[:1].repeat(10_000, axis=0))
    before = _rss_kib()
    for start in range(0, 1_000_000, 8192):
        keys = [f"k{i}" for i in range(start, start + 8192)]
        fs.transform(keys, values)
    grown = _rss_kib() - before
    assert len(fs.get_state()["keys"]) == 10_000
    assert fs.get_state()["keys"][-1] == f"k{start + 8191}"
    # unbounded: ~1M keys x (8 lags x 4 floats + dict/str overhead) > 300 MiB
    assert grown < 40 * 1024, f"RSS grew by {grown} KiB"


def test_the_run_command_exits_non_zero_when_the_service_gives_up(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from stream_ae.cli import app
    from stream_ae.service import main as service_main

    def gives_up(settings: Settings, **kw: object) -> None:
        raise GaveUpError("a batch failed 5 times at the same committed offsets {('s', 0): 8}")

    from stream_ae.sources import kafka as kafka_source

    monkeypatch.setattr(service_main, "run_service", gives_up)
    monkeypatch.setattr(kafka_source, "probe_broker", lambda kafka: None)  # no broker here
    result = CliRunner().invoke(app, ["run"])
    assert result.exit_code == 1, result.output
    shown = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert "gave up: a batch failed 5 times" in shown
