"""ops/grafana/yibao-gateway.json: well-formed, and every query is PromQL over the gateway's metrics."""

from __future__ import annotations

import json
import pathlib
import re

import pytest

from ops_prometheus_tools import DASHBOARD_FILE, dashboard_queries, grafana_to_promql, require_binary, run_tool

# SPEC section 12, plus the project's shed-load counter and readiness gauge, plus Prometheus's `up`.
COUNTERS = {
    "yb_requests_total", "yb_rejections_total", "yb_settlements_total",
    "yb_settlement_amount_fen_total", "yb_limit_bound_total", "yb_idempotent_replays_total",
    "yb_warnings_total", "yb_shed_requests_total", "yb_limit_bound_by_kind_total",
}
GAUGES = {"yb_connections_open", "yb_sessions_active", "yb_build_info", "yb_ready", "up"}
HISTOGRAMS = {"yb_request_duration_seconds", "yb_journal_fsync_duration_seconds", "yb_journal_batch_records"}
ALLOWED_METRICS = COUNTERS | GAUGES | {h + s for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")}

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
                "unless", "offset", "inf", "nan"}
STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"')
BRACED = re.compile(r"\{[^{}]*\}|\[[^\[\]]*\]")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
IDENTIFIER = re.compile(r"(?<![A-Za-z0-9_:.])[A-Za-z_:][A-Za-z0-9_:]*(?=\s*(\()?)")
REQUIRED_PANEL_METRICS = {
    "Throughput by infno": "yb_requests_total",
    "Latency percentiles by infno": "yb_request_duration_seconds_bucket",
    "Rejections by err_code": "yb_rejections_total",
    "Fund vs cash": "yb_settlement_amount_fen_total",
    "Self-pay ratio by kind": "yb_settlement_amount_fen_total",
    "Average bill by kind": "yb_settlements_total",
    "Limit-bound rate by limit": "yb_limit_bound_total",
    "Warnings by code": "yb_warnings_total",
    "Journal fsync latency": "yb_journal_fsync_duration_seconds_bucket",
    "Journal batch size": "yb_journal_batch_records_count",
    "Connections and sessions": "yb_sessions_active",
    # The supervision row (SPEC 14): only what Prometheus carries without per-institution labels.
    "Visits per day by kind and grade": "yb_settlements_total",
    "Average bill per visit by kind (yuan, 24 h)": "yb_settlement_amount_fen_total",
    "Own-pay ratio by kind (SPEC 14 self-pay)": "yb_settlement_amount_fen_total",
    "Limit-bound share by kind and grade": "yb_limit_bound_by_kind_total",
}


def metric_names(expr: str) -> set[str]:
    """Return the metric names a PromQL expression selects (functions and keywords excluded)."""
    text = STRING_LITERAL.sub('""', expr)
    text = GROUPING.sub(" ", text)
    previous = None
    while previous != text:  # label matchers and ranges may nest inside each other's text
        previous, text = text, BRACED.sub(" ", text)
    names = set()
    for match in IDENTIFIER.finditer(text):
        is_call = match.group(1) is not None
        word = match.group(0)
        if not is_call and word.lower() not in PROMQL_WORDS:
            names.add(word)
    return names


@pytest.fixture(name="dashboard", scope="module")
def fixture_dashboard() -> dict:
    return json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))


def panels_of(dashboard: dict) -> list[dict]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def test_metric_name_extraction() -> None:
    expr = ('histogram_quantile(0.99, sum by (infno, le) (rate(yb_request_duration_seconds_bucket'
            '{job=~"$job", infno="2102"}[$__rate_interval]))) / ignoring (limit) group_left '
            'sum(up{job="x"}) and on (instance) bogus_metric offset 5m')
    assert metric_names(expr) == {"yb_request_duration_seconds_bucket", "up", "bogus_metric"}


def test_dashboard_shape(dashboard: dict) -> None:
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"] and dashboard["title"]
    variables = {var["name"]: var for var in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels_of(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and panel["description"], panel["title"]
        assert {target["refId"] for target in panel["targets"]} == {
            chr(ord("A") + index) for index in range(len(panel["targets"]))}


def test_panels_do_not_overlap(dashboard: dict) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for row in range(grid["y"], grid["y"] + grid["h"]):
            for column in range(grid["x"], grid["x"] + grid["w"]):
                assert (row, column) not in cells, f"{panel['title']} overlaps {cells[(row, column)]}"
                cells[(row, column)] = panel["title"]


def test_required_panels_query_their_metrics(dashboard: dict) -> None:
    by_title = {panel["title"]: panel for panel in panels_of(dashboard)}
    for title, metric in REQUIRED_PANEL_METRICS.items():
        assert title in by_title, f"missing panel {title!r}"
        used = set().union(*(metric_names(t["expr"]) for t in by_title[title]["targets"]))
        assert metric in used, f"{title!r} does not query {metric}"
    latency = [t["expr"] for t in by_title["Latency percentiles by infno"]["targets"]]
    assert [expr.split(",")[0] for expr in latency] == [
        "histogram_quantile(0.5", "histogram_quantile(0.9", "histogram_quantile(0.99"]


def test_every_query_uses_only_known_metrics(dashboard: dict) -> None:
    queries = dashboard_queries(dashboard) + [
        (f"variable {var['name']}", re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", var["definition"]))
        for var in dashboard["templating"]["list"] if var["type"] == "query"
    ]
    for where, expr in queries:
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        assert names <= ALLOWED_METRICS, f"{where}: unknown metrics {names - ALLOWED_METRICS}"


def test_allowed_metrics_are_exported_by_the_gateway() -> None:
    metrics = pytest.importorskip("gateway.metrics", reason="gateway/metrics.py not importable yet")
    exported = {sample.name for family in metrics.GatewayMetrics().registry.collect()
                for sample in family.samples}
    missing = sorted(name for name in ALLOWED_METRICS - {"up"} if name not in exported)
    assert not missing, f"the dashboard expects metrics the gateway does not export: {missing}"


@pytest.mark.prometheus
def test_promtool_parses_every_query(dashboard: dict, tmp_path: pathlib.Path) -> None:
    """Each query becomes a recording rule; `promtool check rules` parses them with Prometheus's own parser."""
    promtool = require_binary("promtool")
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for index, (_, expr) in enumerate(dashboard_queries(dashboard)):
        lines += [f"      - record: dashboard:query_{index}", f"        expr: {json.dumps(grafana_to_promql(expr))}"]
    rules_file = tmp_path / "dashboard_rules.yml"
    rules_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run_tool([promtool, "check", "rules", str(rules_file)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(dashboard_queries(dashboard))} rules found" in result.stdout


@pytest.mark.prometheus
def test_promtool_check_rejects_a_broken_query(tmp_path: pathlib.Path) -> None:
    """The parse check above can fail: a malformed query is refused."""
    promtool = require_binary("promtool")
    rules_file = tmp_path / "broken.yml"
    broken = grafana_to_promql('sum by (infno) (rate(yb_requests_total{job=~"$job"}[$__rate_interval])')
    rules_file.write_text(
        f"groups:\n  - name: d\n    rules:\n      - record: d:q\n        expr: {json.dumps(broken)}\n",
        encoding="utf-8")
    assert run_tool([promtool, "check", "rules", str(rules_file)]).returncode != 0
