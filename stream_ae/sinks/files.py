"""Alerts and incidents to JSON Lines files (their wire formats, one message per line): a
backtest's sink."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import IO

from stream_ae.encode import encode_alert, encode_incident
from stream_ae.outputs import Outputs
from stream_ae.types import TopicPartition as TP


class AlertFile:
    """Writes the alerts of every batch to ``path`` (created on the first alert) and the
    incident messages to ``incidents_path`` (default: ``<path stem>.incidents.jsonl``).

    Examples
    --------
    >>> import tempfile
    >>> f = AlertFile(pathlib.Path(tempfile.mkdtemp()) / "a.jsonl")
    >>> f.write(Outputs()); f.commit({}); f.close()
    >>> (f.count, f.path.exists())
    (0, False)
    """

    def __init__(self, path: pathlib.Path, incidents_path: pathlib.Path | None = None) -> None:
        self.path = path
        self.incidents_path = incidents_path or path.with_name(
            path.name.removesuffix(".alerts.jsonl").removesuffix(".jsonl") + ".incidents.jsonl")
        self.count = 0
        self.incidents = 0
        self._fh: IO[bytes] | None = None
        self._ih: IO[bytes] | None = None

    def open(self) -> None:
        """Nothing to connect: the file is created with the first alert."""

    def begin(self) -> None:
        """Writes need no transaction."""

    def write(self, out: Outputs) -> None:
        if out.alerts and self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("wb")
        for a in out.alerts:
            assert self._fh is not None
            self._fh.write(encode_alert(a) + b"\n")
        self.count += len(out.alerts)
        if out.incidents and self._ih is None:
            self.incidents_path.parent.mkdir(parents=True, exist_ok=True)
            self._ih = self.incidents_path.open("wb")
        for i in out.incidents:
            assert self._ih is not None
            self._ih.write(encode_incident(i) + b"\n")
        self.incidents += len(out.incidents)

    def commit(self, offsets: Mapping[TP, int], timeout: float = 20.0) -> None:
        """No input offsets to commit: flush the file."""
        for fh in (self._fh, self._ih):
            if fh is not None:
                fh.flush()

    def abort(self) -> None:
        """Written lines stay (a backtest has no transactions)."""

    def flush(self, timeout: float = 10.0) -> None:
        self.commit({})

    def close(self) -> None:
        for fh in (self._fh, self._ih):
            if fh is not None:
                fh.close()
        self._fh = self._ih = None
