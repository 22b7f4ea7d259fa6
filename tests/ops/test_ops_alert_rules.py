"""ops/prometheus/alerts.yml: valid for promtool, fires when it should and only then."""

from __future__ import annotations

import pathlib
import re
import shutil

import pytest

from ops_prometheus_tools import (
    ALERTS_FILE,
    ALERTS_TEST_FILE,
    SCRAPE_EXAMPLE_FILE,
    prom_api,
    require_binary,
    run_tool,
    running_prometheus,
    wait_for,
)

pytestmark = pytest.mark.prometheus

REQUIRED_ALERTS = {
    "YbGatewayDown", "YbGatewayNotReady", "YbErrorRatioHigh", "YbRejectionRatioHigh",
    "YbSettleLatencyP99High", "YbJournalFsyncSlow", "YbSheddingLoad",
    "YbInstitutionMonthCapsNear", "YbInstitutionMonthCapsReached", "YbInstitutionMonthLimitBinding",
}
SEVERITIES = {"critical", "warning", "info"}
METRIC_NAME = re.compile(r"\b(yb_[a-z0-9_]+|up)\b")


@pytest.fixture(name="promtool")
def fixture_promtool() -> str:
    return require_binary("promtool")


def test_promtool_check_rules_accepts_the_alerts(promtool: str) -> None:
    result = run_tool([promtool, "check", "rules", str(ALERTS_FILE)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_example_scrape_config_is_valid(promtool: str) -> None:
    result = run_tool([promtool, "check", "config", str(SCRAPE_EXAMPLE_FILE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests_pass(promtool: str) -> None:
    result = run_tool([promtool, "test", "rules", str(ALERTS_TEST_FILE)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("original", "broken", "alert"),
    [
        ('expr: up{job="yibao-gateway"} == 0', 'expr: up{job="yibao-gateway"} == 2', "YbGatewayDown"),
        ("            > 0.01\n", "            > 0.5\n", "YbErrorRatioHigh"),
        ("  ) > 0.05\n", "  ) > 5\n", "YbSheddingLoad"),
        ("for: 1m", "for: 0m", "YbGatewayDown"),
    ],
)
def test_rule_unit_tests_catch_a_broken_rule(
    promtool: str, tmp_path: pathlib.Path, original: str, broken: str, alert: str
) -> None:
    """The rule tests are not vacuous: weakening one alert makes them fail, naming it."""
    text = ALERTS_FILE.read_text(encoding="utf-8")
    assert text.count(original) == 1, f"mutation anchor {original!r} must occur exactly once"
    (tmp_path / "alerts.yml").write_text(text.replace(original, broken), encoding="utf-8")
    shutil.copy(ALERTS_TEST_FILE, tmp_path / "alerts.test.yml")
    result = run_tool([promtool, "test", "rules", str(tmp_path / "alerts.test.yml")])
    assert result.returncode != 0
    assert alert in result.stdout + result.stderr


@pytest.fixture(name="loaded_rules", scope="module")
def fixture_loaded_rules(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """The alerting rules as a real Prometheus loaded and evaluated them (via /api/v1/rules)."""
    prometheus_bin = require_binary("prometheus")
    work_dir = tmp_path_factory.mktemp("prom-rules")
    shutil.copy(ALERTS_FILE, work_dir / "alerts.yml")
    config = "global:\n  evaluation_interval: 1s\nrule_files:\n  - alerts.yml\n"
    with running_prometheus(prometheus_bin, work_dir, config) as port:
        return wait_for(lambda: _evaluated_rules(port), 30.0, "every rule group evaluated")


def _evaluated_rules(port: int) -> list[dict] | None:
    data = prom_api(port, "rules", type="alert")
    if data is None or not data["groups"]:
        return None
    rules = [rule for group in data["groups"] for rule in group["rules"]]
    if any(rule.get("lastEvaluation", "").startswith("0001-") for rule in rules):
        return None
    return rules


def test_prometheus_loads_and_evaluates_every_rule_cleanly(loaded_rules: list[dict]) -> None:
    names = {rule["name"] for rule in loaded_rules}
    assert REQUIRED_ALERTS <= names, REQUIRED_ALERTS - names
    unhealthy = [(rule["name"], rule.get("lastError")) for rule in loaded_rules if rule["health"] != "ok"]
    assert not unhealthy


def test_every_alert_has_severity_for_and_runbook_annotations(loaded_rules: list[dict]) -> None:
    for rule in loaded_rules:
        assert rule["labels"].get("severity") in SEVERITIES, rule["name"]
        assert rule["labels"].get("service") == "yibao-gateway", rule["name"]
        assert rule["duration"] >= 60, f"{rule['name']}: `for:` under a minute pages on blips"
        for key in ("summary", "description", "runbook"):
            assert rule["annotations"].get(key), f"{rule['name']} lacks annotation {key}"


def test_no_alert_fires_without_any_gateway_data(loaded_rules: list[dict]) -> None:
    """With no series at all only the absent-target alert may be pending: ratios of 0/0 stay silent."""
    active = {rule["name"] for rule in loaded_rules if rule["alerts"]}
    assert active <= {"YbGatewayTargetMissing"}, active


def test_alerts_use_only_metrics_the_gateway_exports(loaded_rules: list[dict]) -> None:
    metrics = pytest.importorskip("gateway.metrics", reason="gateway/metrics.py not importable yet")
    exported = {
        sample.name
        for family in metrics.GatewayMetrics().registry.collect()
        for sample in family.samples
    }
    used = {name for rule in loaded_rules for name in METRIC_NAME.findall(rule["query"])}
    unknown = sorted(name for name in used if name.startswith("yb_") and name not in exported)
    assert not unknown, f"alerts use metrics the gateway does not export: {unknown}"
    assert {"yb_requests_total", "yb_request_duration_seconds_bucket"} <= used
