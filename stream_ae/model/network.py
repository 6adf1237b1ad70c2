"""The autoencoder network: layers only (no optimiser, no data handling)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "silu": nn.SiLU,
}


class SeededDropout(nn.Module):
    """Dropout drawing its masks from a private ``torch.Generator`` (reproducible runs).

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> d = SeededDropout(0.5, g).train()
    >>> y = d(torch.ones(1000))
    >>> sorted(set(y.tolist()))
    [0.0, 2.0]
    """

    def __init__(self, p: float, generator: torch.Generator) -> None:
        super().__init__()
        self.p = p
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(x.shape, generator=self.generator) >= self.p
        return x * keep / (1.0 - self.p)


class Autoencoder(nn.Module):
    """An MLP autoencoder ``d -> hidden... -> bottleneck -> ...reversed(hidden) -> d``.

    The bottleneck and the output are linear; every hidden layer is followed by
    the activation and (when ``dropout > 0``) dropout.

    Parameters
    ----------
    n_inputs
        Input (and output) width.
    hidden
        Encoder hidden widths; the decoder mirrors them.
    bottleneck
        Code width.
    activation
        ``"relu"``, ``"tanh"``, ``"gelu"``, ``"elu"`` or ``"silu"``.
    dropout
        Dropout rate after each hidden layer.
    generator
        Source of the initial weights and the dropout masks.

    Examples
    --------
    >>> net = Autoencoder(8, (16,), 2, "tanh", 0.0, torch.Generator().manual_seed(0))
    >>> net(torch.zeros(3, 8)).shape
    torch.Size([3, 8])
    """

    def __init__(
        self,
        n_inputs: int,
        hidden: Sequence[int],
        bottleneck: int,
        activation: str,
        dropout: float,
        generator: torch.Generator,
    ) -> None:
        super().__init__()
        widths = [n_inputs, *hidden, bottleneck, *reversed(hidden), n_inputs]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(widths)):
            layers.append(nn.Linear(a, b))
            if i not in (len(hidden), len(widths) - 2):  # bottleneck and output stay linear
                layers.append(_ACTIVATIONS[activation]())
                if dropout > 0.0:
                    layers.append(SeededDropout(dropout, generator))
        self.layers = nn.Sequential(*layers)
        self._init(generator)

    def _init(self, generator: torch.Generator) -> None:
        with torch.no_grad():
            for m in self.layers:
                if isinstance(m, nn.Linear):
                    bound = (6.0 / (m.in_features + m.out_features)) ** 0.5
                    m.weight.uniform_(-bound, bound, generator=generator)
                    m.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.layers(x)
        return out
