"""OnlineAutoencoder (score without side effects, learn one step) and the input scaler.

The only module besides ``network`` that imports torch.

A record's score must not depend on how many records are scored beside it, nor
on where it sits among them (the live service batches by arrival time, a
backtest does not, and their alerts must be equal bit for bit). CPU matrix
kernels do not give that: MKL's float32 GEMM sums some rows in another order
than others, depending on the row's offset in the block and on the input width
(27 or 38 inputs, for example), so a score could change in its last bits with
the batch split. Scoring therefore uses no matrix kernel. It works on the
transposed block (one array row per input column) and :func:`exact_linear`
computes each output as ``((b + w_0 x_0) + w_1 x_1) + ...`` with numpy's
element-wise multiply and add, one input column at a time, so every record goes
through the same IEEE operations in the same order whatever its position; the
per-record means are column-by-column sums the same way. Hidden activations
run in torch on flat pieces whose lengths are multiples of ``_ACT_ALIGN``
elements (zero-padded), so every element takes the same SIMD path (a scalar
tail would compute ``exp``/``tanh`` differently). Learning (``learn_many``)
keeps torch's kernels: it runs at deterministic boundaries on deterministic
batches, which is all split independence needs there.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from stream_ae.model.adamw import FusedAdamW
from stream_ae.model.network import Autoencoder, SeededDropout

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

SCORE_BLOCK = 4096  # records per scoring block (bounds the temporary arrays)
_PRODUCTS_AT_ONCE = 1 << 17  # exact_linear: products in one temporary up to this many
_ACT_ALIGN = 256  # a multiple of every SIMD loop step (torch: 2 vectors, at most 2 x 64 floats)
_ACT_PIECE = 16_384  # a multiple of _ACT_ALIGN below torch's parallel grain (32,768)

_Layer = tuple[F32, F32] | nn.Module  # (weights, bias) for exact_linear, or an activation


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
        self._opt = self._new_optimizer()
        self._n_steps = 0
        self._plan: list[_Layer] | None = None
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
        mse = np.empty(n, dtype=np.float64)
        cols = np.empty((n, self.n_inputs), dtype=np.float32)
        plan = self._score_plan()
        with torch.inference_mode():
            for start in range(0, n, SCORE_BLOCK):
                xt = np.ascontiguousarray(x[start : start + SCORE_BLOCK].T)
                sq = np.square(_forward(plan, xt) - xt)
                mse[start : start + xt.shape[1]] = _column_means(sq)
                cols[start : start + xt.shape[1]] = sq.T
        return mse, cols

    def reconstruct(self, x: F32) -> F32:
        """The model's reconstruction of (scaled) rows ``x``, with the scoring weights."""
        if not self._built:
            self._build()
        out = np.empty_like(x, dtype=np.float32)
        plan = self._score_plan()
        with torch.inference_mode():
            for start in range(0, x.shape[0], SCORE_BLOCK):
                xt = np.ascontiguousarray(x[start : start + SCORE_BLOCK].T)
                out[start : start + xt.shape[1]] = _forward(plan, xt).T
        return out

    def _score_plan(self) -> list[_Layer]:
        """The eval-mode network as numpy weights (``exact_linear``) and torch activations;
        cached until the weights change."""
        if self._plan is None:
            plan: list[_Layer] = []
            for m in self._net.layers:
                if isinstance(m, nn.Linear):
                    w = m.weight.detach().numpy().T[:, :, None].astype(np.float32, order="C")
                    plan.append((w, m.bias.detach().numpy()[:, None].astype(np.float32)))
                elif not isinstance(m, SeededDropout):  # dropout is the identity when scoring
                    plan.append(m)  # activations behave alike in train and eval mode
            self._plan = plan
        return self._plan

    def learn_many(self, x: F32, weights: F64 | None = None, lr_scale: float = 1.0) -> float:
        """One optimiser step on the (weighted) mean squared error of ``x``; returns the loss."""
        if not self._built:
            self._build()
        self._set_training(True)
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        per_row = (self._net(xt) - xt).square().mean(dim=1)
        if weights is not None:
            per_row = per_row * torch.from_numpy(weights.astype(np.float32))
        loss = per_row.mean()
        self._opt.zero_grad()
        loss.backward()
        self._opt.step(self.lr * lr_scale)
        self._plan = None
        self._n_steps += 1
        return float(loss.detach())

    @property
    def is_linear(self) -> bool:
        """True for a linear autoencoder (no hidden layers): :meth:`fit_pca` applies."""
        return not self.hidden

    def fit_pca(self, x: F32) -> None:
        """Set a linear autoencoder to its least-squares optimum on ``x``: the projection on
        the top ``bottleneck`` principal directions (Eckart-Young), in one SVD instead of
        many optimiser steps. The optimiser state starts afresh.

        >>> rng = np.random.default_rng(0)
        >>> z = rng.normal(size=(500, 2)).astype(np.float32)
        >>> x = np.hstack([z, z @ np.ones((2, 3), np.float32)])   # rank 2 in 5-D
        >>> ae = OnlineAutoencoder(5, hidden=(), bottleneck=2)
        >>> ae.fit_pca(x)
        >>> bool(ae.score_many(x)[0].max() < 1e-8)
        True
        """
        if not self.is_linear:
            raise ValueError("fit_pca needs a linear autoencoder (hidden=())")
        if not self._built:
            self._build()
        x64 = np.asarray(x, dtype=np.float64)
        mu = x64.mean(axis=0)
        _, _, vt = np.linalg.svd(x64 - mu, full_matrices=False)
        v = np.zeros((self.bottleneck, self.n_inputs))
        k = min(self.bottleneck, vt.shape[0])
        v[:k] = vt[:k]
        enc, dec = (m for m in self._net.layers if isinstance(m, nn.Linear))
        with torch.no_grad():
            enc.weight.copy_(torch.from_numpy(v))
            enc.bias.copy_(torch.from_numpy(-(v @ mu)))
            dec.weight.copy_(torch.from_numpy(v.T))
            dec.bias.copy_(torch.from_numpy(mu))
        self._opt = self._new_optimizer()
        self._plan = None

    def _new_optimizer(self) -> FusedAdamW:
        # torch.optim.AdamW(fused=True)'s update without torch.optim, which imports
        # torch._dynamo (see stream_ae.model.adamw)
        return FusedAdamW(self._net.parameters(), lr=self.lr, weight_decay=self.weight_decay)

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
        self._plan = None


