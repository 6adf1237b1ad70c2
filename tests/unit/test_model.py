"""The network, OnlineAutoencoder (scoring has no side effects, exact state round trip), scaler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from stream_ae.model.network import Autoencoder, SeededDropout
from stream_ae.model.online import OnlineAutoencoder, RunningScaler
from tests.streams import latent


def data(n: int = 512, d: int = 6, seed: int = 0) -> np.ndarray:
    return latent(n, seed, factors=2, width=d, noise=0.05).astype(np.float32)


def test_network_layout_bottleneck_and_output_are_linear() -> None:
    net = Autoencoder(6, (16, 8), 3, "relu", 0.1, torch.Generator().manual_seed(0))
    kinds = [type(m).__name__ for m in net.layers]
    assert kinds == [
        "Linear", "ReLU", "SeededDropout", "Linear", "ReLU", "SeededDropout", "Linear",
        "Linear", "ReLU", "SeededDropout", "Linear", "ReLU", "SeededDropout", "Linear",
    ]
    widths = [(m.in_features, m.out_features) for m in net.layers if isinstance(m, nn.Linear)]
    assert widths == [(6, 16), (16, 8), (8, 3), (3, 8), (8, 16), (16, 6)]


def test_seeded_dropout_is_reproducible_and_off_in_eval() -> None:
    a = SeededDropout(0.3, torch.Generator().manual_seed(5)).train()(torch.ones(100))
    b = SeededDropout(0.3, torch.Generator().manual_seed(5)).train()(torch.ones(100))
    assert torch.equal(a, b) and 0 < int((a == 0).sum()) < 100
    assert torch.equal(SeededDropout(0.3, torch.Generator()).eval()(torch.ones(5)), torch.ones(5))


def test_score_many_has_no_side_effects_and_matches_manual_mse() -> None:
    ae = OnlineAutoencoder(6, hidden=(8,), bottleneck=2, seed=1)
    x = data(300)
    s1, cols = ae.score_many(x)
    before = ae.to_bytes()
    s2, _ = ae.score_many(x)
    assert ae.to_bytes() == before and ae.n_steps == 0
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_allclose(cols.mean(axis=1), s1, rtol=1e-6)
    assert cols.shape == (300, 6) and s1.dtype == np.float64


@pytest.mark.parametrize("size", [1, 2, 3, 5, 255, 257])
def test_row_scores_do_not_depend_on_the_rows_scored_beside_them(size: int) -> None:
    ae = OnlineAutoencoder(6, hidden=(16, 8), bottleneck=3, seed=2)
    for _ in range(5):
        ae.learn_many(data(128))
    x = data(700, seed=3)
    full, full_cols = ae.score_many(x)
    for start in range(0, 700 - size, 97):
        part, part_cols = ae.score_many(x[start : start + size])
        np.testing.assert_array_equal(part, full[start : start + size])
        np.testing.assert_array_equal(part_cols, full_cols[start : start + size])


def test_learning_reduces_error_and_counts_steps() -> None:
    ae = OnlineAutoencoder(6, hidden=(16,), bottleneck=2, lr=5e-3, seed=0)
    x = data()
    before = ae.score_many(x)[0].mean()
    losses = [ae.learn_many(x) for _ in range(150)]
    assert ae.n_steps == 150
    assert ae.score_many(x)[0].mean() < 0.5 * before
    assert losses[-1] < losses[0]


def test_zero_weights_leave_the_model_unchanged() -> None:
    ae = OnlineAutoencoder(6, hidden=(8,), bottleneck=2, seed=0)
    x = data(64)
    s0 = ae.score_many(x)[0]
    assert ae.learn_many(x, weights=np.zeros(64)) == 0.0
    np.testing.assert_array_equal(ae.score_many(x)[0], s0)


def test_bytes_round_trip_continues_bit_identically_with_dropout() -> None:
    a = OnlineAutoencoder(6, hidden=(8,), bottleneck=2, dropout=0.2, weight_decay=1e-3, seed=4)
    x = data(128)
    for _ in range(3):
        a.learn_many(x)
    b = OnlineAutoencoder(6, hidden=(8,), bottleneck=2, dropout=0.2, weight_decay=1e-3, seed=99)
    b.load_bytes(a.to_bytes())
    assert b.n_steps == 3
    for _ in range(3):
        assert a.learn_many(x, lr_scale=2.0) == b.learn_many(x, lr_scale=2.0)
    np.testing.assert_array_equal(a.score_many(x)[0], b.score_many(x)[0])


def test_scaler_equals_batch_statistics_when_merged_in_blocks() -> None:
    x = data(1000).astype(np.float32) * 3 + 1
    s = RunningScaler(6)
    for block in np.array_split(x, 7):
        s.update(block)
    z = s.transform(x)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=0), 1, atol=1e-4)
    assert s.count == 1000


def test_scaler_memory_forgets_old_data() -> None:
    s = RunningScaler(1, memory=100)
    s.update(np.zeros((1000, 1), np.float32))
    for _ in range(20):
        s.update(np.full((100, 1), 10.0, np.float32))
    assert s.transform(np.array([[10.0]], np.float32))[0, 0] == pytest.approx(0.0, abs=0.01)
    assert s.count == 200


def test_scaler_state_round_trip() -> None:
    s = RunningScaler(6, memory=50)
    s.update(data(80))
    t = RunningScaler(6, memory=50)
    t.set_state(s.get_state())
    np.testing.assert_array_equal(s.transform(data(5)), t.transform(data(5)))


def trained(width: int, hidden: tuple[int, ...], activation: str = "elu") -> OnlineAutoencoder:
    ae = OnlineAutoencoder(width, hidden=hidden, bottleneck=max(1, width // 4),
                           activation=activation, seed=width)
    x = np.random.default_rng(width).normal(size=(64, width)).astype(np.float32)
    for _ in range(3):
        ae.learn_many(x)
    return ae


def assert_position_independent(ae: OnlineAutoencoder, width: int) -> None:
    """One call == random splits == one row per call, bit for bit."""
    rng = np.random.default_rng(width + 1)
    x = rng.normal(size=(300, width)).astype(np.float32)
    full, full_cols = ae.score_many(x)
    cuts = np.sort(rng.choice(np.arange(1, x.shape[0]), 9, replace=False))
    parts = [ae.score_many(p) for p in np.split(x, cuts)]
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), full)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), full_cols)
    rows = range(0, x.shape[0], 5)
    one = [ae.score_many(x[i : i + 1]) for i in rows]
    np.testing.assert_array_equal(np.array([s[0][0] for s in one]), full[::5])
    np.testing.assert_array_equal(np.stack([s[1][0] for s in one]), full_cols[::5])


@pytest.mark.parametrize("hidden", [(), (16, 8)], ids=["linear", "mlp"])
@pytest.mark.parametrize("width", range(1, 81))
def test_scores_are_exact_whatever_the_rows_position(width: int, hidden: tuple[int, ...]) -> None:
    # CPU GEMM kernels sum rows in different orders by offset for many widths (27, 38, ...)
    assert_position_independent(trained(width, hidden), width)


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu", "elu", "silu"])
@pytest.mark.parametrize("width", [1, 7, 27, 38, 73])
def test_scores_are_exact_for_every_activation(width: int, activation: str) -> None:
    # 64 hidden x 300 records: the activation runs in two pieces (see _ACT_PIECE)
    assert_position_independent(trained(width, (64, 5), activation), width)


def test_exact_linear_matches_matmul_and_scoring_matches_the_torch_network() -> None:
    ae = trained(27, (16,))
    x = data(300, d=27)
    with torch.no_grad():
        ae._net.eval()
        ref = ae._net(torch.from_numpy(x)).numpy()
    ae._net.train()
    np.testing.assert_allclose(ae.score_many(x)[1], np.square(ref - x), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("inputs", "outputs"), [(72, 18), (18, 72), (3, 1), (9, 2)])
@pytest.mark.parametrize("n", [1, 2, 7, 70, 1000, 2000])
def test_exact_linear_gives_the_same_bits_on_both_paths(
    inputs: int, outputs: int, n: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # small blocks multiply in one call, large ones input by input: same products, same sums
    from stream_ae.model import online

    rng = np.random.default_rng(inputs * 1000 + n)
    xt = rng.normal(size=(inputs, n)).astype(np.float32)
    w = rng.normal(size=(inputs, outputs, 1)).astype(np.float32)
    b = rng.normal(size=(outputs, 1)).astype(np.float32)
    at_once = inputs * outputs * n <= online._PRODUCTS_AT_ONCE
    got = online.exact_linear(xt, w, b)
    monkeypatch.setattr(online, "_PRODUCTS_AT_ONCE", (1 << 40) if not at_once else 0)
    other = online.exact_linear(xt, w, b)
    assert got.tobytes() == other.tobytes()
    np.testing.assert_allclose(got, (xt.T @ w[:, :, 0] + b[:, 0]).T, rtol=1e-4, atol=1e-4)
