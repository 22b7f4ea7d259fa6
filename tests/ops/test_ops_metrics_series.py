"""SPEC section 12, name by name: every metric SPEC lists, its type, its labels and their values.

The exposition is parsed with prometheus_client's own text parser, as a scraper would read it.
"""

from __future__ import annotations

import pathlib
import sys
import time
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "gateway" / "server"))

from server_region import RegionClient, make_region  # noqa: E402

from gateway.config import load_config  # noqa: E402
from gateway.core.config import TxFacts  # noqa: E402
from gateway.metrics import GatewayMetrics  # noqa: E402
from gateway.server.app import Gateway  # noqa: E402
from protocol import ErrCode  # noqa: E402

# (family name as the parser reports it, type, label names) for every metric SPEC section 12 lists.
SPEC_METRICS = [
    ("yb_requests", "counter", {"infno", "outcome"}),
    ("yb_request_duration_seconds", "histogram", {"infno"}),
    ("yb_rejections", "counter", {"err_code"}),
    ("yb_settlements", "counter", {"kind", "grade", "cert_type"}),
    ("yb_settlement_amount_fen", "counter", {"part", "kind"}),
    ("yb_limit_bound", "counter", {"limit"}),
    ("yb_idempotent_replays", "counter", set()),
    ("yb_journal_fsync_duration_seconds", "histogram", set()),
    ("yb_journal_batch_records", "histogram", set()),
    ("yb_connections_open", "gauge", set()),
    ("yb_sessions_active", "gauge", set()),
    ("yb_warnings", "counter", {"code"}),
    ("yb_build_info", "gauge", None),   # SPEC names no labels; a version label is the convention
]
WARNING_CODES = {"PERSON_DAY_NEAR_LIMIT", "PERSON_DAY_LIMIT_REACHED", "INSTITUTION_MONTH_NEAR_CAP",
                 "INSTITUTION_MONTH_CAP_REACHED", "DOCTOR_SUSPENDED", "RX_REQUIRED",
                 # SPEC 13: the catalogue's cut reasons, the override and the yearly pooling cap.
                 "NOT_IN_CATALOGUE", "RESTRICTED_USE", "TRACE_CODE_MISSING", "CATALOGUE_OVERRIDE",
                 "PERSON_YEAR_CAP_REACHED"}
LIMITS = {"person_day", "institution_month", "person_year", "account_balance"}
PARTS = {"medfee", "fund", "cash", "acct", "fulamt", "preselfpay", "overlmt"}
# Histogram and counter helper labels that are not the metric's own.
_HELPER_LABELS = {"le"}


# A pharmacy card settlement as the core reports it; each test changes what it needs.
_SETTLEMENT = {"infno": "2102", "outcome": "ok", "kind": "pharmacy", "grade": "A", "cert_type": "03",
               "medfee_fen": 3990, "fund_fen": 2800, "cash_fen": 1190, "fulamt_fen": 500, "preselfpay_fen": 99}


def facts(**changes: Any) -> TxFacts:
    """The core's TxFacts of a settlement, with `changes` applied."""
    return TxFacts(**{**_SETTLEMENT, **changes})


def families(metrics: GatewayMetrics) -> dict[str, Any]:
    return parse(metrics.render())


def parse(exposition: bytes) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(exposition.decode())}


def label_values(family: Any, label: str) -> set[str]:
    return {s.labels[label] for s in family.samples if label in s.labels}


def value_of(family: Any, suffix: str = "_total", **labels: str) -> float:
    matches = [s.value for s in family.samples
               if s.name == family.name + suffix and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matches) == 1, (family.name, labels, matches)
    return matches[0]


@pytest.mark.parametrize(("name", "kind", "labels"), SPEC_METRICS)
def test_every_spec_metric_is_exported_with_its_type_and_labels(name: str, kind: str, labels: set[str] | None) -> None:
    found = families(GatewayMetrics())
    assert name in found, f"{name} missing from /metrics"
    family = found[name]
    assert family.type == kind
    if labels is None:
        return
    for sample in family.samples:
        if sample.name.endswith("_created"):
            continue
        assert set(sample.labels) - _HELPER_LABELS == labels, sample


def test_build_info_is_one_series_at_1() -> None:
    family = families(GatewayMetrics())["yb_build_info"]
    assert [s.value for s in family.samples] == [1.0]


def test_limit_and_code_take_only_the_spec_values() -> None:
    metrics = GatewayMetrics()
    found = families(metrics)
    assert label_values(found["yb_limit_bound"], "limit") == LIMITS
    assert label_values(found["yb_warnings"], "code") == WARNING_CODES
    assert label_values(found["yb_settlement_amount_fen"], "part") == PARTS
    assert label_values(found["yb_line_cuts"], "reason") == {"DOCTOR_SUSPENDED", "NOT_IN_CATALOGUE", "RX_REQUIRED",
                                                             "RESTRICTED_USE", "TRACE_CODE_MISSING"}
    assert label_values(found["yb_limit_bound_by_kind"], "limit") == LIMITS
    assert label_values(found["yb_rejections"], "err_code") == {code.wire for code in ErrCode}


