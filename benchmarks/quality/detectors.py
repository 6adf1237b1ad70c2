"""Detectors the quality harness can stream data through.

* ``EngineDetector``: the product, ``stream_ae.engine.Engine`` with ``EngineConfig``
  defaults plus explicit overrides (dotted keys, e.g. ``{"training.gate": "none"}``).
* ``HalfSpaceTreesDetector``: river's ``HalfSpaceTrees`` peer, run the way river
  documents it (min-max scaling, score_one then learn_one on every record).

Both see a cold start per stream and the same rows in the same order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml
from harness import StreamDetector, StreamOutput


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["training.gate=none", "features.lags=8"]`` -> ``{"training.gate": "none", ...}``.

    >>> parse_overrides(["features.lags=8", "training.gate=none"])
    {'features.lags': 8, 'training.gate': 'none'}
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not KEY=VALUE")
        out[key.strip()] = yaml.safe_load(raw)
    return out


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys to nested dicts.

    >>> nest({"a.b": 1, "a.c": 2, "d": 3})
    {'a': {'b': 1, 'c': 2}, 'd': 3}
    """
    root: dict[str, Any] = {}
    for key, value in flat.items():
        node = root
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return root


@dataclass
class EngineDetector:
    """The stream_ae engine, defaults plus ``overrides``; fed ``chunk`` rows per step."""

    name: str = "stream_ae"
    overrides: Mapping[str, Any] = field(default_factory=dict)
    chunk: int = 50

    def config(self, warmup: int, feature_names: tuple[str, ...]) -> Any:
        from stream_ae.config import EngineConfig

        flat = {"training.warmup": warmup, "features.names": feature_names, **self.overrides}
        return EngineConfig.model_validate(nest(flat))

    def run(self, values: npt.NDArray[np.float32], warmup: int,
            feature_names: tuple[str, ...]) -> StreamOutput:
        from stream_ae.engine import Engine
        from stream_ae.records import Batch

        engine = Engine(self.config(warmup, feature_names), feature_names)
        parts = []
        for start in range(0, len(values), self.chunk):
            block = values[start:start + self.chunk]
            ts = np.arange(start, start + len(block), dtype=np.float64)
            parts.append(engine.step(Batch.from_arrays(block, keys=("s",) * len(block),
                                                       timestamps=ts)))
        return StreamOutput(
            scores=np.concatenate([p.scores for p in parts]).astype(np.float64),
            is_anomaly=np.concatenate([p.is_anomaly for p in parts]).astype(bool),
            warmup=np.concatenate([p.warmup for p in parts]).astype(bool),
        )


@dataclass
class HalfSpaceTreesDetector:
    """river ``MinMaxScaler | HalfSpaceTrees`` with river's defaults.

    Flags scores above the ``q`` quantile of the warm-up scores (the peer has no
    threshold of its own); learns every record, as river's examples do.
    """

    name: str = "river HalfSpaceTrees"
    n_trees: int = 10
    height: int = 8
    window_size: int = 250
    q: float = 0.99
    seed: int = 0

    def run(self, values: npt.NDArray[np.float32], warmup: int,
            feature_names: tuple[str, ...]) -> StreamOutput:
        from river import anomaly, compose, preprocessing

        model = compose.Pipeline(
            preprocessing.MinMaxScaler(),
            anomaly.HalfSpaceTrees(n_trees=self.n_trees, height=self.height,
                                   window_size=self.window_size, seed=self.seed),
        )
        scores = np.empty(len(values))
        for i, row in enumerate(values):
            x = dict(zip(feature_names, row.tolist(), strict=True))
            scores[i] = model.score_one(x)
            model.learn_one(x)
        warm = np.arange(len(values)) < warmup
        limit = np.quantile(scores[warm], self.q) if warm.any() else np.inf
        return StreamOutput(scores=scores, is_anomaly=(scores > limit) & ~warm, warmup=warm)


def make_detector(kind: str, overrides: list[str], chunk: int) -> StreamDetector:
    """The command-line choice: ``"hst"`` (river peer) or the stream_ae engine with overrides."""
    if kind == "hst":
        return HalfSpaceTreesDetector()
    return EngineDetector(overrides=parse_overrides(overrides), chunk=chunk)
