"""RESEARCH PROTOTYPE, NOT PRODUCT CODE: what the engine should do, found with plain numpy.

Two small experiments that guided the engine's defaults (docs/quality.md):

``skab``: per file, a static PCA model of the 400 warm-up rows (z-scored with the
warm-up statistics), optionally on shingles (``lags`` previous rows appended),
scored by the squared residual, alarmed above ``m`` times the in-sample 0.99
quantile of the warm-up scores, after an optional causal rolling median of
``smooth`` scores. Nothing is learned after the warm-up, so this isolates the
effect of the input representation and the threshold level.

``cardio``: threshold-free rankings of simple scores on all 1831 rows at once
(batch, so an upper reference for a streaming detector, not a result).

    python benchmarks/quality/prototype.py skab --subset valve1
    python benchmarks/quality/prototype.py cardio

Hyperparameters were read off ``--subset valve1`` only (the tuning subset);
the other 18 files were looked at only for the final report.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import harness
import numpy as np
import numpy.typing as npt
import pandas as pd

F64 = npt.NDArray[np.float64]


def shingle(x: F64, lags: int) -> F64:
    """Each row followed by its ``lags`` predecessors (the first row repeated at the start)."""
    cols = [x] + [np.vstack([np.repeat(x[:1], k, 0), x[:-k]]) for k in range(1, lags + 1)]
    return np.hstack(cols)


def pca_residual(z: F64, n_train: int, explained: float = 0.85) -> F64:
    """Mean squared residual off the warm-up's principal subspace (sklearn-style ``explained``)."""
    tr = z[:n_train]
    mu, sd = tr.mean(0), tr.std(0)
    sd[sd < 1e-6] = 1.0
    zs = (z - mu) / sd
    _, s, vt = np.linalg.svd(zs[:n_train], full_matrices=False)
    var = s**2
    k = int(np.searchsorted(np.cumsum(var) / var.sum(), explained) + 1)
    p = vt[:k].T
    res: F64 = np.square(zs - zs @ p @ p.T).mean(axis=1)
    return res


def skab_rates(lags: int, smooth: int, m: float, subset: Sequence[str]) -> tuple[float, ...]:
    """Pooled F1, FAR %, MAR % of the static PCA recipe (same formulas as the scorer)."""
    tp = fp = fn = tn = 0
    for f in harness.skab_files(harness.shared_dir(), subset):
        s = pca_residual(shingle(f.values.astype(np.float64), lags), harness.SKAB_TRAIN_ROWS)
        s = pd.Series(s).rolling(smooth, min_periods=1).median().to_numpy()
        limit = m * np.quantile(s[: harness.SKAB_TRAIN_ROWS], 0.99)
        p = s[harness.SKAB_TRAIN_ROWS:] > limit
        y = f.labels[harness.SKAB_TRAIN_ROWS:] == 1
        tp, fp = tp + int((p & y).sum()), fp + int((p & ~y).sum())
        fn, tn = fn + int((~p & y).sum()), tn + int((~p & ~y).sum())
    return (tp / (tp + (fp + fn) / 2), 100 * fp / (fp + tn), 100 * fn / (fn + tp))


def skab(subset: Sequence[str]) -> None:
    print(f"static PCA (85 % variance) on warm-up rows, subset {list(subset) or 'all'}")
    print("lags smooth   m     F1   FAR%   MAR%")
    for lags in (0, 4, 8, 16):
        for smooth in (1, 15):
            for m in (1.0, 1.5, 2.0, 3.0):
                f1, far, mar = skab_rates(lags, smooth, m, subset)
                print(f"{lags:4} {smooth:6} {m:4.1f}  {f1:5.2f} {far:6.1f} {mar:6.1f}")


def cardio() -> None:
    from sklearn.metrics import roc_auc_score

    frame = harness.cardio_frame(harness.shared_dir())
    y = frame.pop("y").to_numpy()
    x = frame.to_numpy(dtype=np.float64)
    z = x - x.mean(0)
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    scores: dict[str, F64] = {"squared norm (z-scored)": np.square(z / x.std(0)).sum(1)}
    for k in (1, 3, 5):
        p = vt[:k].T
        scores[f"PCA residual k={k}"] = np.square(z - z @ p @ p.T).sum(1)
        scores[f"PCA T^2 k={k}"] = (np.square(z @ p) / (s[:k] ** 2 / len(z))).sum(1)
    k_pos = int(y.sum())
    print("batch scores on all rows (reference only)     hits@176   AUC")
    for name, sc in scores.items():
        hits = int(y[np.argsort(-sc, kind="mergesort")[:k_pos]].sum())
        print(f"{name:<44} {hits:8}  {roc_auc_score(y, sc):.3f}")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("experiment", choices=["skab", "cardio"])
    ap.add_argument("--subset", action="append", default=[])
    a = ap.parse_args(argv)
    if not harness.shared_available():
        sys.exit(f"no shared data at {harness.shared_dir()}")
    skab(a.subset) if a.experiment == "skab" else cardio()


if __name__ == "__main__":
    main()
