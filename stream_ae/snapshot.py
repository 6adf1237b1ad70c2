"""Engine state <-> bytes, without pickle.

A snapshot is one byte string::

    MAGIC (16 bytes) | format version (u32) | header length (u64) | header (JSON)
    | arrays (.npz, read with allow_pickle=False) | blobs (opaque, e.g. torch.save
    output read with weights_only=True) | SHA-256 of everything before (32 bytes)

The header holds a plain-data tree (dicts, lists, numbers, strings, None) in
which each numpy array is replaced by a reference ``{"__nd__": name}`` into the
npz section, and the byte length of every blob. Anything malformed, truncated,
or of another format version raises :class:`~stream_ae.errors.SnapshotError`.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from typing import Any

import numpy as np

from stream_ae.errors import SnapshotError

MAGIC = b"STREAM-AE-SNAP\x00\x01"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<IQ")
_DIGEST = 32


def encode(tree: dict[str, Any], blobs: dict[str, bytes]) -> bytes:
    """Serialise a plain-data tree with numpy arrays, plus named opaque blobs.

    >>> import numpy as np
    >>> data = encode({"a": np.arange(3), "b": [1, "x", None]}, {"m": b"raw"})
    >>> tree, blobs = decode(data)
    >>> (tree["a"].tolist(), tree["b"], blobs["m"])
    ([0, 1, 2], [1, 'x', None], b'raw')
    """
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    plain = _extract(tree, arrays)
    npz = io.BytesIO()
    np.savez(npz, **arrays)  # type: ignore[arg-type]
    npz_bytes = npz.getvalue()
    header = {
        "tree": plain,
        "npz": len(npz_bytes),
        "blobs": [[name, len(b)] for name, b in blobs.items()],
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    prefix = _PREFIX.pack(FORMAT_VERSION, len(head))
    body = b"".join([MAGIC, prefix, head, npz_bytes, *blobs.values()])
    return body + hashlib.sha256(body).digest()


def decode(data: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Parse :func:`encode` output; ``SnapshotError`` when it is not a valid snapshot."""
    body = _verified_body(data)
    version, head_len = _PREFIX.unpack_from(body, len(MAGIC))
    if version != FORMAT_VERSION:
        raise SnapshotError(f"snapshot format version {version}, this build reads {FORMAT_VERSION}")
    pos = len(MAGIC) + _PREFIX.size
    try:
        header = json.loads(body[pos : pos + head_len])
        pos += head_len
        npz_len = int(header["npz"])
        with np.load(io.BytesIO(body[pos : pos + npz_len]), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        pos += npz_len
        blobs: dict[str, bytes] = {}
        for name, length in header["blobs"]:
            blobs[str(name)] = body[pos : pos + int(length)]
            pos += int(length)
        tree = _restore(header["tree"], arrays)
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise SnapshotError(f"malformed snapshot: {exc}") from exc
    if pos != len(body) or not isinstance(tree, dict):
        raise SnapshotError("malformed snapshot: sections do not add up")
    return tree, blobs


def _verified_body(data: bytes) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SnapshotError(f"a snapshot is bytes, got {type(data).__name__}")
    raw = bytes(data)
    if len(raw) < len(MAGIC) + _PREFIX.size + _DIGEST or not raw.startswith(MAGIC):
        raise SnapshotError("not a stream_ae snapshot (bad magic or too short)")
    body, digest = raw[:-_DIGEST], raw[-_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise SnapshotError("snapshot checksum mismatch (truncated or corrupted)")
    return body


def _extract(node: Any, arrays: dict[str, np.ndarray[Any, Any]]) -> Any:
    if isinstance(node, np.ndarray):
        name = f"a{len(arrays)}"
        arrays[name] = node
        return {"__nd__": name}
    if isinstance(node, dict):
        return {str(k): _extract(v, arrays) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_extract(v, arrays) for v in node]
    if isinstance(node, np.generic):
        return node.item()
    return node


def _restore(node: Any, arrays: dict[str, np.ndarray[Any, Any]]) -> Any:
    if isinstance(node, dict):
        if set(node) == {"__nd__"}:
            return arrays[node["__nd__"]]
        return {k: _restore(v, arrays) for k, v in node.items()}
    if isinstance(node, list):
        return [_restore(v, arrays) for v in node]
    return node
