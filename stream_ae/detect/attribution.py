"""Sensor-level attribution of a row's reconstruction error.

The model's inputs are named by :func:`stream_ae.windowing.feature_names`: the readings,
then one block per lag, then the differences (``t``, ``p``, ``t_lag1``, ``p_lag1``, ...,
``t_diff``, ``p_diff``). Each input column is folded into its sensor, so a sensor's share
of a row's squared error includes the error of its lagged readings and of its
difference; the lag whose input carries most of a sensor's error says *when* it deviates
(0: the current reading, a difference counts as the current reading).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from stream_ae.records import SensorContribution
from stream_ae.windowing import feature_names

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class InputColumn:
    """Where a model input comes from: ``sensor`` (index), ``lag`` (records back), ``kind``."""

    name: str
    sensor: int
    lag: int
    kind: Literal["reading", "diff"]


def input_columns(sensor_names: Sequence[str], lags: int, diffs: bool) -> tuple[InputColumn, ...]:
    """The source of every model input, in the model's column order.

    >>> [(c.name, c.sensor, c.lag, c.kind) for c in input_columns(["t", "p"], 1, True)][2:]
    [('t_lag1', 0, 1, 'reading'), ('p_lag1', 1, 1, 'reading'), ('t_diff', 0, 0, 'diff'), \
('p_diff', 1, 0, 'diff')]
    """
    n = len(sensor_names)
    src: list[tuple[int, int, Literal["reading", "diff"]]] = [
        (i, j, "reading") for j in range(lags + 1) for i in range(n)
    ]
    if diffs:
        src += [(i, 0, "diff") for i in range(n)]
    names = feature_names(sensor_names, lags, diffs)
    return tuple(InputColumn(nm, i, j, kind) for nm, (i, j, kind) in zip(names, src, strict=True))


class SensorAttribution:
    """Folds per-input squared errors into per-sensor shares and explains a row.

    Parameters
    ----------
    sensor_names
        The raw sensors, in the batches' column order.
    lags
        Lag blocks of the model inputs.
    diffs
        Whether the inputs end with a difference block.

    Examples
    --------
    >>> import numpy as np
    >>> att = SensorAttribution(["t", "p"], lags=1, diffs=True)
    >>> err = np.array([[1.0, 0.0, 4.0, 1.0, 2.0, 0.0]], np.float32)  # t, p, t_lag1, p_lag1, diffs
    >>> att.sensor_errors(err).tolist()  # t: 1 + 4 + 2 of 8, p: 1 of 8
    [[0.875, 0.125]]
    >>> [(c.name, c.direction, c.share, c.lag)
    ...  for c in att.explain(err[0], observed=[30.0, 1.0], expected=[21.0, 1.5], k=1)]
    [('t', 'high', 0.875, 1)]
    """

    def __init__(self, sensor_names: Sequence[str], lags: int = 0, diffs: bool = False) -> None:
        self.sensor_names = sensor_names
        self.lags = lags
        self.diffs = diffs
        self._fold: F64 | None = None
        self._lag: I64 = np.zeros(0, np.int64)

    @property
    def columns(self) -> tuple[InputColumn, ...]:
        return input_columns(self.sensor_names, self.lags, self.diffs)

    def _build(self) -> F64:
        if self._fold is None:
            cols = self.columns
            fold = np.zeros((len(cols), len(self.sensor_names)))
            fold[np.arange(len(cols)), [c.sensor for c in cols]] = 1.0
            self._fold, self._lag = fold, np.array([c.lag for c in cols], np.int64)
        return self._fold

    def sensor_errors(self, errors: npt.ArrayLike) -> F32:
        """Each sensor's share of each row's squared error, ``(n, n_sensors)``: rows sum to 1,
        an all-zero row is uniform, a row with a NaN error stays NaN."""
        fold = self._build()
        e = np.asarray(errors, dtype=np.float64).reshape(-1, fold.shape[0])
        per = e @ fold
        total = per.sum(axis=1, keepdims=True)
        zero = (total == 0.0).ravel()
        with np.errstate(invalid="ignore", divide="ignore"):
            share = per / total
        share[zero] = 1.0 / fold.shape[1]
        out: F32 = share.astype(np.float32)
        return out

    def explain(self, row_errors: npt.ArrayLike, observed: npt.ArrayLike,
                expected: npt.ArrayLike, k: int = 3) -> list[SensorContribution]:
        """The ``k`` sensors with the largest shares of one row's error, largest first."""
        fold = self._build()
        e = np.asarray(row_errors, dtype=np.float64).ravel()
        share = self.sensor_errors(e[None, :])[0]
        obs = np.asarray(observed, dtype=np.float64).ravel()
        exp = np.asarray(expected, dtype=np.float64).ravel()
        masked = np.where(fold.T > 0, e[None, :], -np.inf)  # each sensor's own inputs
        lag = self._lag[np.argmax(masked, axis=1)]
        out = []
        for i in np.argsort(-share, kind="stable")[:k].tolist():
            out.append(SensorContribution(
                name=str(self.sensor_names[i]), observed=float(obs[i]), expected=float(exp[i]),
                direction="high" if obs[i] > exp[i] else "low", share=float(share[i]),
                lag=int(lag[i])))
        return out