def test_a_settlement_moves_every_business_series() -> None:
    metrics = GatewayMetrics()
    metrics.observe_tx(facts(bound_by=("person_day",), warnings=("PERSON_DAY_LIMIT_REACHED",)), 0.003)
    metrics.observe_tx(facts(idempotent_replay=True), 0.001)
    metrics.observe_tx(facts(infno="2207", kind="clinic", grade="", cert_type="01",
                             bound_by=("institution_month",)), 0.002)
    metrics.observe_tx(facts(outcome="rejected", err_code="CARD_BLOCKED"), 0.001)
    found = families(metrics)
    assert value_of(found["yb_requests"], infno="2102", outcome="ok") == 2
    assert value_of(found["yb_requests"], infno="2102", outcome="rejected") == 1
    assert value_of(found["yb_request_duration_seconds"], "_count", infno="2102") == 3
    assert value_of(found["yb_rejections"], err_code="CARD_BLOCKED") == 1
    assert value_of(found["yb_idempotent_replays"]) == 1
    # The replay settles nothing new: one 2102 settlement, one 2207.
    assert value_of(found["yb_settlements"], kind="pharmacy", grade="A", cert_type="03") == 1
    assert value_of(found["yb_settlements"], kind="clinic", grade="none", cert_type="01") == 1
    assert value_of(found["yb_settlement_amount_fen"], part="medfee", kind="pharmacy") == 3990
    assert value_of(found["yb_settlement_amount_fen"], part="fund", kind="pharmacy") == 2800
    assert value_of(found["yb_settlement_amount_fen"], part="cash", kind="pharmacy") == 1190
    assert value_of(found["yb_settlement_amount_fen"], part="fulamt", kind="pharmacy") == 500
    assert value_of(found["yb_settlement_amount_fen"], part="preselfpay", kind="pharmacy") == 99
    assert value_of(found["yb_limit_bound"], limit="person_day") == 1
    assert value_of(found["yb_limit_bound"], limit="institution_month") == 1
    assert value_of(found["yb_limit_bound_by_kind"], limit="person_day", kind="pharmacy", grade="A") == 1
    assert value_of(found["yb_limit_bound_by_kind"], limit="institution_month", kind="clinic", grade="none") == 1
    assert value_of(found["yb_warnings"], code="PERSON_DAY_LIMIT_REACHED") == 1


def test_hostile_values_fold_into_other_and_never_become_labels() -> None:
    metrics = GatewayMetrics()
    metrics.observe_tx(facts(infno="PSN0001", err_code="X" * 40, outcome="rejected",
                             warnings=("CARD 6222",)), 0.001)
    found = families(metrics)
    assert value_of(found["yb_requests"], infno="other", outcome="rejected") == 1
    assert value_of(found["yb_rejections"], err_code="other") == 1
    assert value_of(found["yb_warnings"], code="other") == 1
    text = metrics.render().decode()
    assert "PSN0001" not in text and "CARD 6222" not in text and "X" * 40 not in text


async def test_a_live_gateway_exports_the_spec_series(tmp_path: pathlib.Path, nursery: trio.Nursery) -> None:
    region = make_region(tmp_path)
    gateway = Gateway(load_config(region / "gateway.toml"))
    ports = await nursery.start(gateway.run)
    client = RegionClient(region, ports["data"], ports["admin"])
    term = await client.sign_in()
    frame = client.settle_frame(term, client.new_msgid(term))
    for _ in range(2):   # a settlement and its idempotent replay
        status, answer = await client.post_tx(frame)
        assert status == 200 and (await client.verify(answer)).infcode == 0
    declined = term.request_frame("1101", client.new_msgid(term), {"mdtrt_cert_type": "99"}, int(time.time() * 1000))
    assert (await client.verify((await client.post_tx(declined))[1])).err_code == "CREDENTIAL_NOT_ACCEPTED"
    for port in (client.data_port, client.admin_port):   # both listeners serve /metrics
        status, body = await client.get("/metrics", port)
        found = parse(body)
        assert status == 200 and {name for name, _, _ in SPEC_METRICS} <= set(found)
        assert value_of(found["yb_requests"], infno="2102", outcome="ok") == 2
        assert value_of(found["yb_requests"], infno="9001", outcome="ok") == 1
        assert value_of(found["yb_rejections"], err_code="CREDENTIAL_NOT_ACCEPTED") == 1
        assert value_of(found["yb_idempotent_replays"]) == 1
        assert sum(s.value for s in found["yb_settlements"].samples if s.name == "yb_settlements_total") == 1
        assert value_of(found["yb_sessions_active"], "") == 1
        assert value_of(found["yb_connections_open"], "") >= 1   # this scrape's own connection
        assert value_of(found["yb_journal_fsync_duration_seconds"], "_count") >= 1
        assert value_of(found["yb_journal_batch_records"], "_count") >= 1
        assert label_values(found["yb_limit_bound"], "limit") <= LIMITS
        assert label_values(found["yb_warnings"], "code") <= WARNING_CODES
    gateway.stop()