def exact_linear(xt: F32, w: F32, b: F32) -> F32:
    """A linear layer on transposed data, in a fixed order of IEEE operations per record.

    ``xt`` is ``(inputs, records)``, ``w`` is ``(inputs, outputs, 1)`` (the weight matrix
    transposed), ``b`` is ``(outputs, 1)``; the result is ``(outputs, records)``. Each
    output is ``((b + w_0 x_0) + w_1 x_1) + ...``: element-wise products and sums, never
    fused, so a record's result does not depend on the other records.

    >>> xt = np.array([[1.0, 3.0], [2.0, 4.0]], np.float32)  # records (1, 2) and (3, 4)
    >>> exact_linear(xt, np.array([[[1.0]], [[10.0]]], np.float32), np.array([[0.5]], np.float32))
    array([[21.5, 43.5]], dtype=float32)
    """
    out = np.empty((w.shape[1], xt.shape[1]), dtype=np.float32)
    out[:] = b
    if w.shape[0] * out.size <= _PRODUCTS_AT_ONCE:
        # few records (the service's small batches): every product in one call, then the
        # same sums in the same order (half the calls; the same bits)
        prod = np.multiply(w, xt[:, None, :])
        for k in range(w.shape[0]):
            out += prod[k]
        return out
    term = np.empty_like(out)
    for k in range(w.shape[0]):
        np.multiply(w[k], xt[k], out=term)
        out += term
    return out


def _column_means(sq: F32) -> F64:
    """Per-record (column) means of ``(inputs, records)`` in float64, summed input by
    input for every record alike (``ndarray.mean`` may sum pairwise or sequentially
    depending on the array's shape, e.g. for a single record)."""
    acc: F64 = sq[0].astype(np.float64)
    for k in range(1, sq.shape[0]):
        acc += sq[k]
    acc /= sq.shape[0]
    return acc


def _forward(plan: list[_Layer], xt: F32) -> F32:
    h = xt
    for layer in plan:
        h = exact_linear(h, *layer) if isinstance(layer, tuple) else _activate(layer, h)
    return h


def _activate(act: nn.Module, h: F32) -> F32:
    """An element-wise torch activation on pieces of ``_ACT_PIECE`` elements, the last one
    zero-padded to a multiple of ``_ACT_ALIGN``: no element falls in a kernel's scalar tail,
    and no piece is large enough to be split across threads."""
    flat = h.reshape(-1)
    size = -(-flat.size // _ACT_ALIGN) * _ACT_ALIGN
    buf = np.zeros(size, dtype=np.float32)
    buf[: flat.size] = flat
    src = torch.from_numpy(buf)
    out = torch.empty_like(src)
    for start in range(0, size, _ACT_PIECE):
        out[start : start + _ACT_PIECE] = act(src[start : start + _ACT_PIECE])
    return out.numpy()[: flat.size].reshape(h.shape)


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

    def inverse(self, z: F32, columns: slice = slice(None)) -> F32:
        """Scaled values of ``columns`` back in the inputs' own units."""
        return (z / self._inv32[columns] + self._mu32[columns]).astype(np.float32)

    def get_state(self) -> dict[str, Any]:
        return {"count": self._count, "mean": self._mean.copy(), "m2": self._m2.copy()}

    def set_state(self, state: dict[str, Any]) -> None:
        self._count = float(state["count"])
        self._mean = np.asarray(state["mean"], dtype=np.float64).copy()
        self._m2 = np.asarray(state["m2"], dtype=np.float64).copy()
        self._refresh()

