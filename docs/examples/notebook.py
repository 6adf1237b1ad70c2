# %% [markdown]
# # The classic autoencoder outlier recipe, streaming
#
# A PyOD / H2O notebook in a few cells: fit an autoencoder on a table, rank rows by
# reconstruction error, cut at a contamination threshold, evaluate; then keep going as a
# stream with `partial_fit`. Data: scikit-learn's bundled breast-cancer table (no download),
# benign tumours as the normal class and a 10 % sample of malignant ones as the outliers,
# the usual outlier-detection version of this data set.
#
# Run it: `.venv/bin/python docs/examples/notebook.py` (about 10 s); each `# %%` is a cell.

# %%
import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import train_test_split

from stream_ae.sklearn import AutoencoderOutlierDetector


def load(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Benign rows (y=0) plus 10 % malignant ones (y=1), shuffled."""
    data = load_breast_cancer()
    rng = np.random.default_rng(seed)
    benign = np.flatnonzero(data.target == 1)
    malignant = rng.choice(np.flatnonzero(data.target == 0), len(benign) // 9, replace=False)
    rows = rng.permutation(np.concatenate([benign, malignant]))
    return data.data[rows], (data.target[rows] == 0).astype(int)


# %% [markdown]
# ## Fit on a (contaminated) training set, as PyOD's examples do
#
# `fit` is the engine's warm-up on all of `X_train`: a running scaler, the autoencoder
# (two hidden layers, 20 epochs), and the threshold at the `1 - contamination` quantile of
# the training errors. `decision_function` follows scikit-learn (negative = outlier); the
# reconstruction error, PyOD's score, is `-score_samples`.

# %%
def fit_and_score(seed: int = 0) -> dict[str, float]:
    X, y = load(seed)
    X_train, X_test, _, y_test = train_test_split(X, y, test_size=0.4, stratify=y,
                                                  random_state=seed)
    det = AutoencoderOutlierDetector(contamination=0.1, hidden=(16, 8), bottleneck=4,
                                     epochs=20, random_state=seed).fit(X_train)
    error = -det.score_samples(X_test)
    flagged = det.predict(X_test) == -1
    return {
        "train_rows": len(X_train), "test_rows": len(X_test),
        "roc_auc": roc_auc_score(y_test, error),
        "average_precision": average_precision_score(y_test, error),
        "precision": float(y_test[flagged].mean()) if flagged.any() else float("nan"),
        "recall": float(flagged[y_test == 1].mean()),
        **stream_on(det, X_test, y_test),
    }


# %% [markdown]
# ## Keep going as a stream
#
# The fitted detector *is* a streaming engine: `partial_fit` scores each new chunk with the
# current state, then learns from the rows it did not flag. Score-before-learn (prequential)
# evaluation of the test rows arriving in chunks of 40:

# %%
def stream_on(det: AutoencoderOutlierDetector, X: np.ndarray, y: np.ndarray,
              chunk: int = 40) -> dict[str, float]:
    streamed = []
    for start in range(0, len(X), chunk):
        rows = X[start:start + chunk]
        streamed.append(-det.score_samples(rows))  # scored before it is learnt
        det.partial_fit(rows)
    return {"streamed_roc_auc": roc_auc_score(y, np.concatenate(streamed)),
            "records_seen": det.engine_.records_seen}


# %%
if __name__ == "__main__":
    for name, value in fit_and_score().items():
        print(f"{name:>18}: {value:.3f}" if isinstance(value, float) else f"{name:>18}: {value}")
