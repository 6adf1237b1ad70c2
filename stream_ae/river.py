"""A river anomaly detector on top of the engine, for river pipelines and evaluation tools.

:class:`AutoencoderDetector` follows river's ``AnomalyDetector`` interface: ``learn_one`` /
``score_one`` on dicts, ``learn_many`` / ``score_many`` on pandas frames, a high score means
anomalous (the reconstruction error). ``learn_one`` is one ``Engine.step`` of one row: the
engine scores the row, then learns at its internal boundaries, so a river loop gives the same
scores as the service on the same records. ``score_one`` uses ``Engine.score_only`` and changes
nothing. ``predict_one`` is the engine's own decision (its rolling threshold and warm-up).

Feature names are taken from the first record (sorted, so dict order does not matter); later
new keys are ignored and a missing key is carried forward from the last reading (the engine's
``ffill`` policy), as a sensor that skipped a field.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd
from river import base

from stream_ae.config import (
    DecisionConfig,
    EngineConfig,
    FeaturesConfig,
    ThresholdConfig,
    TrainingConfig,
)
from stream_ae.records import Batch, StepResult

__all__ = ["AutoencoderDetector", "river_defaults"]


def river_defaults() -> EngineConfig:
    """The engine settings for river-sized streams (hundreds to thousands of records).

    Smaller windows and strides than the service's defaults, the exact (PCA) warm-up fit of
    the linear autoencoder (a few hundred records are too few for epochs of optimiser steps),
    no lags (river streams are often independent rows; ``lags`` adds them), ``ffill`` for
    missing keys, and the rolling-quantile decision (``q``). The engine's default decision,
    a calibrated false-alarm budget (``decision.mode="budget"``), is made for long streams:
    at its default rate (3e-5 per record) it flags nothing in the 1,200 records of the
    example below; pass ``config`` to use it.

    >>> c = river_defaults()
    >>> (c.training.warmup, c.training.stride, c.threshold.window, c.features.missing,
    ...  c.features.lags, c.decision.mode)
    (256, 64, 1000, 'ffill', 0, 'quantile')
    """
    return EngineConfig(
        features=FeaturesConfig(missing="ffill", lags=0),
        training=TrainingConfig(warmup=256, stride=64, window=1024, batch_size=256,
                                warmup_fit="pca"),
        threshold=ThresholdConfig(window=1000, min_count=50),
        decision=DecisionConfig(mode="quantile"),
    )


class AutoencoderDetector(base.AnomalyDetector):
    """Online autoencoder anomaly detector (the stream_ae engine) with river's interface.

    Parameters
    ----------
    warmup
        Records at the start that fit the scaler, the model and the first threshold (never
        flagged). None: from ``config``.
    q
        Quantile of recent scores used as the threshold by ``predict_one`` (in the
        ``quantile`` decision mode of :func:`river_defaults`). None: from ``config``.
    lags
        Previous readings concatenated to each record (a shingle). None: from ``config``.
    config
        Every other engine setting; None: :func:`river_defaults`.
    seed
        Seed of the model initialisation and the learning-step sampling. None: the seed in
        ``config`` (0 by default), so results are reproducible either way.

    Examples
    --------
    The same stream through river's own ``HalfSpaceTrees`` (after a ``MinMaxScaler``, as
    river's docs use it) and through this detector, each behind river's ``QuantileFilter``,
    scored prequentially (score, classify, then learn) and evaluated with river's ``F1``
    after the first 300 records (the warm-up):

    >>> import random
    >>> from river import anomaly, compose, metrics, preprocessing
    >>> rng = random.Random(7)
    >>> stream = []
    >>> for i in range(1500):
    ...     z = rng.gauss(0, 1)
    ...     x = {"a": z + rng.gauss(0, 0.1), "b": 2 * z + rng.gauss(0, 0.1)}
    ...     y = i >= 300 and rng.random() < 0.02
    ...     if y:
    ...         x["b"] = -x["b"]  # breaks the correlation, stays inside the ranges
    ...     stream.append((x, y))
    >>> def f1_after_warmup(model, decide):
    ...     f1 = metrics.F1()
    ...     for i, (x, y) in enumerate(stream):
    ...         flagged = decide(model, x)
    ...         model.learn_one(x)
    ...         if i >= 300:
    ...             f1.update(y, flagged)
    ...     return round(f1.get(), 2)
    >>> by_quantile = lambda model, x: model[-1].classify(model.score_one(x))
    >>> hst = preprocessing.MinMaxScaler() | anomaly.QuantileFilter(
    ...     anomaly.HalfSpaceTrees(seed=42), q=0.98)
    >>> ae = compose.Pipeline(anomaly.QuantileFilter(AutoencoderDetector(warmup=300), q=0.98))
    >>> (f1_after_warmup(hst, by_quantile), f1_after_warmup(ae, by_quantile))
    (0.06, 0.53)

    The engine's own decision (its rolling threshold, warm-up and training gate):

    >>> f1_after_warmup(AutoencoderDetector(warmup=300), lambda m, x: m.predict_one(x))
    0.86

    It composes like any river detector, e.g. after a scaler in a pipeline:

    >>> model = preprocessing.StandardScaler() | AutoencoderDetector(warmup=50)
    >>> for x, _ in stream[:60]:
    ...     model.learn_one(x)
    >>> model.score_one(stream[60][0]) > 0
    True
    """

    def __init__(
        self,
        warmup: int | None = None,
        q: float | None = None,
        lags: int | None = None,
        config: EngineConfig | None = None,
        seed: int | None = None,
    ) -> None:
        self.warmup = warmup
        self.q = q
        self.lags = lags
        self.config = config
        self.seed = seed
        self._features: tuple[str, ...] = ()
        self._engine: Any = None  # stream_ae.engine.Engine, built on the first learn

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"warmup": 50}
        yield {"warmup": 50, "lags": 2, "q": 0.95}

    # ------------------------------------------------------------------ river API
    def learn_one(self, x: Mapping[Any, Any]) -> None:
        """Score ``x``, then learn from it at the engine's next boundary."""
        self._learn(self._rows([x]))

    def score_one(self, x: Mapping[Any, Any]) -> float:
        """The reconstruction error of ``x`` under the current state (no side effects)."""
        return float(self._score(self._rows([x])).scores[0])

    def predict_one(self, x: Mapping[Any, Any]) -> bool:
        """The engine's decision for ``x``: above its threshold, and not in warm-up."""
        return bool(self._score(self._rows([x])).is_anomaly[0])

    def learn_many(self, X: pd.DataFrame) -> None:
        """``learn_one`` over the rows of ``X`` in order (the same result, one engine step)."""
        self._learn(self._frame(X))

    def score_many(self, X: pd.DataFrame) -> pd.Series:
        """Scores of the rows of ``X`` as a stream continuation, without learning."""
        return pd.Series(self._score(self._frame(X)).scores, index=X.index, dtype=float)

    def predict_many(self, X: pd.DataFrame) -> pd.Series:
        """The engine's decisions for the rows of ``X`` (see :meth:`predict_one`)."""
        return pd.Series(self._score(self._frame(X)).is_anomaly, index=X.index, dtype=bool)

    # ------------------------------------------------------------------ state
    @property
    def feature_names(self) -> tuple[str, ...]:
        """The features the engine was built for (sorted keys of the first record learned;
        empty before it)."""
        return self._features

    def snapshot(self) -> bytes | None:
        """The engine's snapshot (:meth:`stream_ae.engine.Engine.snapshot`: a checkpoint the
        service can start from); None before the first record is learned."""
        return None if self._engine is None else bytes(self._engine.snapshot())

    def engine_config(self) -> EngineConfig:
        """The engine settings these parameters give (over ``config``, else
        :func:`river_defaults`), validated."""
        cfg = self.config if self.config is not None else river_defaults()
        upd: dict[str, Any] = {}
        if self.warmup is not None:
            upd["training"] = cfg.training.model_copy(update={"warmup": self.warmup})
        if self.q is not None:
            upd["threshold"] = cfg.threshold.model_copy(update={"q": self.q})
        if self.lags is not None:
            upd["features"] = cfg.features.model_copy(update={"lags": self.lags})
        if self.seed is not None:
            upd["model"] = cfg.model.model_copy(update={"seed": self.seed})
        # validated again: model_copy does not check the updated values
        return EngineConfig.model_validate(cfg.model_copy(update=upd).model_dump())

    def _names(self, keys: list[str]) -> tuple[str, ...]:
        return self._features or tuple(sorted(keys))

    def _rows(self, xs: list[Mapping[Any, Any]]) -> tuple[tuple[str, ...], np.ndarray]:
        names = self._names([str(k) for k in xs[0]])
        values = [[float(_get(x, n)) for n in names] for x in xs]
        return names, np.asarray(values, dtype=np.float32).reshape(len(xs), len(names))

    def _frame(self, X: pd.DataFrame) -> tuple[tuple[str, ...], np.ndarray]:
        names = self._names([str(c) for c in X.columns])
        frame = X.rename(columns=str).reindex(columns=list(names))
        return names, frame.to_numpy(dtype=np.float32, na_value=np.nan)

    def _learn(self, data: tuple[tuple[str, ...], np.ndarray]) -> None:
        names, values = data
        if self._engine is None:
            from stream_ae.engine import Engine  # torch: on first use

            self._features = names
            self._engine = Engine(self.engine_config(), names)
        self._engine.step(Batch.from_arrays(values))

    def _score(self, data: tuple[tuple[str, ...], np.ndarray]) -> StepResult:
        names, values = data
        eng = self._engine
        if eng is None:
            from stream_ae.engine import Engine

            eng = Engine(self.engine_config(), names)
        res: StepResult = eng.score_only(Batch.from_arrays(values))
        return res

    def __getstate__(self) -> dict[str, Any]:
        # the engine travels as its snapshot bytes: deterministic, no torch pickles
        state = self.__dict__.copy()
        if self._engine is not None:
            state["_engine"] = self._engine.snapshot()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        blob = state.get("_engine")
        if isinstance(blob, bytes):
            from stream_ae.engine import Engine

            state["_engine"] = Engine.restore(blob)
        self.__dict__.update(state)


def _get(x: Mapping[Any, Any], name: str) -> Any:
    """``x[name]`` with the key compared as a string; NaN when absent (carried forward)."""
    if name in x:
        return x[name]
    for k, v in x.items():
        if str(k) == name:
            return v
    return math.nan
