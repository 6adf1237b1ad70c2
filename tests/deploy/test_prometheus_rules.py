"""The alert rules under deploy/prometheus, checked and unit-tested by Prometheus's promtool."""

from __future__ import annotations

import pathlib
import shutil
import subprocess

import pytest

RULES_DIR = pathlib.Path(__file__).parents[2] / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not found: install Debian's prometheus package "
    "(apt-get install prometheus; .ci/run does it)")


def promtool(*args: str, cwd: pathlib.Path = RULES_DIR) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


def test_rules_are_valid() -> None:
    res = promtool("check", "rules", "alerts.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 4 rules found" in res.stdout


def test_rule_unit_tests_pass() -> None:
    res = promtool("test", "rules", "alerts_test.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_rule_unit_tests_catch_a_changed_threshold(tmp_path: pathlib.Path) -> None:
    shutil.copy(RULES_DIR / "alerts_test.yml", tmp_path)
    rules = (RULES_DIR / "alerts.yml").read_text()
    assert "stream_ae_checkpoint_age_seconds) > 600" in rules
    (tmp_path / "alerts.yml").write_text(rules.replace("seconds) > 600", "seconds) > 6000"))
    res = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert res.returncode == 1
    assert "StreamAECheckpointStale" in res.stdout + res.stderr


def test_every_alert_has_a_unit_test() -> None:
    import yaml

    rules = yaml.safe_load((RULES_DIR / "alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load((RULES_DIR / "alerts_test.yml").read_text())["tests"]
    tested = {t["alertname"] for case in tests for t in case["alert_rule_test"]
              if any(t2["exp_alerts"] for t2 in case["alert_rule_test"]
                     if t2["alertname"] == t["alertname"])}
    assert alerts == tested == {"StreamAEDown", "StreamAEConsumerLagGrowing",
                                "StreamAECheckpointStale", "StreamAEDeadLetters"}
