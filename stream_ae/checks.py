"""The contract every detector keeps (:class:`~stream_ae.processor.Detector`, what a
:class:`~stream_ae.processor.PartitionProcessor` needs of an engine), written once as
river's ``river/checks``; the sources, sinks and checkpoint stores have theirs beside their
protocols (``stream_ae.sources.checks``, ``stream_ae.sinks.checks``,
``stream_ae.checkpoint.checks``).

``tests/unit/test_detector_contract.py`` runs every check against the real
:class:`~stream_ae.engine.Engine` and the rule-based
:class:`~stream_ae.testing.ThresholdEngine`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from stream_ae.processor import Detector
from stream_ae.records import Batch, StepResult


@dataclass(frozen=True)
class Subject:
    """A detector under test: ``make()`` a fresh one, ``restore(blob)`` one from its
    ``snapshot()``, and ``batch``: records to feed it (long enough to leave warm-up)."""

    make: Callable[[], Detector]
    restore: Callable[[bytes], Detector]
    batch: Batch


def decisions(results: list[StepResult]) -> dict[str, list[object]]:
    """What a step decides, concatenated over steps (NaN scores compare equal), with the
    model version that scored each row (rejected rows have none)."""
    cat = np.concatenate
    rejected = [{row for row, _ in r.rejected} for r in results]
    return {
        "scores": np.nan_to_num(cat([r.scores for r in results]), nan=-1.0).tolist(),
        "flags": cat([r.is_anomaly for r in results]).tolist(),
        "warmup": cat([r.warmup for r in results]).tolist(),
        "rejected": [i in rej for r, rej in zip(results, rejected, strict=True)
                     for i in range(len(r))],
        "versions": [r.version(i) for r, rej in zip(results, rejected, strict=True)
                     for i in range(len(r)) if i not in rej],
    }


def steps(det: Detector, batch: Batch, cuts: list[int]) -> list[StepResult]:
    bounds = [0, *cuts, len(batch)]
    return [det.step(batch.slice(a, b)) for a, b in itertools.pairwise(bounds)]


def check_implements_the_protocol(subject: Subject) -> None:
    assert isinstance(subject.make(), Detector)


def check_step_answers_every_row(subject: Subject) -> None:
    """One score, threshold, flag and warm-up mark per row, per-feature errors per row;
    ``records_seen`` counts the rows, ``model_version`` never goes back; rejected rows have
    no score and no flag."""
    det = subject.make()
    seen, version = det.records_seen, det.model_version
    for part in (subject.batch.slice(0, 150), subject.batch.slice(150, len(subject.batch))):
        res = det.step(part)
        n = len(part)
        assert len(res) == n == len(res.thresholds) == len(res.is_anomaly) == len(res.warmup)
        assert res.feature_errors.shape == (n, len(res.feature_names))
        assert det.records_seen == seen + n and det.model_version >= version
        seen, version = det.records_seen, det.model_version
        for row, _reason in res.rejected:
            assert np.isnan(res.scores[row]) and not res.is_anomaly[row]
    assert not det.step(subject.batch.slice(0, 0)).is_anomaly.any()


def check_results_do_not_depend_on_the_split(subject: Subject) -> None:
    """Any cut of the stream into steps gives the decisions of one step over all of it."""
    whole = decisions(steps(subject.make(), subject.batch, []))
    assert decisions(steps(subject.make(), subject.batch, [1, 137, 138, 400])) == whole
    assert any(whole["flags"])  # the stream has something to find


def check_snapshot_restore_continue_equals_uninterrupted(subject: Subject) -> None:
    """A detector restored from ``snapshot()`` decides the rest of the stream exactly as
    the uninterrupted one, and its counters continue."""
    cut = len(subject.batch) // 2
    rest = subject.batch.slice(cut, len(subject.batch))
    det = subject.make()
    det.step(subject.batch.slice(0, cut))
    blob = det.snapshot()
    assert isinstance(blob, bytes)
    restored = subject.restore(blob)
    assert (restored.records_seen, restored.model_version) == (det.records_seen,
                                                               det.model_version)
    assert decisions([restored.step(rest)]) == decisions([det.step(rest)])


def yield_checks() -> Iterator[Callable[[Subject], None]]:
    """Every detector check, in a stable order."""
    yield check_implements_the_protocol
    yield check_step_answers_every_row
    yield check_results_do_not_depend_on_the_split
    yield check_snapshot_restore_continue_equals_uninterrupted
