"""serde: decoding into batches, dead-letter reasons, encoders validated by the wire models."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from stream_ae import decode, encode
from stream_ae.config import RecordFormat
from stream_ae.decode import Decoder
from stream_ae.outputs import Decision, EventRecord, message_id
from stream_ae.records import (
    Alert,
    DeadLetter,
    DriftEvent,
    RawBlock,
    RawMessage,
    SensorContribution,
    SourcePosition,
)
from stream_ae.schema import AlertMessage, DecisionMessage, EventMessage


def block(values: list[bytes | None], keys: list[bytes | None] | None = None,
          stamps: list[int | None] | None = None) -> RawBlock:
    n = len(values)
    return RawBlock("t", 1, list(range(10, 10 + n)), values, keys or [None] * n,
                    stamps or [None] * n, lambda i: (("h", str(i).encode()),))


@pytest.mark.parametrize(("value", "reason"), [
    (None, "empty"), (b"", "empty"), (b"{", "invalid_json"), (b"\xff\xfe", "invalid_json"),
    (b"[1]", "not_object"), (b"3", "not_object"), (b'{"a": 1}', "missing_feature"),
    (b'{"a": 1, "b": null}', "missing_feature"), (b'{"a": 1, "b": "2"}', "non_numeric"),
    (b'{"a": 1, "b": true}', "non_numeric"), (b'{"a": 1, "b": NaN}', "non_finite"),
    (b'{"a": 1, "b": Infinity}', "non_finite"), (b'{"a": 1, "b": 1e300}', "non_finite"),
    (b'{"a": 1, "b": 2, "ts": "soon"}', "bad_timestamp"),
    (b'{"a": 1, "b": 2, "key": [1]}', "bad_key"),
    (b'{"a": 1, "b": 2, "y": 7}', "bad_label"),
    (b'{"a": 1, "b": 2, "pad": "' + b"x" * 300 + b'"}', "oversized"),
])
def test_bad_message_becomes_dead_letter_with_reason(value: bytes | None, reason: str) -> None:
    fmt = RecordFormat(label_field="y", max_message_bytes=256)
    good = b'{"a": 1, "b": 2}'
    out = Decoder(("a", "b"), fmt).decode(block([good, value, good]))
    assert [d.reason for d in out.dead_letters] == [reason]
    d = out.dead_letters[0]
    assert d.original.value == value
    assert d.original.position == SourcePosition("t", 1, 11)
    assert d.original.headers == (("h", b"1"),)
    assert out.offsets.tolist() == [10, 12]
    assert out.batch.values.tolist() == [[1.0, 2.0], [1.0, 2.0]]


def test_good_records_keep_order_keys_times_labels() -> None:
    vals = [b'{"key": "p1", "ts": 1700000000000, "a": 1.5, "b": -2, "y": 1}',
            b'{"ts": "2024-01-01T00:00:00Z", "a": 0, "b": 3}',
            b'{"a": 4, "b": 5}']
    out = Decoder(("a", "b"), RecordFormat(label_field="y")).decode(
        block(vals, keys=[None, b"mk", None], stamps=[None, None, 2500]))
    b = out.batch
    assert b.keys == ("p1", "mk", "")
    assert b.timestamps.tolist() == [1700000000.0, 1704067200.0, 2.5]
    assert b.values.dtype == np.float32 and b.values.tolist() == [[1.5, -2], [0, 3], [4, 5]]
    assert b.labels is not None and b.labels.tolist() == [1, -1, -1]
    assert out.raw_values is not None and out.raw_values.dtype == np.float64


def test_ffill_policy_keeps_missing_values_as_nan() -> None:
    out = Decoder(("a", "b"), RecordFormat(), missing="ffill").decode(
        block([b'{"a": 1}', b'{"a": NaN, "b": null}', b'{"a": 1, "b": "x"}']))
    assert [d.reason for d in out.dead_letters] == ["non_numeric"]
    assert np.isnan(out.batch.values[0, 1]) and np.isnan(out.batch.values[1]).all()


def test_timestamp_units_and_missing() -> None:
    assert decode.event_time({"ts": 1.5}, "ts", None) == 1.5
    assert decode.event_time({"ts": 1_700_000_000_123}, "ts", None) == 1_700_000_000.123
    assert math.isnan(decode.event_time({}, "ts", None))


def test_concat_and_tail_keep_headers_aligned() -> None:
    a, b = block([b"1", b"2"]), RawBlock("t", 1, [12], [b"3"], [None], [None],
                                          lambda i: (("z", b"9"),))
    c = RawBlock.concat([a, b])
    assert c.offsets == [10, 11, 12] and c.message(2).headers == (("z", b"9"),)
    assert c.tail(1).message(0).headers == (("h", b"1"),)


def _alert() -> Alert:
    pos = SourcePosition("s", 2, 7)
    top = (SensorContribution("a", 9.0, 1.0, "high", 0.8, 0),
           SensorContribution("b", math.nan, 1.0, "low", 0.2, 3))
    return Alert(message_id(pos), "k", math.nan, {"a": 1.0, "b": math.inf}, 3.0, 1.0,
                 top, 4, pos, True, 99.0, grade=0.6, incident_id="s/2/5/incident")


def test_encoded_incident_validates_against_the_wire_model() -> None:
    from stream_ae.records import Incident, IncidentChange
    from stream_ae.schema import IncidentMessage

    ch = IncidentChange("resolved", "pump", 5, 0, 1.0, 9.0, 0.7, 12, 8,
                        (("a", 0.75), ("b", 0.25)), "quiet")
    msg = IncidentMessage.model_validate_json(encode.encode_incident(
        Incident("s/0/5/incident", ch, SourcePosition("s", 0, 16), 3, 2.0)))
    assert (msg.status, msg.reason, msg.records, msg.top_sensors[0].name) == (
        "resolved", "quiet", 12, "a")
    assert msg.source.offset == 16 and msg.incident_id == "s/0/5/incident"


def test_encoded_alert_validates_against_the_wire_model() -> None:
    msg = AlertMessage.model_validate_json(encode.encode_alert(_alert()))
    assert msg.alert_id == "s/2/7" and msg.source.offset == 7
    assert msg.event_time is None and msg.features == {"a": 1.0, "b": None}
    assert [f.name for f in msg.top_features] == ["a", "b"] and msg.context.drift_recent


def test_encoded_event_and_decision_validate() -> None:
    e = DriftEvent("drift", "adwin", 50, 3, 12.0, 1.0, 2.0, "boost")
    ev = EventMessage.model_validate_json(
        encode.encode_event(EventRecord(e, SourcePosition("s", 0, 53), 3), 100.0))
    assert ev.event_id == "s/0/53/drift" and ev.record_index == 50
    dec = DecisionMessage.model_validate_json(
        encode.encode_decision(Decision("s", 0, 5, 9, (6,), (8,))))
    assert (dec.start_offset, dec.end_offset, dec.alert_offsets) == (5, 9, [6])


def test_dead_letter_headers_carry_reason_and_coordinates() -> None:
    m = RawMessage(b"x", b"k", (("orig", b"1"),), 5, SourcePosition("s", 3, 8))
    h = dict(encode.dead_letter_headers(DeadLetter("non_numeric", "bad b", m), 1.0))
    assert h["orig"] == b"1" and h["stream-ae.reason"] == b"non_numeric"
    assert (h["stream-ae.source-topic"], h["stream-ae.source-partition"],
            h["stream-ae.source-offset"]) == (b"s", b"3", b"8")


def test_infer_feature_names_skips_undecodable_and_non_numeric() -> None:
    blk = block([b"oops", orjson.dumps({"key": "a", "ts": 1, "x": 1, "on": True, "y": 2.0})])
    assert decode.infer_feature_names(blk, RecordFormat()) == ("x", "y")
