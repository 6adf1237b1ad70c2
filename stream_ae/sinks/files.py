"""Alerts to a JSON Lines file (the alert wire format, one per line): a backtest's sink."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import IO

from stream_ae.encode import encode_alert
from stream_ae.outputs import Outputs
from stream_ae.types import TopicPartition as TP


class AlertFile:
    """Writes the alerts of every batch to ``path`` (created on the first alert).

    Examples
    --------
    >>> import tempfile
    >>> f = AlertFile(pathlib.Path(tempfile.mkdtemp()) / "a.jsonl")
    >>> f.write(Outputs()); f.commit({}); f.close()
    >>> (f.count, f.path.exists())
    (0, False)
    """

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.count = 0
        self._fh: IO[bytes] | None = None

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

    def commit(self, offsets: Mapping[TP, int], timeout: float = 20.0) -> None:
        """No input offsets to commit: flush the file."""
        if self._fh is not None:
            self._fh.flush()

    def abort(self) -> None:
        """Written lines stay (a backtest has no transactions)."""

    def flush(self, timeout: float = 10.0) -> None:
        self.commit({})

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
