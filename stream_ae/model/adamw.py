"""AdamW through torch's fused CPU kernel, without ``torch.optim``.

Constructing any ``torch.optim`` optimizer imports ``torch._dynamo`` (its methods are
wrapped in ``torch._disable_dynamo``, which imports the compiler on first call): about
1.5 s of CPU at every process start, 3 s on a loaded machine, for a compiler this project
never uses. :class:`FusedAdamW` makes the update ``torch.optim.AdamW(fused=True)`` makes,
with the same kernel (``torch._fused_adamw_``) on the same state, so the weights are
bit-identical to it step for step, and its ``state_dict`` has the same layout, so
checkpoints written with either load into the other.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

_BETAS = (0.9, 0.999)
_EPS = 1e-8


class FusedAdamW:
    """AdamW (decoupled weight decay, no amsgrad) over float32 CPU parameters.

    Parameters
    ----------
    params
        The parameters, in a fixed order (the ``state_dict`` indexes them by position).
    lr
        Learning rate (``step`` may take another one).
    weight_decay
        Decoupled weight decay.

    Examples
    --------
    >>> lin = torch.nn.Linear(2, 1)
    >>> opt = FusedAdamW(lin.parameters(), lr=1e-3, weight_decay=0.0)
    >>> lin(torch.ones(3, 2)).sum().backward()
    >>> opt.step()
    >>> sorted(opt.state_dict()["state"][0]), float(opt.state_dict()["state"][0]["step"])
    (['exp_avg', 'exp_avg_sq', 'step'], 1.0)
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float, weight_decay: float) -> None:
        self.params = list(params)
        self.lr = lr
        self.weight_decay = weight_decay
        self._state: dict[int, dict[str, torch.Tensor]] = {}

    def zero_grad(self) -> None:
        """Drop the gradients (``set_to_none``)."""
        for p in self.params:
            p.grad = None

    def step(self, lr: float | None = None) -> None:
        """One update of every parameter that has a gradient."""
        lr = self.lr if lr is None else lr
        self.lr = lr
        live = [(i, p) for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        for i, p in live:
            if i not in self._state:  # lazy, as torch.optim: state appears at the first step
                self._state[i] = {
                    "step": torch.zeros((), dtype=torch.float32),
                    "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                }
        st = [self._state[i] for i, _ in live]
        steps = [s["step"] for s in st]
        with torch.no_grad():
            torch._foreach_add_(steps, 1)
            torch._fused_adamw_(
                [p for _, p in live], [p.grad for _, p in live],  # type: ignore[misc]
                [s["exp_avg"] for s in st], [s["exp_avg_sq"] for s in st], [], steps,
                amsgrad=False, lr=lr, beta1=_BETAS[0], beta2=_BETAS[1],
                weight_decay=self.weight_decay, eps=_EPS, maximize=False,
                grad_scale=None, found_inf=None,
            )

    def state_dict(self) -> dict[str, Any]:
        """The state in ``torch.optim.AdamW(fused=True).state_dict()``'s layout."""
        group = {
            "lr": self.lr, "betas": _BETAS, "eps": _EPS, "weight_decay": self.weight_decay,
            "amsgrad": False, "maximize": False, "foreach": None, "capturable": False,
            "differentiable": False, "fused": True, "decoupled_weight_decay": True,
            "params": list(range(len(self.params))),
        }
        return {"state": {i: dict(s) for i, s in sorted(self._state.items())},
                "param_groups": [group]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load :meth:`state_dict` output (or a ``torch.optim.AdamW`` one)."""
        groups = state["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(self.params):
            raise ValueError("optimizer state does not match the parameters")
        new: dict[int, dict[str, torch.Tensor]] = {}
        for key, s in state["state"].items():
            i = int(key)
            p = self.params[i]
            if s["exp_avg"].shape != p.shape or s["exp_avg_sq"].shape != p.shape:
                raise ValueError(f"optimizer state {i} has the wrong shape")
            new[i] = {
                "step": s["step"].to(dtype=torch.float32),
                "exp_avg": s["exp_avg"].to(dtype=p.dtype),
                "exp_avg_sq": s["exp_avg_sq"].to(dtype=p.dtype),
            }
        self.lr = float(groups[0]["lr"])
        self._state = new
