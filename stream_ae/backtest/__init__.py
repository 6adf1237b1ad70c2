"""Backtests of files and historical topics through the service's processing path.

* :mod:`~stream_ae.backtest.run`: the file and topic replays;
* :mod:`~stream_ae.backtest.predictions`: one prediction row per input row, and its writer;
* :mod:`~stream_ae.backtest.collect`: what is kept for metrics and the report, the summary;
* :mod:`~stream_ae.backtest.console`: the progress bar and the summary table.
"""

from stream_ae.backtest.collect import BacktestSummary
from stream_ae.backtest.run import (
    FileInput,
    TopicInput,
    run_file_backtest,
    run_topic_backtest,
    settings_with,
)

__all__ = [
    "BacktestSummary",
    "FileInput",
    "TopicInput",
    "run_file_backtest",
    "run_topic_backtest",
    "settings_with",
]
