"""The terminal side of a backtest: a progress bar with ETA and the summary table (rich)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from stream_ae.backtest.collect import BacktestSummary


@contextmanager
def progress_bar(description: str, total: float | None, enabled: bool = True
                 ) -> Iterator[Progress]:
    """A rich progress bar with ETA on stderr; silent when stderr is not a terminal."""
    console = Console(stderr=True)
    bar = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(),
        TextColumn("{task.fields[records]:,} records"), TimeElapsedColumn(),
        TextColumn("ETA"), TimeRemainingColumn(),
        console=console, disable=not (enabled and console.is_terminal),
    )
    with bar:
        bar.add_task(description, total=total, records=0)
        yield bar


def summary_table(summary: BacktestSummary) -> Table:
    """The summary (and metrics, when labels exist) as a rich table for the terminal."""
    table = Table(title="backtest", show_header=False)
    rows: list[tuple[str, Any]] = [
        ("records", summary.records), ("scored", summary.scored), ("alerts", summary.alerts),
        ("bad rows", summary.bad_rows), ("drift events", summary.drift_events),
        ("records/s", round(summary.records_per_s)), ("predictions", summary.predictions),
        ("report", summary.html), ("plot", summary.png),
    ]
    if summary.metrics is not None:
        m = summary.metrics
        rows += [("precision", m.precision), ("recall", m.recall), ("F1", m.f1),
                 ("ROC-AUC", m.roc_auc), ("labelled anomalies", m.positives)]
        rows += [(k.replace("_", " "), v) for k, v in summary.delay.items()]
    for name, value in rows:
        table.add_row(name, f"{value:.4f}" if isinstance(value, float) else str(value))
    return table


def print_summary(summary: BacktestSummary, console: Console | None = None) -> None:
    """Print the summary table and the first bad rows (line and reason)."""
    console = console or Console()
    console.print(summary_table(summary))
    for b in summary.bad_examples:
        console.print(f"bad row at line/offset {b.line}: {b.reason} {b.detail}")
