"""CLI habits: the root help, --set, config init, exit codes, no torch for help and schema."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from stream_ae import cli
from stream_ae.config import KafkaConfig, Settings
from stream_ae.errors import BrokerUnreachable, ConfigError
from stream_ae.sources.kafka import probe_broker

SAMPLE = pathlib.Path(cli.__file__).parent / "data" / "sample_sensors.csv"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("STREAM_AE_"):
            monkeypatch.delenv(name)
    # structlog caches loggers bound to the stream CliRunner closes afterwards
    monkeypatch.setattr("stream_ae.cli.configure_logging", lambda *a, **k: None)


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli.app, list(args), env=env)


def exit_of(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        cli.main(args)
    return int(info.value.code or 0), capsys.readouterr().err


def test_root_help_says_what_it_is_with_an_example_per_command() -> None:
    out = invoke("--help").output
    assert "Streaming anomaly detection for Kafka sensor pipelines" in out
    assert "thin commands" not in out  # not the developer docstring
    group = typer.main.get_group(cli.app)
    for name, cmd in group.commands.items():
        subs = getattr(cmd, "commands", {name: cmd})
        for sub in subs:
            line = f"stream-ae {name}" if sub == name else f"stream-ae {name} {sub}"
            assert line in out, line
    assert "3 bad config, 4 bad input file" in " ".join(out.split())


@pytest.mark.parametrize("args", [["--help"], ["schema", "alert"], ["config", "init", "-"]])
def test_help_schema_and_config_init_do_not_import_torch(
    args: list[str], tmp_path: pathlib.Path
) -> None:
    args = [str(tmp_path / "c.yaml") if a == "-" else a for a in args]
    code = ("import sys\nfrom stream_ae.cli import main\n"
            f"try:\n    main({args!r})\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=pathlib.Path(cli.__file__).parents[1], check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_set_wins_over_file_and_environment(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("engine:\n  threshold: {q: 0.9}\n  features: {lags: 3}\n")
    res = invoke("config", "show", "-c", str(path), "--set", "engine.threshold.q=0.999",
                 "--set", "kafka.input_topics=[a, b]",
                 env={"STREAM_AE_ENGINE__THRESHOLD__Q": "0.95"})
    assert res.exit_code == 0, res.output
    assert "q: 0.999" in res.output and "lags: 3" in res.output
    assert "input_topics:\n  - a\n  - b" in res.output


def test_set_errors_read_like_config_file_errors(tmp_path: pathlib.Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("engine:\n  features:\n    lagz: 8\n    diffs: maybe\n")
    code_file, err_file = exit_of(["config", "show", "-c", str(path)], capsys)
    code_set, err_set = exit_of(["config", "show", "--set", "engine.features.lagz=8",
                                 "--set", "engine.features.diffs=maybe"], capsys)
    assert (code_file, code_set) == (cli.EXIT_CONFIG, cli.EXIT_CONFIG)
    assert err_set == err_file
    assert err_set.startswith("stream-ae: bad config: 2 validation errors for Settings")
    code, err = exit_of(["config", "show", "--set", "engine.features.lags"], capsys)
    assert (code, err.strip()) == (
        3, "stream-ae: bad config: --set expects dotted.key=value, got 'engine.features.lags'")


def test_backtest_run_and_demo_take_set(monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr("stream_ae.backtest.run_file_backtest",
                        lambda settings, *a: seen.setdefault("backtest", settings))
    monkeypatch.setattr("stream_ae.backtest.console.print_summary", lambda summary: None)
    monkeypatch.setattr("stream_ae.sources.kafka.probe_broker", lambda kafka: None)
    monkeypatch.setattr("stream_ae.service.main.run_service",
                        lambda settings, build: seen.setdefault("run", settings))
    monkeypatch.setattr("stream_ae.apps.demo.run_demo", lambda opts: seen.setdefault("demo", opts))
    monkeypatch.setattr("stream_ae.apps.demo.summary_table", lambda summary: "")
    r1 = invoke("backtest", str(SAMPLE), "--set", "engine.features.lags=8", "--warmup-rows",
                "300")
    r2 = invoke("run", "--set", "kafka.group_id=plant-7", "--set", "engine.drift.detector=none")
    r3 = invoke("demo", "--no-live", "--set", "engine.threshold.q=0.995")
    assert [r.exit_code for r in (r1, r2, r3)] == [0, 0, 0], [r1.output, r2.output, r3.output]
    bt = seen["backtest"].engine
    assert (bt.features.lags, bt.training.warmup) == (8, 300)
    assert (seen["run"].kafka.group_id, seen["run"].engine.drift.detector) == ("plant-7", "none")
    assert seen["demo"].overrides == {"engine": {"threshold": {"q": 0.995}}}
    code, err = exit_of(["demo", "--set", "engine.threshold.q=2"], capsys)
    assert (code, "engine.threshold.q\n  Input should be less than 1" in err) == (3, True)


def test_config_init_writes_a_commented_config_that_loads_back_to_the_defaults(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "stream-ae.yaml"
    res = invoke("config", "init", str(path))
    assert res.exit_code == 0, res.output
    text = path.read_text()
    assert text.startswith("# stream-ae configuration")
    assert "    # Records at the start that are never flagged" in text
    assert Settings.load(path) == Settings()
    path.write_text("kept")
    code, err = exit_of(["config", "init", str(path)], capsys)
    assert (code, path.read_text()) == (cli.EXIT_CONFIG, "kept")
    assert "exists; use --force" in err
    assert invoke("config", "init", str(path), "--force").exit_code == 0
    assert Settings.load(path) == Settings()


def test_exit_codes_name_their_cause(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    code, err = exit_of(["backtest", str(tmp_path / "nope.csv"), "--no-progress"], capsys)
    assert code == cli.EXIT_INPUT == 4
    assert err.startswith(f"stream-ae: bad input file: cannot read {tmp_path / 'nope.csv'}")
    (tmp_path / "x.xyz").write_text("a,b\n1,2\n")
    code, err = exit_of(["backtest", str(tmp_path / "x.xyz")], capsys)
    assert (code, "cannot tell the format" in err) == (4, True)

    def unreachable(kafka: KafkaConfig) -> None:
        raise BrokerUnreachable(f"no answer from {kafka.bootstrap_servers} within 10 s")

    monkeypatch.setattr("stream_ae.sources.kafka.probe_broker", unreachable)
    code, err = exit_of(["run", "--set", "kafka.bootstrap_servers=nowhere:9092"], capsys)
    assert (code, err.strip()) == (
        5, "stream-ae: broker unreachable: no answer from nowhere:9092 within 10 s")
    code, err = exit_of(["simulate", "--bootstrap", "elsewhere:9092", "--steps", "5"], capsys)
    assert (code, "no answer from elsewhere:9092" in err) == (5, True)
    assert cli.exit_code(ConfigError("x")) == (3, "bad config")


def test_probe_reports_a_closed_port_as_unreachable() -> None:
    with pytest.raises(BrokerUnreachable, match=r"no answer from 127\.0\.0\.1:1 within 1 s"):
        probe_broker(KafkaConfig(bootstrap_servers="127.0.0.1:1"), timeout=1.0)
