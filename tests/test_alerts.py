"""The alert rules (ops/prometheus/alerts.yml) checked by Prometheus' own checker: the file is
valid (`promtool check rules`) and its unit tests pass (`promtool test rules`
ops/prometheus/alerts.test.yml: each alert fires when it should and stays quiet otherwise).
scripts/promtool.sh installs promtool (Debian's `prometheus`; `make test` runs it)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

PROMTOOL = "/usr/bin/promtool"
RULES = Path(__file__).resolve().parent.parent / "ops" / "prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    if not os.access(PROMTOOL, os.X_OK):
        pytest.fail(f"{PROMTOOL} not installed: run scripts/promtool.sh (make test does)")
    return PROMTOOL


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=RULES, capture_output=True, text=True, timeout=60)


def test_alert_rules_are_valid(promtool):
    result = run(promtool, "check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 10 rules found" in result.stdout


def test_each_alert_fires_when_it_should_and_stays_quiet_otherwise(promtool):
    result = run(promtool, "test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_unit_test(promtool):
    rules = (RULES / "alerts.yml").read_text()
    tests = (RULES / "alerts.test.yml").read_text()
    names = [line.split("alert:", 1)[1].strip() for line in rules.splitlines() if line.strip().startswith("- alert:")]
    assert len(names) == 10
    for name in names:
        assert f"alertname: {name}\n" in tests, f"{name} has no unit test"


def test_the_checker_catches_a_broken_rule(promtool, tmp_path):
    """The check is real: a rule with a syntax error fails it."""
    broken = tmp_path / "broken.yml"
    broken.write_text("groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: sum(rate(x[5m])\n")
    result = subprocess.run([promtool, "check", "rules", str(broken)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
