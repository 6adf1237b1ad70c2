"""The ``stream-ae`` command line: thin commands, wiring only.

Each command parses its options, loads ``Settings``, configures logging once and
hands over to the module that does the work (runner, backtest, demo, ...).
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


# --- commands filled in by their modules' owners -----------------------------------------
# run (runner.py), backtest (backtest.py), demo / simulate (demo.py, simulate.py),
# schema alert (schema.py), checkpoint inspect (checkpoint.py)


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
    from stream_ae.runner import run_service

    run_service(_settings(config), decisions_topic)


@schema_app.command("alert")
def schema_alert() -> None:
    """Print the JSON Schema of alert messages."""
    import json

    from stream_ae.schema import alert_json_schema

    typer.echo(json.dumps(alert_json_schema(), indent=2))


@checkpoint_app.command("inspect")
def checkpoint_inspect(
    path: Annotated[pathlib.Path, typer.Argument(help="A checkpoint file or directory.")],
) -> None:
    """Summarise checkpoints (position, size, validity, feature names) as JSON lines."""
    import json

    from stream_ae.checkpoint import summarise
    from stream_ae.errors import SnapshotError

    try:
        rows = summarise(path)
    except SnapshotError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    for row in rows:
        typer.echo(json.dumps(row))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
