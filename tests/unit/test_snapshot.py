"""The snapshot container: round trip, integrity checks, no pickles."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest

from stream_ae import snapshot
from stream_ae.errors import SnapshotError


def sample() -> bytes:
    tree = {
        "n": 3, "f": float("nan"), "s": "x", "none": None, "big": 2**100,
        "nested": {"arr": np.arange(6, dtype=np.float32).reshape(2, 3), "flags": np.array([True])},
        "list": [np.zeros(0), 1.5],
    }
    return snapshot.encode(tree, {"model": b"\x00\x01weights", "other": b""})


def test_round_trip_keeps_types_shapes_and_values() -> None:
    tree, blobs = snapshot.decode(sample())
    assert tree["n"] == 3 and np.isnan(tree["f"]) and tree["big"] == 2**100
    assert tree["none"] is None and tree["s"] == "x"
    arr = tree["nested"]["arr"]
    assert (arr.dtype, arr.shape, arr.tolist()) == (np.float32, (2, 3), [[0, 1, 2], [3, 4, 5]])
    assert tree["nested"]["flags"].dtype == np.bool_
    assert tree["list"][0].shape == (0,) and tree["list"][1] == 1.5
    assert blobs == {"model": b"\x00\x01weights", "other": b""}


@pytest.mark.parametrize("mangle", [
    lambda b: b[:-1],
    lambda b: b[:40],
    lambda b: b"X" + b[1:],
    lambda b: b[:100] + bytes([b[100] ^ 1]) + b[101:],
    lambda b: b"",
])
def test_corrupt_or_truncated_snapshots_raise(mangle) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SnapshotError):
        snapshot.decode(mangle(sample()))


def test_other_format_version_is_rejected() -> None:
    import hashlib

    data = sample()
    body = bytearray(data[:-32])
    struct.pack_into("<I", body, len(snapshot.MAGIC), snapshot.FORMAT_VERSION + 1)
    forged = bytes(body) + hashlib.sha256(bytes(body)).digest()
    with pytest.raises(SnapshotError, match="format version"):
        snapshot.decode(forged)


def test_object_arrays_are_never_unpickled() -> None:
    with pytest.raises(SnapshotError):
        snapshot.decode(snapshot.encode({"evil": np.array([{"a": 1}], dtype=object)}, {}))


def test_non_bytes_input_is_rejected() -> None:
    with pytest.raises(SnapshotError):
        snapshot.decode(io.BytesIO(b"x"))  # type: ignore[arg-type]
