"""Test helpers: a fixed clock, a tiny rule engine, and broker helpers for integration tests
(env ``STREAM_AE_TEST_BOOTSTRAP`` or a local embedded broker). The in-memory group source
and sink are :mod:`stream_ae.sources.memory` and :mod:`stream_ae.sinks.memory`.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence

import numpy as np

from stream_ae.records import Batch, StepResult

BOOTSTRAP_ENV = "STREAM_AE_TEST_BOOTSTRAP"


class FixedClock:
    """A clock that moves only when told.

    >>> c = FixedClock(10.0); c.advance(2.5); c()
    12.5
    """

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ThresholdEngine:
    """A deterministic stand-in engine: flags rows whose largest |value| exceeds ``limit``.

    Rows with a non-finite value are rejected. It learns nothing (``model_version`` stays
    0), so its decisions do not depend on how the stream is cut into steps. ``snapshot``
    is JSON (no pickle).

    >>> e = ThresholdEngine(("x",), limit=1.0)
    >>> e.step(Batch.from_arrays([[0.5], [2.0]])).is_anomaly.tolist()
    [False, True]
    """

    def __init__(self, names: Sequence[str], limit: float = 3.0) -> None:
        self.names = tuple(names)
        self.limit = limit
        self.records_seen = 0
        self.model_version = 0

    def step(self, batch: Batch) -> StepResult:
        v = batch.values.astype(np.float64)
        finite = np.isfinite(v).all(axis=1)
        scores = np.where(finite, np.abs(np.nan_to_num(v)).max(axis=1, initial=0.0), np.nan)
        self.records_seen += len(batch)  # it learns nothing: model_version stays
        return StepResult(
            scores=scores, thresholds=np.full(len(batch), self.limit),
            is_anomaly=finite & (scores > self.limit), warmup=np.zeros(len(batch), dtype=bool),
            feature_errors=np.nan_to_num(v * v).astype(np.float32), feature_names=self.names,
            rejected=tuple((int(i), "non_finite") for i in np.flatnonzero(~finite)),
            model_version=self.model_version,
        )

    def snapshot(self) -> bytes:
        return json.dumps({"names": self.names, "limit": self.limit, "seen": self.records_seen,
                           "version": self.model_version}).encode()

    @classmethod
    def restore(cls, blob: bytes) -> ThresholdEngine:
        d = json.loads(blob)
        e = cls(d["names"], d["limit"])
        e.records_seen, e.model_version = d["seen"], d["version"]
        return e


def external_bootstrap() -> str | None:
    """The external broker given by ``STREAM_AE_TEST_BOOTSTRAP``, if any."""
    return os.environ.get(BOOTSTRAP_ENV) or None


def unique_name(prefix: str) -> str:
    """A topic/group name no other test uses.

    >>> unique_name("t").startswith("t-")
    True
    """
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
