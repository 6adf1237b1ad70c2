"""The one processing path: a partition's raw block -> decode -> engine step -> outputs.

The service (one processor per owned partition), the topic replay (one per replayed
partition) and the file backtest (one for the file) all process records with
:class:`PartitionProcessor`, so the same records give the same scores, flags, alerts and
dead letters whichever way they arrive.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from stream_ae.decode import Decoded, FeatureSchema
from stream_ae.outputs import Outputs, assemble
from stream_ae.records import Batch, RawBlock, StepResult


@runtime_checkable
class Detector(Protocol):
    """What a processor needs from an engine (``stream_ae.engine.Engine``, or the
    rule-based ``stream_ae.testing.ThresholdEngine`` in tests)."""

    @property
    def records_seen(self) -> int: ...

    @property
    def model_version(self) -> int: ...

    def step(self, batch: Batch) -> StepResult: ...

    def snapshot(self) -> bytes: ...


#: builds a fresh engine for the given raw feature names
MakeEngine = Callable[[Sequence[str]], Detector]


@dataclass(frozen=True)
class Processed:
    """One step of one partition: what was decoded, what the engine decided, what to publish."""

    block: RawBlock
    decoded: Decoded
    result: StepResult | None
    outputs: Outputs


class PartitionProcessor:
    """Decode, score and assemble the outputs of one partition's records, in offset order.

    Parameters
    ----------
    topic, partition
        The partition (a file is partition 0 of a topic named after it).
    schema
        The stream's feature names and decoder, shared by its partitions.
    make_engine
        Builds the engine when the first decodable record arrives.
    engine
        A restored engine (None: built on first data).
    position
        Next offset the engine state covers; rows below it are skipped (already processed).

    Examples
    --------
    >>> from stream_ae.config import RecordFormat
    >>> from stream_ae.testing import ThresholdEngine
    >>> p = PartitionProcessor("s", 0, FeatureSchema(RecordFormat()),
    ...                        lambda names: ThresholdEngine(names, limit=5.0))
    >>> blk = RawBlock("s", 0, [0, 1, 2], [b'{"x": 1}', b'{"x": 9}', b"bad"], [None] * 3,
    ...                [None] * 3)
    >>> out = p.process(blk, publish_from=0, now=0.0).outputs
    >>> ([a.alert_id for a in out.alerts], [d.reason for d in out.dead_letters], p.position)
    (['s/0/1'], ['invalid_json'], 3)
    """

    def __init__(self, topic: str, partition: int, schema: FeatureSchema,
                 make_engine: MakeEngine, engine: Detector | None = None, position: int = 0
                 ) -> None:
        self.topic = topic
        self.partition = partition
        self.schema = schema
        self.make_engine = make_engine
        self.engine = engine
        self.position = position

    def process(self, block: RawBlock, publish_from: int, now: float) -> Processed | None:
        """Process the rows of ``block`` at or past :attr:`position`; outputs only for rows at
        or past ``publish_from`` (rows below it were published before: a catch-up replay).
        None when the block holds no new rows."""
        block = block.tail(bisect.bisect_left(block.offsets, self.position))
        if not len(block):
            return None
        decoded = self.schema.decode(block)
        result = None
        if len(decoded.batch):
            if self.engine is None:
                assert self.schema.names is not None
                self.engine = self.make_engine(self.schema.names)
            result = self.engine.step(decoded.batch)
        self.position = block.offsets[-1] + 1
        return Processed(block, decoded, result, assemble(block, decoded, result, publish_from,
                                                          now))
