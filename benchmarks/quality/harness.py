"""Shared pieces of the quality harness: where ../shared is, the data, the scorers.

The official scorers (``../shared/eval/skab_eval.py`` and ``cardio_eval.py``) are
run as subprocesses on prediction files written in their documented formats, so
every number this harness prints is the scorer's, not ours.

``../shared`` is found beside the repository root; override it with the
environment variable ``STREAM_AE_SHARED`` or the ``--shared`` option of the
scripts.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd

REPO = pathlib.Path(__file__).resolve().parents[2]
SKAB_TRAIN_ROWS = 400
SKAB_LABEL_COLUMNS = ("anomaly", "changepoint")
CARDIO_ORDERS = range(5)

F64 = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]


def shared_dir(override: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """The shared folder: ``override``, else ``$STREAM_AE_SHARED``, else ``<repo>/../shared``."""
    raw = override or os.environ.get("STREAM_AE_SHARED") or REPO.parent / "shared"
    return pathlib.Path(raw).resolve()


def shared_available(override: str | None = None) -> bool:
    """True when the scorers and both data sets are there."""
    root = shared_dir(override)
    need = ("eval/skab_eval.py", "eval/cardio_eval.py", "datasets/skab/data",
            "datasets/odds/cardio.csv")
    return all((root / p).exists() for p in need)


# --------------------------------------------------------------------------- detectors
@dataclass(frozen=True)
class StreamOutput:
    """What a detector said about every row of one stream, in stream order."""

    scores: F64
    is_anomaly: Bool
    warmup: Bool

    def __post_init__(self) -> None:
        n = len(self.scores)
        if len(self.is_anomaly) != n or len(self.warmup) != n:
            raise ValueError("scores, is_anomaly and warmup must have the same length")


class StreamDetector(Protocol):
    """A detector the harness can stream a file through, from a cold start."""

    name: str

    def run(self, values: npt.NDArray[np.float32], warmup: int,
            feature_names: tuple[str, ...]) -> StreamOutput:
        """Score ``values`` row by row in order (score before learn); ``warmup`` rows first."""
        ...


# --------------------------------------------------------------------------- SKAB
@dataclass(frozen=True)
class SkabFile:
    """One labelled SKAB file: ``rel`` as the scorer names it, the raw frame."""

    rel: str
    frame: pd.DataFrame

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(c for c in self.frame.columns if c not in SKAB_LABEL_COLUMNS)

    @property
    def values(self) -> npt.NDArray[np.float32]:
        return self.frame[list(self.feature_names)].to_numpy(dtype=np.float32)

    @property
    def labels(self) -> npt.NDArray[np.int64]:
        return self.frame["anomaly"].to_numpy().astype(np.int64)


def _skab_sort_key(rel: str) -> tuple[str, float, str]:
    folder, _, name = rel.rpartition("/")
    stem = name.removesuffix(".csv")
    return (folder, int(stem) if stem.isdigit() else math.inf, stem)


def skab_files(shared: pathlib.Path, subset: Iterable[str] = ()) -> list[SkabFile]:
    """The 34 leaderboard files (``anomaly-free`` excluded), optionally only those under
    the folders in ``subset`` (e.g. ``("valve1",)``)."""
    data = shared / "datasets" / "skab" / "data"
    wanted = tuple(subset)
    rels = sorted(
        (p.relative_to(data).as_posix() for p in data.rglob("*.csv")
         if "anomaly-free" not in p.as_posix()),
        key=_skab_sort_key,
    )
    rels = [r for r in rels if not wanted or r.split("/")[0] in wanted]
    return [SkabFile(r, pd.read_csv(data / r, sep=";", index_col="datetime", parse_dates=True))
            for r in rels]


def write_skab_prediction(out_dir: pathlib.Path, f: SkabFile, out: StreamOutput) -> pathlib.Path:
    """One CSV in the scorer's external format: every row of the file, in order."""
    if len(out.scores) != len(f.frame):
        raise ValueError(f"{f.rel}: {len(out.scores)} outputs for {len(f.frame)} rows")
    path = out_dir / f.rel
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({
        "datetime": f.frame.index.strftime("%Y-%m-%d %H:%M:%S"),
        "is_anomaly": out.is_anomaly.astype(int),
        "score": out.scores,
        "warmup": out.warmup.astype(int),
    }).to_csv(path, index=False)
    return path


def score_skab(shared: pathlib.Path, pred_dir: pathlib.Path,
               allow_missing: bool = False, per_file: bool = False) -> dict[str, Any]:
    """Run ``skab_eval.py evaluate`` on ``pred_dir``; its JSON result, stdout under ``"text"``."""
    json_path = pred_dir / "_result.json"
    cmd = [sys.executable, str(shared / "eval" / "skab_eval.py"), "evaluate",
           str(shared / "datasets" / "skab"), "--pred", str(pred_dir), "--json", str(json_path)]
    cmd += ["--allow-missing"] if allow_missing else []
    cmd += ["--per-file"] if per_file else []
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(json_path.read_text())
    result["text"] = proc.stdout
    return result


def skab_baseline(shared: pathlib.Path, method: str = "t2q") -> dict[str, Any]:
    """The scorer's own built-in baseline (``t2q`` reproduces the leaderboard row)."""
    json_path = pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / f"skab_baseline_{os.getpid()}.json"
    subprocess.run([sys.executable, str(shared / "eval" / "skab_eval.py"), "baseline",
                    str(shared / "datasets" / "skab"), "--method", method,
                    "--json", str(json_path)], capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(json_path.read_text())
    json_path.unlink()
    return result


# --------------------------------------------------------------------------- cardio
def cardio_frame(shared: pathlib.Path) -> pd.DataFrame:
    return pd.read_csv(shared / "datasets" / "odds" / "cardio.csv")


def cardio_order(n: int, i: int) -> npt.NDArray[np.int64]:
    """The scorer's fixed order ``i``: ``numpy.random.default_rng(i).permutation(n)``."""
    return np.random.default_rng(i).permutation(n)


def write_cardio_prediction(out_dir: pathlib.Path, i: int, rows: npt.NDArray[np.int64],
                            out: StreamOutput) -> pathlib.Path:
    """``cardio_order{i}.csv``: columns row, score, is_anomaly in streamed order."""
    if not np.isfinite(out.scores).all():
        raise ValueError(f"order {i}: non-finite scores; the cardio scorer rejects them")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"cardio_order{i}.csv"
    pd.DataFrame({"row": rows, "score": out.scores,
                  "is_anomaly": out.is_anomaly.astype(int)}).to_csv(path, index=False)
    return path


_CARDIO_MEAN = re.compile(r"^cardio (.*)$", re.MULTILINE)


def score_cardio(shared: pathlib.Path, pred_dir: pathlib.Path) -> dict[str, Any]:
    """Run ``cardio_eval.py score``; the mean line parsed, the per-order table as text."""
    proc = subprocess.run([sys.executable, str(shared / "eval" / "cardio_eval.py"), "score",
                           str(pred_dir)], capture_output=True, text=True, check=True)
    match = _CARDIO_MEAN.search(proc.stdout)
    if match is None:
        raise RuntimeError(f"unexpected cardio scorer output: {proc.stdout!r}")
    means = {k: float(v) for k, v in (kv.split("=") for kv in match.group(1).split())}
    return {"mean": means, "text": proc.stdout}
