"""The ``stream-ae`` command line: thin commands, wiring only.

Each command parses its options, loads ``Settings``, configures logging once and
hands over to the module that does the work (service, backtest, apps, ...).
"""

from __future__ import annotations

import pathlib
from typing import Annotated, Optional

import typer

from stream_ae.config import Settings
from stream_ae.logs import configure_logging

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
config_app = typer.Typer(no_args_is_help=True, help="Inspect the configuration.")
schema_app = typer.Typer(no_args_is_help=True, help="Print JSON Schemas of published messages.")
checkpoint_app = typer.Typer(no_args_is_help=True, help="Inspect checkpoints.")
app.add_typer(config_app, name="config")
app.add_typer(schema_app, name="schema")
app.add_typer(checkpoint_app, name="checkpoint")

ConfigOpt = Annotated[
    Optional[pathlib.Path],  # noqa: UP045 - typer needs Optional
    typer.Option("--config", "-c", help="YAML or TOML config file; env STREAM_AE_* overrides it."),
]


def _settings(config: pathlib.Path | None) -> Settings:
    settings = Settings.load(config)
    configure_logging(settings.log.format, settings.log.level)
    return settings


@config_app.command("show")
def config_show(config: ConfigOpt = None) -> None:
    """Print the effective configuration (file + environment + defaults) as YAML."""
    import yaml

    settings = Settings.load(config)
    data = settings.model_dump(mode="json")
    typer.echo(yaml.safe_dump(data, sort_keys=False))


# --- commands: run (service/), backtest (backtest/), demo / simulate (apps/),
# schema alert (schema.py), checkpoint inspect (checkpoint.py)


@app.command("backtest")
def backtest_cmd(
    source: Annotated[pathlib.Path | None, typer.Argument(
        metavar="INPUT", help="CSV, JSON Lines or Parquet file (omit with --topic).")] = None,
    output: Annotated[pathlib.Path, typer.Option(
        "--output", "-o", help="Predictions CSV; the .png/.html reports go beside it.")]
        = pathlib.Path("predictions.csv"),
    config: ConfigOpt = None,
    timestamp_column: Annotated[str | None, typer.Option(help="Event-time column.")] = None,
    label_column: Annotated[str | None, typer.Option(help="0/1 label column (metrics).")] = None,
    key_column: Annotated[str | None, typer.Option(help="Sensor key column.")] = None,
    features: Annotated[str | None, typer.Option(help="Comma-separated feature columns.")] = None,
    warmup_rows: Annotated[int | None, typer.Option(help="Overrides engine.training.warmup.")]
        = None,
    sep: Annotated[str | None, typer.Option(help="CSV separator (default: detected).")] = None,
    topic: Annotated[str | None, typer.Option(help="Replay this historical topic instead.")]
        = None,
    from_: Annotated[str | None, typer.Option("--from", help="beginning, an offset or a time.")]
        = None,
    to: Annotated[str | None, typer.Option(help="end (of each partition) or a time.")] = None,
    from_checkpoint: Annotated[pathlib.Path | None, typer.Option(
        help="Start from a checkpoint file or checkpoint directory.")] = None,
    alerts_topic: Annotated[str | None, typer.Option(
        help="Publish replay alerts here (never the live alerts topic).")] = None,
    alerts_file: Annotated[pathlib.Path | None, typer.Option(
        help="Replay alerts as JSON lines (default: <output>.alerts.jsonl).")] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
) -> None:
    """Score a file or a historical topic with the service's engine; metrics and reports."""
    from stream_ae import backtest as bt
    from stream_ae.backtest.console import print_summary
    from stream_ae.sources.files import Columns
    from stream_ae.sources.replay import parse_end, parse_start

    names = tuple(f.strip() for f in (features or "").split(",") if f.strip())
    settings = bt.settings_with(_settings(config), names, warmup_rows)
    if topic is not None:
        inp = bt.TopicInput(topic, parse_start(from_), parse_end(to), from_checkpoint,
                            alerts_file, alerts_topic)
        summary = bt.run_topic_backtest(settings, inp, output, not no_progress)
    elif source is not None:
        cols = Columns(timestamp_column, label_column, key_column, names)
        summary = bt.run_file_backtest(settings, bt.FileInput(source, cols, sep=sep), output,
                                       not no_progress)
    else:
        raise typer.BadParameter("give an INPUT file or --topic")
    print_summary(summary)


