"""docs/configuration.md is generated from the pydantic models and must not go stale."""

from __future__ import annotations

import importlib.util
import pathlib
import types

import pytest

from stream_ae.config import KafkaConfig, Settings, ThresholdConfig

ROOT = pathlib.Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "docs" / "gen_config_reference.py"
REFERENCE = ROOT / "docs" / "configuration.md"


@pytest.fixture(scope="module")
def gen() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config_reference", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _leaf_paths(model: type, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for name, field in model.model_fields.items():  # type: ignore[attr-defined]
        ann = field.annotation
        if isinstance(ann, type) and hasattr(ann, "model_fields"):
            out += _leaf_paths(ann, (*prefix, name))
        else:
            out.append((*prefix, name))
    return out


def test_committed_reference_equals_generator_output(gen: types.ModuleType) -> None:
    expected = gen.render()
    actual = REFERENCE.read_text()
    assert actual == expected, (
        "docs/configuration.md is stale: run .venv/bin/python docs/gen_config_reference.py"
    )


def test_every_leaf_setting_has_a_row(gen: types.ModuleType) -> None:
    text = gen.render()
    paths = _leaf_paths(Settings)
    assert len(paths) > 40
    for path in paths:
        assert f"| `{'.'.join(path)}` | `{gen.env_name(path)}` |" in text


def test_env_names_follow_pydantic_settings_nesting(gen: types.ModuleType) -> None:
    assert gen.env_name(("engine", "threshold", "q")) == "STREAM_AE_ENGINE__THRESHOLD__Q"
    assert gen.env_name(("kafka", "group_id")) == "STREAM_AE_KAFKA__GROUP_ID"


def test_row_shows_type_constraints_and_default(gen: types.ModuleType) -> None:
    q_row = gen.field_row(("engine", "threshold", "q"), ThresholdConfig.model_fields["q"])
    assert q_row == (
        "| `engine.threshold.q` | `STREAM_AE_ENGINE__THRESHOLD__Q` | `float` "
        "| > 0.0, < 1.0 | `0.99` |  |"
    )
    topics = gen.field_row(("kafka", "input_topics"), KafkaConfig.model_fields["input_topics"])
    assert "`list[str]`" in topics and '`["sensors"]`' in topics
    events = gen.field_row(("kafka", "events_topic"), KafkaConfig.model_fields["events_topic"])
    assert "`str \\| null`" in events and "null disables them" in events


def test_check_mode_reports_stale_file(gen: types.ModuleType, tmp_path: pathlib.Path) -> None:
    out = tmp_path / "configuration.md"
    out.write_text("stale\n")
    assert gen.main(["--check", "--output", str(out)]) == 1
    assert gen.main(["--output", str(out)]) == 0
    assert gen.main(["--check", "--output", str(out)]) == 0
    assert out.read_text() == gen.render()
