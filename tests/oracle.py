"""The offline oracle of the service and replay tests: the same raw messages through the one
decoder and one uninterrupted engine step. Whatever way records arrive (batched, split
by a rebalance, replayed after a crash), the outputs must equal this."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stream_ae.config import Settings
from stream_ae.decode import Decoded, Decoder
from stream_ae.engine import Engine
from stream_ae.records import Batch, RawBlock, StepResult


def decode(settings: Settings, values: Sequence[bytes | None], names: Sequence[str],
           topic: str = "s", partition: int = 0) -> Decoded:
    """``values`` as offsets 0.. of one partition, through the one decoder."""
    n = len(values)
    block = RawBlock(topic, partition, list(range(n)), list(values), [None] * n, [None] * n)
    return Decoder(tuple(names), settings.record, settings.engine.features.missing).decode(block)


def offline_run(settings: Settings, values: Sequence[bytes | None], names: Sequence[str],
                topic: str = "s", partition: int = 0) -> tuple[Decoded, StepResult]:
    """``values`` as offsets 0.. of one partition, decoded and scored in one step."""
    decoded = decode(settings, values, names, topic, partition)
    return decoded, Engine(settings.engine, tuple(names)).step(decoded.batch)


def alert_offsets(settings: Settings, values: Sequence[bytes | None], names: Sequence[str],
                  topic: str = "s", partition: int = 0, chunk: int | None = None) -> list[int]:
    """The offsets an uninterrupted offline engine flags (stepped ``chunk`` records at a time,
    default all at once: the results do not depend on the split, long streams step faster)."""
    if chunk is None:
        decoded, res = offline_run(settings, values, names, topic, partition)
        return decoded.offsets[res.is_anomaly].tolist()
    decoded = decode(settings, values, names, topic, partition)
    engine, b = Engine(settings.engine, tuple(names)), decoded.batch
    flagged = [engine.step(Batch(b.keys[i:i + chunk], b.timestamps[i:i + chunk],
                                 b.values[i:i + chunk])).is_anomaly
               for i in range(0, len(b.keys), chunk)]
    mask = np.concatenate(flagged) if flagged else np.zeros(0, dtype=bool)
    return decoded.offsets[mask].tolist()


def scores(settings: Settings, values: Sequence[bytes | None], names: Sequence[str],
           topic: str = "s", partition: int = 0) -> np.ndarray:
    """The offline engine's score of every decodable record."""
    return offline_run(settings, values, names, topic, partition)[1].scores
