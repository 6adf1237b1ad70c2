"""Settings: defaults < file (YAML/TOML) < environment; errors name the field."""

from __future__ import annotations

import os
import pathlib

import pydantic
import pytest
import yaml
from typer.testing import CliRunner

from stream_ae.cli import app
from stream_ae.config import (
    LEARNED_STATE,
    EngineConfig,
    Settings,
    config_diff,
    learned_state_diff,
    read_config_file,
)
from stream_ae.errors import ConfigError, StreamAEError

YAML_TEXT = """\
engine:
  threshold:
    q: 0.99
    window: 500
  model:
    hidden: [16, 8]
kafka:
  bootstrap_servers: kafka:9092
  input_topics: [plant-a, plant-b]
checkpoint:
  directory: /var/lib/stream-ae
"""

TOML_TEXT = """\
[engine.threshold]
q = 0.99
window = 500

[engine.model]
hidden = [16, 8]

[kafka]
bootstrap_servers = "kafka:9092"
input_topics = ["plant-a", "plant-b"]

[checkpoint]
directory = "/var/lib/stream-ae"
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No STREAM_AE_* from the calling shell may leak into these tests."""
    for name in list(os.environ):
        if name.startswith("STREAM_AE_"):
            monkeypatch.delenv(name)


def _write(tmp_path: pathlib.Path, name: str, text: str) -> pathlib.Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults() -> None:
    s = Settings.load()
    assert s.engine.threshold.q == 0.99
    assert s.kafka.input_topics == ("sensors",)
    assert s.metrics.port == 9108
    assert s.checkpoint.directory == pathlib.Path("checkpoints")


def test_env_nesting_sets_one_leaf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_AE_ENGINE__THRESHOLD__Q", "0.9")
    s = Settings.load()
    assert s.engine.threshold.q == 0.9
    assert s.engine.threshold.window == 10_000  # siblings keep their defaults
    assert s.engine.threshold.mode == "quantile"


def test_env_lists_and_mappings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_AE_KAFKA__INPUT_TOPICS", "a, b,c")
    monkeypatch.setenv("STREAM_AE_ENGINE__FEATURES__NAMES", "temp,vib")
    monkeypatch.setenv("STREAM_AE_ENGINE__MODEL__HIDDEN", "[8, 4]")
    monkeypatch.setenv("STREAM_AE_KAFKA__EXTRA", '{"linger.ms": "5"}')
    s = Settings.load()
    assert s.kafka.input_topics == ("a", "b", "c")
    assert s.engine.features.names == ("temp", "vib")
    assert s.engine.model.hidden == (8, 4)
    assert s.kafka.extra == {"linger.ms": "5"}


@pytest.mark.parametrize(("name", "text"), [("c.yaml", YAML_TEXT), ("c.toml", TOML_TEXT)])
def test_file_formats(tmp_path: pathlib.Path, name: str, text: str) -> None:
    s = Settings.load(_write(tmp_path, name, text))
    assert s.engine.threshold.q == 0.99
    assert s.engine.threshold.window == 500
    assert s.engine.model.hidden == (16, 8)
    assert s.kafka.bootstrap_servers == "kafka:9092"
    assert s.kafka.input_topics == ("plant-a", "plant-b")
    assert s.checkpoint.directory == pathlib.Path("/var/lib/stream-ae")
    assert s.engine.threshold.mode == "quantile"


def test_yaml_and_toml_give_equal_settings(tmp_path: pathlib.Path) -> None:
    a = Settings.load(_write(tmp_path, "c.yaml", YAML_TEXT))
    b = Settings.load(_write(tmp_path, "c.toml", TOML_TEXT))
    assert a == b
    assert a != Settings.load()


