"""File backtests: one prediction row per input row, in order; metrics; reports; the CLI."""

from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from stream_ae.apps.simulate import SimulationConfig, simulate_frame
from stream_ae.backtest import FileInput, run_file_backtest, settings_with
from stream_ae.cli import app
from stream_ae.config import Settings
from stream_ae.sources.files import Columns

SIM = SimulationConfig(devices=2, day_s=600.0, anomalies_after=300.0, point_rate=0.01,
                       collective_rate=0.004, seed=3)
STEPS = 900  # 1800 rows


def _settings() -> Settings:
    return Settings.load(None, engine={"training": {"warmup": 400, "window": 512,
                                                    "batch_size": 256, "stride": 128,
                                                    "warmup_epochs": 10}})


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return simulate_frame(SIM, STEPS)


def _write(frame: pd.DataFrame, path: pathlib.Path) -> pathlib.Path:
    {".csv": lambda: frame.to_csv(path, index=False),
     ".jsonl": lambda: frame.to_json(path, orient="records", lines=True, double_precision=15),
     ".parquet": lambda: frame.to_parquet(path, index=False)}[path.suffix]()
    return path


@pytest.fixture(scope="module")
def csv_run(frame: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[pathlib.Path, pd.DataFrame]:
    d = tmp_path_factory.mktemp("csv")
    out = d / "pred.csv"
    run_file_backtest(_settings(), FileInput(_write(frame, d / "in.csv")), out, progress=False)
    return out, pd.read_csv(out)


def test_one_prediction_per_row_in_input_order(frame: pd.DataFrame,
                                               csv_run: tuple[pathlib.Path, pd.DataFrame]
                                               ) -> None:
    _, pred = csv_run
    assert len(pred) == len(frame)
    assert pred["line"].tolist() == list(range(2, len(frame) + 2))
    assert pred["key"].tolist() == frame["key"].tolist()
    assert pred["label"].tolist() == frame["label"].tolist()
    assert pred.columns.tolist() == ["line", "timestamp", "key", "score", "threshold", "grade",
                                     "is_anomaly", "warmup", "incident", "label", "error"]
    assert pred["warmup"].iloc[:400].eq(1).all() and pred["warmup"].iloc[400:].eq(0).all()
    assert pred["is_anomaly"].iloc[:400].eq(0).all()
    assert set(pred["is_anomaly"].unique()) <= {0, 1}
    flagged = pred[pred["is_anomaly"] == 1]
    # a record above the single-record threshold is flagged; below it, evidence may flag it
    live = pred[pred["warmup"] == 0]
    assert (live["score"] <= live["threshold"]).any()
    assert len(flagged) > 0 and flagged["incident"].ge(0).all()
    assert (flagged["score"] > flagged["threshold"]).any()
    assert pred.loc[pred["is_anomaly"] == 0, "grade"].median() < flagged["grade"].median()


def test_reports_are_written_beside_the_predictions(csv_run: tuple[pathlib.Path, pd.DataFrame]
                                                    ) -> None:
    out, _ = csv_run
    png, html = out.with_suffix(".png"), out.with_suffix(".html")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = html.read_text()
    assert "Detection quality" in text and text.count("data:image/png;base64,") == 4
    assert "src=\"http" not in text  # self-contained


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_every_format_gives_the_same_scores(frame: pd.DataFrame, tmp_path: pathlib.Path,
                                            csv_run: tuple[pathlib.Path, pd.DataFrame],
                                            suffix: str) -> None:
    out = tmp_path / "pred.csv"
    summary = run_file_backtest(_settings(), FileInput(_write(frame, tmp_path / f"in{suffix}")),
                                out, progress=False)
    pred = pd.read_csv(out)
    np.testing.assert_allclose(pred["score"], csv_run[1]["score"], rtol=1e-5)
    assert summary.records == len(frame) and summary.bad_rows == 0
    assert summary.metrics is not None and summary.metrics.positives > 0


def test_metrics_match_the_predictions(frame: pd.DataFrame, tmp_path: pathlib.Path) -> None:
    out = tmp_path / "p.csv"
    s = run_file_backtest(_settings(), FileInput(_write(frame, tmp_path / "in.csv")), out,
                          progress=False)
    pred = pd.read_csv(out)
    after = pred[pred["warmup"] == 0]
    tp = int(((after["label"] == 1) & (after["is_anomaly"] == 1)).sum())
    assert s.metrics is not None
    assert (s.metrics.tp, s.metrics.flagged, s.alerts) == (tp, int(after["is_anomaly"].sum()),
                                                           int(pred["is_anomaly"].sum()))
    assert s.metrics.roc_auc > 0.8  # injected anomalies of 2-9 spreads rank high
    assert s.delay["episodes"] >= 1


def test_chunking_does_not_change_results(frame: pd.DataFrame, tmp_path: pathlib.Path,
                                          csv_run: tuple[pathlib.Path, pd.DataFrame]) -> None:
    out = tmp_path / "small.csv"
    run_file_backtest(_settings(), FileInput(_write(frame, tmp_path / "in.csv"), chunk_rows=137),
                      out, progress=False)
    np.testing.assert_array_equal(pd.read_csv(out)["score"], csv_run[1]["score"])


def test_bad_rows_are_reported_and_kept_in_place(frame: pd.DataFrame,
                                                 tmp_path: pathlib.Path) -> None:
    path = _write(frame.iloc[:600], tmp_path / "in.csv")
    lines = path.read_text().splitlines()
    lines[10] = "dev-00,1735689700,1.0,broken,1,1,1,1,0"  # line 11: not a number
    lines[20] = "dev-00,1735689710,1.0"                    # line 21: too few fields
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "p.csv"
    s = run_file_backtest(_settings(), FileInput(path), out, progress=False)
    pred = pd.read_csv(out, keep_default_na=False)
    assert len(pred) == 600 and pred["line"].tolist() == list(range(2, 602))
    by_line = pred.set_index("line")
    assert by_line.loc[11, "error"] == "non_numeric: feature value 'broken' is not a number"
    assert by_line.loc[21, "error"].startswith("field_count")
    assert by_line.loc[11, "score"] == "" and by_line.loc[12, "score"] != ""
    assert s.bad_rows == 2 and [b.line for b in s.bad_examples] == [11, 21]


def test_missing_values_follow_the_engine_policy(frame: pd.DataFrame,
                                                 tmp_path: pathlib.Path) -> None:
    small = frame.iloc[:500].copy()
    small.loc[450, "pressure"] = np.nan
    out = tmp_path / "p.csv"
    s = run_file_backtest(_settings(), FileInput(_write(small, tmp_path / "in.csv")), out,
                          progress=False)
    pred = pd.read_csv(out, keep_default_na=False)
    assert pred.loc[450, "error"] == "missing_feature: feature is null"  # as for a message
    assert pred.loc[450, "score"] == ""
    assert s.bad_rows == 1 and s.records == 500
    ffill = Settings.load(None, engine={**_settings().engine.model_dump(),
                                        "features": {"missing": "ffill"}})
    run_file_backtest(ffill, FileInput(tmp_path / "in.csv"), out, progress=False)
    pred = pd.read_csv(out, keep_default_na=False)
    assert pred.loc[450, "error"] == "" and pred.loc[450, "score"] != ""  # carried forward


def test_overrides_and_columns(frame: pd.DataFrame, tmp_path: pathlib.Path) -> None:
    settings = settings_with(_settings(), features=("temperature", "pressure"), warmup=300)
    out = tmp_path / "p.csv"
    cols = Columns(timestamp="ts", label="label", key="key")
    s = run_file_backtest(settings, FileInput(_write(frame, tmp_path / "in.csv"), cols), out,
                          progress=False)
    pred = pd.read_csv(out)
    assert int(pred["warmup"].sum()) == 300
    assert "temperature, pressure" in out.with_suffix(".html").read_text()
    assert s.scored == len(frame)


def test_without_labels_there_are_no_metrics(frame: pd.DataFrame, tmp_path: pathlib.Path
                                             ) -> None:
    out = tmp_path / "p.csv"
    s = run_file_backtest(_settings(), FileInput(_write(frame.drop(columns=["label"]).iloc[:600],
                                                        tmp_path / "in.csv")), out, progress=False)
    assert s.metrics is None
    assert "label" not in pd.read_csv(out).columns


def test_cli_prints_metrics_and_writes_files(frame: pd.DataFrame, tmp_path: pathlib.Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # structlog caches loggers bound to the stream CliRunner closes afterwards: keep the
    # test process's logging as it is
    monkeypatch.setattr("stream_ae.cli.configure_logging", lambda *a, **k: None)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("engine:\n  training: {warmup: 400, window: 512, batch_size: 256, "
                   "stride: 128, warmup_epochs: 10}\n")
    src = _write(frame, tmp_path / "in.csv")
    out = tmp_path / "out" / "pred.csv"
    result = CliRunner().invoke(app, ["backtest", str(src), "--output", str(out), "--config",
                                      str(cfg), "--label-column", "label", "--key-column", "key",
                                      "--timestamp-column", "ts", "--warmup-rows", "500",
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    for word in ("precision", "recall", "F1", "ROC-AUC"):
        assert word in result.output
    pred = pd.read_csv(out)
    assert len(pred) == len(frame) and int(pred["warmup"].sum()) == 500
    assert out.with_suffix(".png").exists() and out.with_suffix(".html").exists()


def test_bundled_sample_is_small_and_labelled(tmp_path: pathlib.Path) -> None:
    sample = pathlib.Path(__file__).parents[2] / "stream_ae" / "data" / "sample_sensors.csv"
    assert sample.stat().st_size < 1_000_000
    frame = pd.read_csv(sample)
    assert {"key", "ts", "label"} <= set(frame.columns) and frame["label"].sum() > 0


def test_parquet_predictions_hold_the_same_rows_as_csv(
        frame: pd.DataFrame, tmp_path: pathlib.Path,
        csv_run: tuple[pathlib.Path, pd.DataFrame]) -> None:
    out = tmp_path / "pred.parquet"
    run_file_backtest(_settings(), FileInput(_write(frame, tmp_path / "in.csv"), chunk_rows=500),
                      out, progress=False)
    pred, want = pd.read_parquet(out), csv_run[1]
    assert list(pred.columns) == list(want.columns) and len(pred) == len(want)
    np.testing.assert_array_equal(pred["score"].to_numpy(), want["score"].to_numpy())
    np.testing.assert_array_equal(pred["line"], want["line"])
    assert pred["is_anomaly"].tolist() == want["is_anomaly"].tolist()
    assert out.with_suffix(".html").exists()


def test_predictions_keep_bad_rows_and_empty_fields_in_both_formats(
        frame: pd.DataFrame, tmp_path: pathlib.Path) -> None:
    path = _write(frame.iloc[:600], tmp_path / "in.csv")
    lines = path.read_text().splitlines()
    lines[10] = "dev-00,1735689700,1.0,broken,1,1,1,1,0"
    path.write_text("\n".join(lines) + "\n")
    for name in ("p.csv", "p.parquet"):
        run_file_backtest(_settings(), FileInput(path, chunk_rows=100), tmp_path / name,
                          progress=False)
    csv = pd.read_csv(tmp_path / "p.csv")
    pq = pd.read_parquet(tmp_path / "p.parquet")
    assert pq["line"].tolist() == csv["line"].tolist() == list(range(2, 602))
    bad = pq.set_index("line").loc[11]
    assert np.isnan(bad["score"]) and bad["error"].startswith("non_numeric")
    assert pd.isna(pq.set_index("line").loc[11, "label"])
