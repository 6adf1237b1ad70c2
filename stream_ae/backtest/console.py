"""The terminal side of a backtest: a progress bar with ETA and the summary table.

Both use rich when it is installed (it comes with typer, and with the ``demo`` extra);
without it there is no progress bar and the summary is plain ``name  value`` lines.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from stream_ae.backtest.collect import BacktestSummary
from stream_ae.extras import available

#: ``update(completed, records)``: move the bar to ``completed`` (of its total)
Progress = Callable[[float, int], None]


@contextmanager
def progress_bar(description: str, total: float | None, enabled: bool = True
                 ) -> Iterator[Progress]:
    """A rich progress bar with ETA on stderr; silent when stderr is not a terminal or
    rich is not installed."""
    if not (enabled and available("rich")):
        yield lambda completed, records: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as Bar

    console = Console(stderr=True)
    bar = Bar(
        TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(),
        TextColumn("{task.fields[records]:,} records"), TimeElapsedColumn(),
        TextColumn("ETA"), TimeRemainingColumn(),
        console=console, disable=not console.is_terminal,
    )
    with bar:
        task = bar.add_task(description, total=total, records=0)
        yield lambda completed, records: bar.update(task, completed=completed, records=records)


def summary_rows(summary: BacktestSummary) -> list[tuple[str, str]]:
    """The summary (and metrics, when labels exist) as (name, text) rows; the report and
    plot rows only when they were written.

    >>> import pathlib
    >>> s = BacktestSummary(records=3, scored=2, alerts=1, bad_rows=1, drift_events=0,
    ...                     elapsed_s=2.0, predictions=pathlib.Path("p.csv"))
    >>> summary_rows(s)[:3], summary_rows(s)[-1]
    ([('records', '3'), ('scored', '2'), ('alerts', '1')], ('predictions', 'p.csv'))
    """
    rows: list[tuple[str, Any]] = [
        ("records", summary.records), ("scored", summary.scored), ("alerts", summary.alerts),
        ("bad rows", summary.bad_rows), ("drift events", summary.drift_events),
        ("records/s", round(summary.records_per_s)), ("predictions", summary.predictions),
    ]
    if summary.html is not None:
        rows += [("report", summary.html), ("plot", summary.png)]
    if summary.metrics is not None:
        m = summary.metrics
        rows += [("precision", m.precision), ("recall", m.recall), ("F1", m.f1),
                 ("ROC-AUC", m.roc_auc), ("labelled anomalies", m.positives)]
        rows += [(k.replace("_", " "), v) for k, v in summary.delay.items()]
    return [(name, f"{value:.4f}" if isinstance(value, float) else str(value))
            for name, value in rows]


def summary_table(summary: BacktestSummary) -> Any:
    """The summary rows as a rich table for the terminal."""
    from rich.table import Table

    table = Table(title="backtest", show_header=False)
    for name, text in summary_rows(summary):
        table.add_row(name, text)
    return table


def print_summary(summary: BacktestSummary, out: TextIO | None = None) -> None:
    """Print the summary table (plain lines without rich, or when ``out`` is given) and the
    first bad rows (line and reason)."""
    bad = [f"bad row at line/offset {b.line}: {b.reason} {b.detail}"
           for b in summary.bad_examples]
    if out is None and available("rich"):
        from rich.console import Console

        console = Console()
        console.print(summary_table(summary))
        for line in bad:
            console.print(line)
        return
    import sys

    out = out or sys.stdout
    rows = summary_rows(summary)
    width = max(len(name) for name, _ in rows)
    for line in [f"{name:<{width}}  {text}" for name, text in rows] + bad:
        print(line, file=out)
