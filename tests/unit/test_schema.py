"""Wire models: JSON Schemas and the `schema alert` command."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from stream_ae.cli import app
from stream_ae.schema import AlertMessage, alert_json_schema, json_schema


def test_alert_schema_lists_the_contract_fields() -> None:
    schema = alert_json_schema()
    assert set(schema["required"]) >= {"alert_id", "source", "key", "features", "score",
                                       "threshold", "top_features", "context",
                                       "model_version", "detected_at", "grade",
                                       "incident_id"}
    assert schema["properties"]["schema_version"]["const"] == "2"


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError):
        AlertMessage.model_validate({"alert_id": "x", "surprise": 1})


def test_schema_alert_command_prints_the_schema() -> None:
    result = CliRunner().invoke(app, ["schema", "alert"])
    assert result.exit_code == 0
    assert json.loads(result.output) == alert_json_schema()


@pytest.mark.parametrize("name", ["alert", "incident", "event", "decision"])
def test_every_message_has_a_versioned_schema(name: str) -> None:
    assert "schema_version" in json_schema(name)["properties"]