def test_env_beats_file(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_AE_ENGINE__THRESHOLD__Q", "0.5")
    monkeypatch.setenv("STREAM_AE_KAFKA__BOOTSTRAP_SERVERS", "other:9093")
    s = Settings.load(_write(tmp_path, "c.yaml", YAML_TEXT))
    assert s.engine.threshold.q == 0.5
    assert s.kafka.bootstrap_servers == "other:9093"
    assert s.engine.threshold.window == 500  # untouched by env: the file's value


def test_overrides_beat_file_and_env_beats_overrides(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, "c.yaml", YAML_TEXT)
    s = Settings.load(path, engine={"threshold": {"window": 50}})
    assert (s.engine.threshold.q, s.engine.threshold.window) == (0.99, 50)
    monkeypatch.setenv("STREAM_AE_ENGINE__THRESHOLD__WINDOW", "70")
    assert Settings.load(path, engine={"threshold": {"window": 50}}).engine.threshold.window == 70


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("engine: {threshold: {q: 2}}", "engine.threshold.q"),
        ("kafka: {bogus: 1}", "kafka.bogus"),
        ("kafka: {guarantee: maybe}", "kafka.guarantee"),
        ("metrics: {port: 70000}", "metrics.port"),
        ("engine: {training: {batch_size: 4096, window: 100}}", "engine.training.batch_size"),
        ("nonsense: 1", "nonsense"),
    ],
)
def test_file_validation_error_names_the_field(
    tmp_path: pathlib.Path, text: str, field: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.load(_write(tmp_path, "bad.yaml", text))
    assert field in str(info.value)
    assert isinstance(info.value, StreamAEError)


@pytest.mark.parametrize(
    ("env", "value", "field"),
    [
        ("STREAM_AE_ENGINE__THRESHOLD__Q", "1.5", "engine.threshold.q"),
        ("STREAM_AE_METRICS__PORT", "not-a-port", "metrics.port"),
        ("STREAM_AE_KAFKA__BOGUS", "1", "kafka.bogus"),
        ("STREAM_AE_ENGINE__DRIFT__DETECTOR", "magic", "engine.drift.detector"),
    ],
)
def test_env_validation_error_names_the_field(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, field: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as info:
        Settings.load()
    assert field in str(info.value)


def test_malformed_env_json_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_AE_KAFKA__EXTRA", "{not json")
    with pytest.raises(ConfigError) as info:
        Settings.load()
    assert "kafka" in str(info.value)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.yaml", "engine: [unclosed", "cannot parse"),
        ("bad.toml", "engine = = 1", "cannot parse"),
        ("list.yaml", "- a\n- b\n", "mapping"),
    ],
)
def test_unreadable_files(tmp_path: pathlib.Path, name: str, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.load(_write(tmp_path, name, text))


def test_missing_file_is_a_config_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        Settings.load(tmp_path / "nope.yaml")


def test_file_null_disables_events_topic(tmp_path: pathlib.Path) -> None:
    s = Settings.load(_write(tmp_path, "c.yaml", "kafka: {events_topic: null}"))
    assert s.kafka.events_topic is None
    assert Settings.load().kafka.events_topic == "sensor-events"


def test_empty_file_means_defaults(tmp_path: pathlib.Path) -> None:
    assert read_config_file(_write(tmp_path, "empty.yaml", "")) == {}
    assert Settings.load(_write(tmp_path, "empty.yaml", "")) == Settings.load()


def test_settings_are_frozen() -> None:
    s = Settings.load()
    with pytest.raises(pydantic.ValidationError):
        s.engine.threshold.q = 0.5


def test_config_show_round_trips(tmp_path: pathlib.Path) -> None:
    """`config show` prints YAML that loads back into the very same Settings."""
    path = _write(tmp_path, "c.yaml", YAML_TEXT)
    env = {"STREAM_AE_ENGINE__THRESHOLD__Q": "0.9", "STREAM_AE_KAFKA__EXTRA": '{"acks": "all"}'}
    result = CliRunner().invoke(app, ["config", "show", "--config", str(path)], env=env)
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    assert shown["engine"]["threshold"] == {**shown["engine"]["threshold"], "q": 0.9}
    assert shown["kafka"]["extra"] == {"acks": "all"}
    dumped = _write(tmp_path, "shown.yaml", result.output)
    overrides = {"engine": {"threshold": {"q": 0.9}}, "kafka": {"extra": {"acks": "all"}}}
    expected = Settings.load(path, **overrides)
    assert Settings.load(dumped) == expected


def test_config_show_masks_secrets(tmp_path: pathlib.Path) -> None:
    env = {"STREAM_AE_KAFKA__SASL_PASSWORD": "hunter2", "STREAM_AE_KAFKA__SASL_USERNAME": "svc"}
    result = CliRunner().invoke(app, ["config", "show"], env=env)
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output
    assert yaml.safe_load(result.output)["kafka"]["sasl_username"] == "svc"


def test_config_show_rejects_bad_file(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "bad.yaml", "engine: {threshold: {q: 2}}")
    result = CliRunner().invoke(app, ["config", "show", "--config", str(path)])
    assert result.exit_code != 0
    assert isinstance(result.exception, ConfigError)


def test_learned_state_rules_name_real_fields() -> None:
    leaves = {f"{sec}.{name}" for sec, model in EngineConfig() for name in type(model).model_fields}
    for rule in LEARNED_STATE:
        prefix = rule[:-1] if rule.endswith(".*") else None
        assert (any(leaf.startswith(prefix) for leaf in leaves) if prefix else rule in leaves), rule


@pytest.mark.parametrize(("path", "value", "learned"), [
    ("features.lags", 3, True), ("features.names", ("x", "y"), True),
    ("model.bottleneck", 5, True), ("model.lr", 0.1, True),
    ("training.window", 8192, True), ("training.warmup", 50, True),
    ("threshold.window", 500, True), ("drift.detector", "none", True),
    ("regime.after_records", 60, True), ("decision.calibration_window", 500, True),
    ("decision.false_alarm_rate", 0.01, False), ("decision.mode", "quantile", False),
    ("threshold.q", 0.9, False), ("threshold.multiplier", 2.0, False),
    ("training.steps_per_stride", 3, False), ("training.gate", "none", False),
    ("drift.lr_boost", 3.0, False), ("drift.delta", 0.01, False),
    ("regime.enabled", False, False),
])
def test_learned_state_diff_names_exactly_the_learned_fields(
        path: str, value: object, learned: bool) -> None:
    section, name = path.split(".")
    stored = EngineConfig(features={"names": ("a", "b")})  # type: ignore[arg-type]
    sub = getattr(stored, section).model_copy(update={name: value})
    current = stored.model_copy(update={section: sub})
    before = getattr(getattr(stored, section), name)
    json_value = list(value) if isinstance(value, tuple) else value
    assert config_diff(stored, current) == {path: (
        list(before) if isinstance(before, tuple) else before, json_value)}
    assert learned_state_diff(stored, current) == ((path,) if learned else ())


def test_inferred_feature_names_contradict_nothing() -> None:
    stored = EngineConfig(features={"names": ("a", "b")})  # type: ignore[arg-type]
    assert learned_state_diff(stored, EngineConfig()) == ()


def test_s3_store_needs_a_bucket() -> None:
    with pytest.raises(ConfigError, match=r"checkpoint\.s3\.bucket"):
        Settings.load(None, checkpoint={"store": "s3"})
    s = Settings.load(None, checkpoint={"store": "kafka", "kafka": {"chunk_bytes": 4096}})
    assert (s.checkpoint.store, s.checkpoint.kafka.chunk_bytes) == ("kafka", 4096)
