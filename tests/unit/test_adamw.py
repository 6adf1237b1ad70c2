"""FusedAdamW against torch.optim.AdamW(fused=True): same weights, same state layout."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
import torch

from stream_ae.model.adamw import FusedAdamW


def _pair(seed: int, weight_decay: float) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(seed)
    a = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.ELU(), torch.nn.Linear(3, 5))
    b = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.ELU(), torch.nn.Linear(3, 5))
    b.load_state_dict(a.state_dict())
    return a, b


def _loss(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return (net(x) - x).square().mean()


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_bit_identical_to_torch_optim_fused_adamw(weight_decay: float) -> None:
    a, b = _pair(0, weight_decay)
    ref = torch.optim.AdamW(a.parameters(), lr=1e-2, weight_decay=weight_decay, fused=True)
    mine = FusedAdamW(b.parameters(), lr=1e-2, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(1)
    for step in range(30):
        x = torch.randn(16, 5, generator=gen)
        lr = 1e-2 * (3.0 if step % 7 == 0 else 1.0)
        for g in ref.param_groups:
            g["lr"] = lr
        ref.zero_grad(set_to_none=True)
        _loss(a, x).backward()
        ref.step()
        mine.zero_grad()
        _loss(b, x).backward()
        mine.step(lr)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_state_dict_loads_both_ways() -> None:
    a, b = _pair(2, 0.0)
    ref = torch.optim.AdamW(a.parameters(), lr=1e-3, weight_decay=0.0, fused=True)
    x = torch.randn(8, 5, generator=torch.Generator().manual_seed(3))
    _loss(a, x).backward()
    ref.step()
    ours = FusedAdamW(b.parameters(), lr=1e-3, weight_decay=0.0)
    buf = io.BytesIO()
    torch.save(ref.state_dict(), buf)
    ours.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    mine = ours.state_dict()
    theirs = ref.state_dict()
    assert mine["param_groups"] == theirs["param_groups"]
    assert sorted(mine["state"]) == sorted(theirs["state"])
    for i, s in theirs["state"].items():
        for k, v in s.items():
            assert torch.equal(mine["state"][i][k], v)
    back = torch.optim.AdamW(b.parameters(), lr=1e-3, weight_decay=0.0, fused=True)
    back.load_state_dict(mine)  # and ours loads into torch.optim
    assert float(back.state_dict()["state"][0]["step"]) == 1.0


def test_wrong_shape_is_refused() -> None:
    lin = torch.nn.Linear(2, 1)
    opt = FusedAdamW(lin.parameters(), lr=1e-3, weight_decay=0.0)
    lin(torch.ones(1, 2)).sum().backward()
    opt.step()
    other = FusedAdamW(torch.nn.Linear(3, 1).parameters(), lr=1e-3, weight_decay=0.0)
    with pytest.raises(ValueError, match="wrong shape"):
        other.load_state_dict(opt.state_dict())


def test_training_does_not_import_the_compiler() -> None:
    code = ("import sys, numpy as np\n"
            "from stream_ae.model.online import OnlineAutoencoder\n"
            "ae = OnlineAutoencoder(4, hidden=(8,), bottleneck=2)\n"
            "x = np.ones((32, 4), np.float32)\n"
            "ae.learn_many(x); ae.load_bytes(ae.to_bytes()); ae.learn_many(x)\n"
            "print('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
