"""OnlineAutoencoder (score without side effects, learn one step) and the input scaler.

The only module besides ``network`` that imports torch. Scoring runs in fixed
blocks of ``SCORE_BLOCK`` rows (the last block zero-padded): CPU matrix kernels
pick different code paths for different row counts (1-4 rows differ from larger
blocks in the last bit), and a record's score must not depend on how many
records were scored beside it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from stream_ae.model.network import Autoencoder

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

SCORE_BLOCK = 256


class OnlineAutoencoder:
    """An MLP autoencoder trained by single optimiser steps on mini-batches.

    ``score_many(x)`` returns each row's mean squared reconstruction error and
    the per-column squared errors (eval mode, ``torch.inference_mode``, no side
    effects). ``learn_many(x, weights)`` takes one AdamW step on the weighted
    mean of the rows' errors. Weights, optimiser and the private generator
    (initialisation, dropout) are seeded by ``seed``; call with one torch thread
    for bit-reproducible results.

    Parameters
    ----------
    n_inputs
        Input width.
    hidden, bottleneck, activation, dropout
        The network (see :class:`stream_ae.model.network.Autoencoder`).
    weight_decay
        AdamW's decoupled weight decay.
    lr
        Learning rate.
    seed
        Seed of the private generator.

    Examples
    --------
    >>> import numpy as np
    >>> ae = OnlineAutoencoder(4, hidden=(8,), bottleneck=2, seed=0)
    >>> x = np.random.default_rng(0).normal(size=(256, 4)).astype(np.float32)
    >>> before, cols = ae.score_many(x)
    >>> (before.shape, cols.shape, ae.n_steps)
    ((256,), (256, 4), 0)
    >>> for _ in range(200):
    ...     _ = ae.learn_many(x)
    >>> bool(ae.score_many(x)[0].mean() < before.mean()), ae.n_steps
    (True, 200)
    """

    def __init__(
        self,
        n_inputs: int,
        hidden: Sequence[int] = (32, 16),
        bottleneck: int = 4,
        activation: str = "tanh",
        dropout: float = 0.0,
        weight_decay: float = 0.0,
        lr: float = 1e-3,
        seed: int = 0,
    ) -> None:
        self.n_inputs = n_inputs
        self.hidden = tuple(hidden)
        self.bottleneck = bottleneck
        self.activation = activation
        self.dropout = dropout
        self.weight_decay = weight_decay
        self.lr = lr
        self.seed = seed
        self._built = False

    def _build(self) -> None:
        self._gen = torch.Generator().manual_seed(self.seed)
        self._net = Autoencoder(
            self.n_inputs, self.hidden, self.bottleneck, self.activation, self.dropout, self._gen
        )
        self._opt = torch.optim.AdamW(
            self._net.parameters(), lr=self.lr, weight_decay=self.weight_decay, fused=True
        )
        self._n_steps = 0
        self._built = True

    @property
    def n_steps(self) -> int:
        """Optimiser steps taken."""
        return self._n_steps if self._built else 0

    def score_many(self, x: F32) -> tuple[F64, F32]:
        """Per-row mean squared error (float64) and per-column squared error (float32)."""
        if not self._built:
            self._build()
        n = x.shape[0]
        cols = np.empty((n, self.n_inputs), dtype=np.float32)
        self._set_training(False)
        with torch.inference_mode():
            for start in range(0, n, SCORE_BLOCK):
                block = _padded(x[start : start + SCORE_BLOCK])
                rec = self._net(torch.from_numpy(block)).numpy()
                stop = min(n, start + SCORE_BLOCK)
                cols[start:stop] = np.square(rec[: stop - start] - block[: stop - start])
        return cols.mean(axis=1, dtype=np.float64), cols

    def learn_many(self, x: F32, weights: F64 | None = None, lr_scale: float = 1.0) -> float:
        """One optimiser step on the (weighted) mean squared error of ``x``; returns the loss."""
        if not self._built:
            self._build()
        self._set_training(True)
        for group in self._opt.param_groups:
            group["lr"] = self.lr * lr_scale
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        per_row = (self._net(xt) - xt).square().mean(dim=1)
        if weights is not None:
            per_row = per_row * torch.from_numpy(weights.astype(np.float32))
        loss = per_row.mean()
        self._opt.zero_grad(set_to_none=True)
        loss.backward()
        self._opt.step()
        self._n_steps += 1
        return float(loss.detach())

    def _set_training(self, mode: bool) -> None:
        if self._net.training != mode:  # Module.train() walks every submodule: skip no-ops
            self._net.train(mode)

    def to_bytes(self) -> bytes:
        """Weights, optimiser state, generator state and step count (``torch.save``)."""
        if not self._built:
            self._build()
        state = {
            "net": self._net.state_dict(),
            "opt": self._opt.state_dict(),
            "gen": self._gen.get_state(),
            "n_steps": torch.tensor(self._n_steps, dtype=torch.int64),
        }
        buf = io.BytesIO()
        torch.save(state, buf)
        return buf.getvalue()

    def load_bytes(self, blob: bytes) -> None:
        """Restore :meth:`to_bytes` output (``torch.load(weights_only=True)``: no pickles)."""
        state: dict[str, Any] = torch.load(io.BytesIO(blob), weights_only=True)
        self._build()
        self._net.load_state_dict(state["net"])
        self._opt.load_state_dict(state["opt"])
        self._gen.set_state(state["gen"])
        self._n_steps = int(state["n_steps"])


def _padded(block: F32) -> F32:
    if block.shape[0] == SCORE_BLOCK:
        return np.ascontiguousarray(block)
    out = np.zeros((SCORE_BLOCK, block.shape[1]), dtype=np.float32)
    out[: block.shape[0]] = block
    return out


class RunningScaler:
    """Running standardisation: mean/variance merged in blocks (Chan et al.).

    The count is capped at ``memory`` before each merge, so after ``memory``
    rows older data is forgotten geometrically. ``transform`` uses the
    statistics of the last ``update`` (identity before the first). Columns with
    (near) zero variance are only centred.

    Examples
    --------
    >>> import numpy as np
    >>> s = RunningScaler(2)
    >>> s.update(np.array([[1.0, 5.0], [3.0, 5.0]], np.float32))
    >>> s.transform(np.array([[3.0, 6.0]], np.float32)).tolist()
    [[1.0, 1.0]]
    """

    def __init__(self, n: int, memory: int = 100_000) -> None:
        self.n = n
        self.memory = memory
        self._count = 0.0
        self._mean: F64 = np.zeros(n, dtype=np.float64)
        self._m2: F64 = np.zeros(n, dtype=np.float64)
        self._refresh()

    def _refresh(self) -> None:
        var = self._m2 / self._count if self._count > 0 else np.ones(self.n)
        std = np.where(var > 1e-12, np.sqrt(var), 1.0)
        self._mu32 = self._mean.astype(np.float32)
        self._inv32 = (1.0 / std).astype(np.float32)

    @property
    def count(self) -> float:
        return self._count

    def update(self, x: F32) -> None:
        """Merge a block of rows into the statistics."""
        if x.shape[0] == 0:
            return
        xb = x.astype(np.float64)
        n_b = float(xb.shape[0])
        mean_b = xb.mean(axis=0)
        m2_b = np.square(xb - mean_b).sum(axis=0)
        n_a = min(self._count, float(self.memory))
        m2_a = self._m2 * (n_a / self._count) if self._count > 0 else self._m2
        total = n_a + n_b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (n_b / total)
        self._m2 = m2_a + m2_b + np.square(delta) * (n_a * n_b / total)
        self._count = total
        self._refresh()

    def transform(self, x: F32) -> F32:
        """Standardise rows with the frozen statistics."""
        return ((x - self._mu32) * self._inv32).astype(np.float32, copy=False)

    def get_state(self) -> dict[str, Any]:
        return {"count": self._count, "mean": self._mean.copy(), "m2": self._m2.copy()}

    def set_state(self, state: dict[str, Any]) -> None:
        self._count = float(state["count"])
        self._mean = np.asarray(state["mean"], dtype=np.float64).copy()
        self._m2 = np.asarray(state["m2"], dtype=np.float64).copy()
        self._refresh()

