"""Prediction rows: one per input row (scored or not), in input order, and their writer."""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np
import pandas as pd

from stream_ae.processor import Processed
from stream_ae.records import StepResult


class PredictionWriter:
    """Appends prediction rows to a CSV file (header first) or, when the path ends in
    ``.parquet``, to a Parquet file; columnar (pyarrow), one schema for the whole file.

    Missing values (NaN, None) are written as empty CSV fields / Parquet nulls. Call
    :meth:`close` at the end (a Parquet file is not readable before).

    Examples
    --------
    >>> import tempfile
    >>> w = PredictionWriter(pathlib.Path(tempfile.mkdtemp()) / "p.csv")
    >>> w.write(pd.DataFrame({"score": [1.5]})); w.write(pd.DataFrame({"score": [2.0]}))
    >>> w.close(); w.path.read_text().split()
    ['"score"', '1.5', '2']
    """

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self._writer: Any = None
        self._schema: Any = None

    @property
    def parquet(self) -> bool:
        return self.path.suffix.lower() in (".parquet", ".pq")

    def write(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa

        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self._writer is None:
            self._open(table.schema)
        elif table.schema != self._schema:
            table = table.select(self._schema.names).cast(self._schema)
        self._writer.write_table(table)

    def _open(self, schema: Any) -> None:
        import pyarrow as pa

        # a column that is all-missing in the first block has no type yet: text, which every
        # later value of a prediction column casts to
        fields = [pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f
                  for f in schema]
        self._schema = pa.schema(fields)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.parquet:
            import pyarrow.parquet as pq

            self._writer = pq.ParquetWriter(self.path, self._schema)
        else:
            import pyarrow.csv as pcsv

            self._writer = pcsv.CSVWriter(self.path, self._schema, write_options=pcsv.
                                          WriteOptions(quoting_style="needed"))

    def close(self) -> None:
        """Finish the file (idempotent)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()


def result_columns(n: int, res: StepResult | None) -> dict[str, Any]:
    """``score``, ``threshold``, ``grade``, ``is_anomaly``, ``warmup``, ``incident`` (the
    line/offset of the first flagged record of the row's incident, -1 for none) of ``n``
    rows (NaN / 0 / -1 when the engine saw none of them) and their ``error``
    (``rejected:<reason>`` or empty)."""
    error = [""] * n
    for row, reason in res.rejected if res is not None else ():
        error[row] = f"rejected:{reason}"
    nan = np.full(n, np.nan)
    return {
        "score": nan if res is None else res.scores,
        "threshold": nan if res is None else res.thresholds,
        "grade": nan if res is None or res.grades is None else res.grades,
        "is_anomaly": np.zeros(n, np.int8) if res is None else res.is_anomaly.astype(np.int8),
        "warmup": np.zeros(n, np.int8) if res is None else res.warmup.astype(np.int8),
        "incident": (np.full(n, -1, np.int64) if res is None or res.incident is None
                     else res.incident),
        "error": error,
    }


def with_unscored(frame: pd.DataFrame, bad: pd.DataFrame, order: str) -> pd.DataFrame:
    """Prediction rows plus rows that were never scored (``bad``: position and ``error``),
    in input order (by ``order``); labels as nullable integers (empty when unknown)."""
    if len(bad):
        bad = bad.assign(is_anomaly=0, warmup=0, incident=-1)
        frame = pd.concat([frame, bad], ignore_index=True).sort_values(order, kind="stable")
        frame[["is_anomaly", "warmup"]] = frame[["is_anomaly", "warmup"]].astype(np.int8)
        if "incident" in frame:
            frame["incident"] = frame["incident"].astype(np.int64)
    if "label" in frame:
        frame["label"] = frame["label"].astype("Int64")
    return frame




def prediction_frame(p: Processed, file_layout: bool, with_label: bool) -> pd.DataFrame:
    """One prediction row per row of the processed block (scored or dead-lettered), in offset
    order. File layout: ``line``, ``timestamp`` (as written), ``key`` (when the file has
    them); topic layout: ``partition``, ``offset``, ``key``, ``timestamp`` (seconds). Then
    ``score``, ``threshold``, ``is_anomaly``, ``warmup``, ``label`` (``with_label``) and
    ``error`` (the dead-letter or rejection reason)."""
    decoded, res = p.decoded, p.result
    b, n = decoded.batch, len(decoded.batch)
    result = result_columns(n, res)
    error = result.pop("error")
    order = "line" if file_layout else "offset"
    cols: dict[str, Any] = {} if file_layout else {"partition": p.block.partition}
    cols[order] = decoded.offsets
    if file_layout:
        text = getattr(p.block, "timestamp_text", None)
        if text is not None:
            idx = np.searchsorted(np.asarray(p.block.offsets), decoded.offsets)
            cols["timestamp"] = [text[i] for i in idx]
        if getattr(p.block, "has_key", False):
            cols["key"] = list(b.keys)
    else:
        cols["key"] = list(b.keys)
        cols["timestamp"] = b.timestamps
    cols.update(result)
    if with_label:
        cols["label"] = b.labels if b.labels is not None else np.full(n, -1)
    frame = pd.DataFrame({**cols, "error": error})
    dead: dict[str, Any] = {} if file_layout else {"partition": p.block.partition}
    dead[order] = [d.original.position.offset for d in decoded.dead_letters]
    dead["error"] = [f"{d.reason}: {d.detail}" for d in decoded.dead_letters]
    return with_unscored(frame, pd.DataFrame(dead), order)
