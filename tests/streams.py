"""The synthetic streams of the test suite, in one place.

* :func:`gaussian`: independent normal readings with injected point anomalies (the service,
  one-path and broker tests);
* :func:`latent`: readings driven by a few latent factors (correlated sensors, what an
  autoencoder can learn), optionally with a level shift and random spikes (engine, model,
  facade and property tests);
* :func:`messages`: readings as the JSON messages a producer would send.

Each is a pure function of its arguments and seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import orjson


def gaussian(n: int, width: int, seed: int, *, anomalies: int = 0, after: int = 0,
             shift: float = 7.0, signed: bool = False, couple: float = 0.0
             ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows of ``width`` standard-normal readings and the rows made anomalous.

    ``couple``: column 1 gets ``couple`` times column 0 added (a correlated pair);
    ``anomalies`` distinct rows at or after ``after`` get ``shift`` added to every column
    (``signed``: a random sign per value).

    >>> x, rows = gaussian(500, 3, seed=1, anomalies=5, after=100)
    >>> x.shape, len(rows), bool((rows >= 100).all())
    ((500, 3), 5, True)
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, width))
    if couple:
        x[:, 1] += couple * x[:, 0]
    rows = np.array([], dtype=np.int64)
    if anomalies:
        rows = rng.choice(np.arange(after, n), size=anomalies, replace=False)
        x[rows] += rng.choice([-shift, shift], size=(len(rows), width)) if signed else shift
    return x, rows


def latent(n: int, seed: int, *, loadings: npt.ArrayLike | None = None, factors: int = 1,
           width: int = 3, noise: float = 0.1, shift_from: int | None = None,
           shift: float = 0.0, spikes: int = 0, spike_scale: float = 5.0) -> np.ndarray:
    """``n`` rows of ``factors`` latent normals times ``loadings`` (a ``factors`` x width
    matrix; None: drawn at random, ``width`` columns) plus ``noise``; from row ``shift_from``
    on every value is raised by ``shift``; then ``spikes`` distinct rows get normal noise
    of scale ``spike_scale``.

    >>> latent(4, seed=0, loadings=[[1.0, 2.0]], noise=0.0).tolist()[0]
    [0.12573022..., 0.25146044...]
    """
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, factors))
    w = (np.asarray(loadings, dtype=np.float64).reshape(factors, -1) if loadings is not None
         else rng.normal(size=(factors, width)))
    x = z @ w + noise * rng.normal(size=(n, w.shape[1]))
    if shift_from is not None:
        x[shift_from:] += shift
    if spikes:
        x[rng.choice(n, spikes, replace=False)] += rng.normal(0, spike_scale,
                                                             size=(spikes, w.shape[1]))
    return x


def messages(x: np.ndarray, names: Sequence[str],
             key: Callable[[int], str] = lambda i: f"k{i % 3}", t0: float = 1000.0
             ) -> list[bytes]:
    """Row ``i`` of ``x`` as ``{"key": key(i), "ts": t0 + i, name: value, ...}`` JSON.

    >>> messages(np.array([[1.5, 2.0]]), ("a", "b"))
    [b'{"key":"k0","ts":1000.0,"a":1.5,"b":2.0}']
    """
    return [orjson.dumps({"key": key(i), "ts": t0 + i, **dict(zip(names, row.tolist(),
                                                                   strict=True))})
            for i, row in enumerate(x)]