@app.command("simulate")
def simulate_cmd(
    output: Annotated[pathlib.Path | None, typer.Option(
        help="Write a CSV/JSONL/Parquet file instead of producing.")] = None,
    bootstrap: Annotated[str | None, typer.Option(
        help="Broker to produce to (default: kafka.bootstrap_servers).")] = None,
    topic: Annotated[str | None, typer.Option(help="Topic (default: first input topic).")] = None,
    config: ConfigOpt = None,
    devices: int = 4,
    steps: Annotated[int | None, typer.Option(help="Readings per device (default: endless "
                                            "when producing, 2500 for files).")] = None,
    rate: Annotated[float, typer.Option(help="Records per second when producing.")] = 1000.0,
    duration: Annotated[float | None, typer.Option(help="Seconds to produce.")] = None,
    interval: Annotated[float, typer.Option(help="Event seconds between readings.")] = 1.0,
    day: Annotated[float, typer.Option(help="Period of the daily cycle, seconds.")] = 86_400.0,
    anomalies_after: Annotated[float, typer.Option(help="Event seconds without anomalies.")]
        = 600.0,
    drift_at: Annotated[float | None, typer.Option(help="Event seconds to the drift.")] = None,
    seed: int = 0,
) -> None:
    """Simulate correlated sensors with labelled anomalies and a drift: to a file or a topic."""
    from stream_ae.apps import simulate as sim

    cfg = sim.SimulationConfig(devices=devices, interval_s=interval, day_s=day, seed=seed,
                               anomalies_after=anomalies_after, drift_at=drift_at)
    if output is not None:
        rows = sim.write_file(cfg, steps or 2500, output)
        typer.echo(f"wrote {rows} records to {output}")
        return
    settings = _settings(config)
    stats = sim.produce_to(settings.kafka, bootstrap, topic or settings.kafka.input_topics[0],
                           cfg, rate, steps, duration)
    typer.echo(f"produced {stats.records} records ({stats.anomalies} labelled anomalies)")


@app.command("demo")
def demo_cmd(
    duration: Annotated[float, typer.Option(help="Seconds the simulator runs.")] = 60.0,
    rate: Annotated[float, typer.Option(help="Simulated records per second.")] = 1000.0,
    devices: Annotated[int, typer.Option(help="Simulated devices.")] = 6,
    workdir: Annotated[pathlib.Path, typer.Option(help="Config, logs, checkpoints, report.")]
        = pathlib.Path("out/demo"),
    live: Annotated[bool | None, typer.Option(
        "--live/--no-live", help="Live view (default: when stdout is a terminal).")] = None,
    seed: int = 0,
) -> None:
    """Embedded broker + simulator + detector + live alert view; a summary at the end."""
    import sys

    from rich.console import Console

    from stream_ae.apps import demo

    live = sys.stdout.isatty() if live is None else live
    # log lines would tear through the Live view: only warnings while it is shown
    configure_logging("auto", "warning" if live else "info")
    opts = demo.DemoOptions(duration=duration, rate=rate, devices=devices, workdir=workdir,
                            live=live, seed=seed)
    summary = demo.run_demo(opts)
    Console().print(demo.summary_table(summary))


@app.command("run")
def run_cmd(
    config: ConfigOpt = None,
    decisions_topic: Annotated[
        Optional[str],  # noqa: UP045 - typer needs Optional
        typer.Option(envvar="STREAM_AE_DECISIONS_TOPIC",
                     help="Also publish one decision record per partition and batch here."),
    ] = None,
) -> None:
    """Run the detection service: consume, score, publish alerts; Ctrl-C/SIGTERM stops it."""
    import functools

    from stream_ae.errors import GaveUpError
    from stream_ae.service.main import kafka_loop, run_service

    try:
        run_service(_settings(config), build=functools.partial(kafka_loop,
                                                               decisions_topic=decisions_topic))
    except GaveUpError as exc:
        typer.echo(f"stream-ae run gave up: {exc}", err=True)
        raise typer.Exit(1) from exc


@schema_app.command("alert")
def schema_alert() -> None:
    """Print the JSON Schema of alert messages."""
    import json

    from stream_ae.schema import alert_json_schema

    typer.echo(json.dumps(alert_json_schema(), indent=2))


@checkpoint_app.command("inspect")
def checkpoint_inspect(
    path: Annotated[Optional[pathlib.Path], typer.Argument(  # noqa: UP045 - typer
        help="A checkpoint file or directory; omit to read the store --config selects.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Summarise checkpoints (position, size, validity, feature names) as JSON lines; with
    --config, each one's stored engine settings beside the configured ones (config_diff,
    learned_state_mismatch, on_restart)."""
    import json

    from stream_ae.checkpoint.base import inspect_rows
    from stream_ae.errors import StreamAEError

    try:
        rows = inspect_rows(_settings(config) if config else None, path)
    except StreamAEError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    for row in rows:
        typer.echo(json.dumps(row))


def main() -> None:
    import os

    # one torch thread: faster for this small model and leaves a core to librdkafka
    # (PERFORMANCE_NOTES); set before any command imports torch
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    app()


if __name__ == "__main__":
    main()
