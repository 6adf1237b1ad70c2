"""A scikit-learn / PyOD-style outlier detector on top of the engine, for notebooks.

:class:`AutoencoderOutlierDetector` fits on a frame, scores with ``decision_function``,
decides with ``predict``, and keeps learning with ``partial_fit``: the notebook recipe of a
PyOD or H2O autoencoder, backed by the streaming engine so the fitted model can go on as a
stream (``engine_`` is an ordinary :class:`~stream_ae.engine.Engine`, ``engine_.snapshot()``
a checkpoint the service can restore).

Conventions are scikit-learn's (``check_estimator`` passes): ``score_samples`` is the
negated reconstruction error, ``decision_function`` is negative for outliers and ``predict``
returns -1 (outlier) / 1 (inlier). PyOD's names are there too: ``decision_scores_`` (the
training reconstruction errors, higher is more abnormal), ``threshold_`` and ``labels_``
(0/1); PyOD's ``decision_function(X)`` is ``-score_samples(X)`` here.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator, OutlierMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from stream_ae.config import EngineConfig, FeaturesConfig, TrainingConfig
from stream_ae.records import Batch, StepResult

__all__ = ["AutoencoderOutlierDetector"]

F64 = npt.NDArray[np.float64]


class AutoencoderOutlierDetector(OutlierMixin, BaseEstimator):  # type: ignore[misc]
    """Autoencoder outlier detector: ``fit`` is the engine's warm-up, ``partial_fit`` streams.

    ``fit(X)`` makes a fresh engine whose warm-up is all of ``X``: the scaler is fitted, the
    model trained (``epochs`` epochs, or the exact PCA fit of a linear autoencoder), and the
    threshold primed with the in-sample reconstruction errors at the ``1 - contamination``
    quantile, so ``contamination`` of the training rows are outliers, as in PyOD (the
    engine's ``quantile`` decision mode). ``contamination="auto"`` keeps the engine's own
    calibrated decision instead (``decision.mode`` of ``config``, by default the false-alarm
    budget: tail probabilities per key and accumulated evidence; see
    ``docs/engine.md``), as scikit-learn's ``"auto"`` leaves the offset to the algorithm.
    ``partial_fit(X)`` then passes ``X`` through ``Engine.step``: each row is scored, then
    learnt at the engine's boundaries (flagged rows never train it), and the threshold
    becomes the engine's rolling quantile of recent scores. ``predict`` is the engine's own
    decision (``StepResult.is_anomaly``); ``decision_function`` and ``score_samples`` score
    with the current state and change nothing.

    Parameters
    ----------
    contamination
        Expected fraction of outliers, in (0, 0.5]: the threshold is the ``1 - contamination``
        quantile of the scores. ``"auto"``: the engine's calibrated decision.
    hidden
        Encoder hidden widths (the decoder mirrors them); empty: a linear autoencoder.
    bottleneck
        Code width; 0: a quarter of the inputs (at least 1).
    epochs
        Epochs over ``X`` in ``fit`` (a model with hidden layers, or any model when
        ``config.training.warmup_fit`` is ``"epochs"``).
    config
        Every other engine setting (learning rate, strides, drift, ...); None: the engine's
        defaults with the exact PCA warm-up fit of a linear autoencoder
        (``warmup_fit="pca"``).
    random_state
        Seeds the model initialisation and the learning-step sampling.

    Attributes
    ----------
    engine_
        The fitted :class:`~stream_ae.engine.Engine`.
    threshold_
        The reconstruction error above which a row is an outlier (the engine's threshold).
    offset_
        ``-threshold_``: ``decision_function = score_samples - offset_``.
    decision_scores_, labels_
        The training rows' reconstruction errors and 0/1 labels after ``fit`` (PyOD names).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(500, 1))
    >>> X = np.hstack([z, 2 * z, -z]) + 0.05 * rng.normal(size=(500, 3))
    >>> det = AutoencoderOutlierDetector(contamination=0.02, random_state=0).fit(X)
    >>> (int((det.predict(X) == -1).sum()), int(det.labels_.sum()))
    (10, 10)
    >>> odd = np.array([[1.0, 2.0, -1.0], [1.0, -2.0, -1.0]])  # the second breaks the pattern
    >>> det.predict(odd).tolist()
    [1, -1]
    >>> bool(det.decision_function(odd)[1] < 0 < det.decision_function(odd)[0])
    True
    >>> det = det.partial_fit(X[:100])  # go on learning from a stream
    >>> det.engine_.records_seen
    600
    """

    _parameter_constraints: dict[str, list[Any]] = {  # noqa: RUF012 - scikit-learn's layout
        "contamination": [StrOptions({"auto"}), Interval(Real, 0.0, 0.5, closed="right")],
        "hidden": [tuple],
        "bottleneck": [Interval(Integral, 0, None, closed="left")],
        "epochs": [Interval(Integral, 0, None, closed="left")],
        "config": [EngineConfig, None],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        contamination: float | str = 0.1,
        hidden: tuple[int, ...] = (),
        bottleneck: int = 0,
        epochs: int = 100,
        config: EngineConfig | None = None,
        random_state: Any = None,
    ) -> None:
        self.contamination = contamination
        self.hidden = hidden
        self.bottleneck = bottleneck
        self.epochs = epochs
        self.config = config
        self.random_state = random_state

    # ------------------------------------------------------------------ fitting
    @_fit_context(prefer_skip_nested_validation=True)  # type: ignore[untyped-decorator]
    def fit(self, X: Any, y: Any = None) -> AutoencoderOutlierDetector:
        """Warm up a fresh engine on all of ``X`` (``y`` is ignored)."""
        x = validate_data(self, X, dtype=np.float32)
        from stream_ae.engine import Engine  # torch: on first use

        names = [str(n) for n in getattr(self, "feature_names_in_", range(x.shape[1]))]
        self.engine_ = Engine(self._engine_config(x.shape[0]), names)
        self.engine_.step(Batch.from_arrays(x))
        res = self.engine_.score_only(Batch.from_arrays(x))
        self.decision_scores_: F64 = res.scores
        self.labels_ = res.is_anomaly.astype(np.int64)
        self._set_threshold()
        return self

    def partial_fit(self, X: Any, y: Any = None) -> AutoencoderOutlierDetector:
        """Stream ``X`` through the engine (score, then learn); ``fit`` when not fitted."""
        if not hasattr(self, "engine_"):
            self.fit(X)
            return self
        x = validate_data(self, X, dtype=np.float32, reset=False)
        self.engine_.step(Batch.from_arrays(x))
        self._set_threshold()
        return self

    # ------------------------------------------------------------------ scoring
    def score_samples(self, X: Any) -> F64:
        """Negated reconstruction error (lower is more abnormal, as scikit-learn's)."""
        return -self._score(X).scores

    def decision_function(self, X: Any) -> F64:
        """Distance of the reconstruction error from the threshold, negative for outliers.

        The sign is the engine's decision, so ``decision_function < 0`` exactly where
        ``predict`` is -1; with the threshold decision it is ``threshold_ - error``.
        """
        res = self._score(X)
        out: F64 = np.where(res.is_anomaly, -1.0, 1.0) * np.abs(res.thresholds - res.scores)
        return out

    def predict(self, X: Any) -> npt.NDArray[np.int64]:
        """-1 for outliers (the engine's decision), 1 for inliers."""
        return np.where(self._score(X).is_anomaly, -1, 1).astype(np.int64)

    # ------------------------------------------------------------------ internals
    def _score(self, X: Any) -> StepResult:
        check_is_fitted(self, "engine_")
        x = validate_data(self, X, dtype=np.float32, reset=False)
        res: StepResult = self.engine_.score_only(Batch.from_arrays(x))
        return res

    def _set_threshold(self) -> None:
        self.threshold_ = float(self.engine_.threshold)
        self.offset_ = -self.threshold_

    def _engine_config(self, n: int) -> EngineConfig:
        cfg = self.config if self.config is not None else _notebook_defaults()
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        upd: dict[str, Any] = {
            "model": cfg.model.model_copy(update={"hidden": tuple(self.hidden),
                                                  "bottleneck": self.bottleneck, "seed": seed}),
            "training": cfg.training.model_copy(update={
                "warmup": n, "warmup_epochs": self.epochs, "holdout": 0.0,
                "window": max(cfg.training.window, n)}),
        }
        if self.contamination != "auto":
            upd["threshold"] = cfg.threshold.model_copy(update={
                "q": 1.0 - float(self.contamination), "window": max(cfg.threshold.window, n)})
            upd["decision"] = cfg.decision.model_copy(update={"mode": "quantile"})
        return EngineConfig.model_validate(cfg.model_copy(update=upd).model_dump())

    def __getstate__(self) -> dict[str, Any]:
        # the engine travels as its snapshot bytes (no torch pickles)
        state: dict[str, Any] = dict(super().__getstate__())  # a copy: it is our __dict__
        if "engine_" in state:
            state["engine_"] = state["engine_"].snapshot()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state.get("engine_"), bytes):
            from stream_ae.engine import Engine

            state["engine_"] = Engine.restore(state["engine_"])
        super().__setstate__(state)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.non_deterministic = False
        return tags


def _notebook_defaults() -> EngineConfig:
    """The engine's defaults for tables: rows are independent (no lags), and a linear
    autoencoder gets its exact PCA fit.

    >>> c = _notebook_defaults()
    >>> (c.features.lags, c.training.warmup_fit)
    (0, 'pca')
    """
    return EngineConfig(features=FeaturesConfig(lags=0),
                        training=TrainingConfig(warmup_fit="pca"))
