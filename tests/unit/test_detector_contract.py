"""The detector contract (``stream_ae.checks``) against the engine and the rule-based
stand-in the service tests use."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from stream_ae.checks import Subject, yield_checks
from stream_ae.config import (
    DecisionConfig,
    EngineConfig,
    ModelConfig,
    ThresholdConfig,
    TrainingConfig,
)
from stream_ae.engine import Engine
from stream_ae.records import Batch
from stream_ae.testing import ThresholdEngine
from tests.streams import latent

CHECKS = list(yield_checks())
NAMES = ("a", "b", "c")


def stream(n: int = 900, seed: int = 0) -> Batch:
    """Correlated readings with spikes and one non-finite row."""
    x = latent(n, seed, loadings=[[1.0, 2.0, -1.0]], spikes=15)
    x[300, 1] = np.nan
    return Batch.from_arrays(x, keys=[f"k{i % 2}" for i in range(n)],
                             timestamps=np.arange(n, dtype=float))


CONFIG = EngineConfig(
    model=ModelConfig(hidden=(8,), bottleneck=2, seed=3),
    training=TrainingConfig(stride=64, window=256, batch_size=64, warmup=100, warmup_epochs=3),
    threshold=ThresholdConfig(q=0.95, window=300, min_count=20),
    decision=DecisionConfig(min_scores=20, key_min_records=10, false_alarm_rate=0.01))

SUBJECTS = {
    "engine": Subject(lambda: Engine(CONFIG, NAMES), lambda b: Engine.restore(b, CONFIG),
                      stream()),
    "threshold-engine": Subject(lambda: ThresholdEngine(NAMES, limit=5.0),
                                ThresholdEngine.restore, stream()),
}


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
@pytest.mark.parametrize("kind", sorted(SUBJECTS))
def test_detector_contract(kind: str, check: Callable[[Subject], None]) -> None:
    check(SUBJECTS[kind])
