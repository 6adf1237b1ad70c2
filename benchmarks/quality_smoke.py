"""Detection-quality smoke test on synthetic streams (a table on stdout).

(a) 10-D standard normal: a training stream, then a test stream with 20
    anomalies drawn from N(3, 2) at random positions.
(b) 20-D data from 5 latent factors (random loadings) plus N(0, 0.1) noise;
    anomalies N(0, 2) in every coordinate (off the factor subspace).

The engine runs once over training + test records with the default config
(one torch thread); precision/recall/F1 are computed on the test part from the
engine's own flags.

    .venv/bin/python benchmarks/quality_smoke.py [--n-train 5000] [--n-test 2000] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import structlog
import torch

from stream_ae.config import EngineConfig
from stream_ae.engine import Engine
from stream_ae.records import Batch

Scenario = Callable[[np.random.Generator, int], np.ndarray]


def normal_10d(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.normal(size=(n, 10))


def factors_20d(loadings: np.ndarray) -> Scenario:
    def make(rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.normal(size=(n, 5)) @ loadings + rng.normal(0, 0.1, size=(n, 20))

    return make


def build_stream(
    rng: np.random.Generator, normal: Scenario, anomaly: Scenario, n_train: int, n_test: int,
    n_anom: int,
) -> tuple[np.ndarray, np.ndarray]:
    x = normal(rng, n_train + n_test)
    labels = np.zeros(n_train + n_test, dtype=np.int64)
    pos = n_train + rng.choice(n_test, n_anom, replace=False)
    x[pos] = anomaly(rng, n_anom)
    labels[pos] = 1
    return x.astype(np.float32), labels


def evaluate(flags: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    tp = int((flags & (labels == 1)).sum())
    fp = int((flags & (labels == 0)).sum())
    fn = int((~flags & (labels == 1)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}


def run(x: np.ndarray, labels: np.ndarray, n_train: int) -> dict[str, float]:
    eng = Engine(EngineConfig(), [f"x{i}" for i in range(x.shape[1])])
    t0 = time.perf_counter()
    res = eng.step(Batch.from_arrays(x))
    out = evaluate(res.is_anomaly[n_train:], labels[n_train:])
    out["seconds"] = time.perf_counter() - t0
    out["drift_events"] = len(res.drift_events)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n-train", type=int, default=5000)
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = p.parse_args()
    torch.set_num_threads(1)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    print(f"train={args.n_train} test={args.n_test} anomalies=20, default EngineConfig")
    print(f"{'scenario':<30}{'seed':>5}{'tp':>5}{'fp':>5}{'fn':>5}{'precision':>11}"
          f"{'recall':>8}{'F1':>7}{'drift':>7}{'s':>7}")
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        loadings = rng.normal(size=(5, 20))
        cases: list[tuple[str, Scenario, Scenario]] = [
            ("(a) 10-D N(0,1), anom N(3,2)", normal_10d,
             lambda r, n: r.normal(3.0, 2.0, size=(n, 10))),
            ("(b) 20-D 5 factors, N(0,2)", factors_20d(loadings),
             lambda r, n: r.normal(0.0, 2.0, size=(n, 20))),
        ]
        for name, normal, anomaly in cases:
            x, labels = build_stream(rng, normal, anomaly, args.n_train, args.n_test, 20)
            m = run(x, labels, args.n_train)
            print(f"{name:<30}{seed:>5}{m['tp']:>5}{m['fp']:>5}{m['fn']:>5}"
                  f"{m['precision']:>11.2f}{m['recall']:>8.2f}{m['f1']:>7.2f}"
                  f"{m['drift_events']:>7}{m['seconds']:>7.1f}")


if __name__ == "__main__":
    main()
