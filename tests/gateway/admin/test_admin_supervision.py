"""SPEC 14 on the admin API: the monthly report, alerts and clearing for any role; payment holds."""

from __future__ import annotations

import pytest

from admin_world import C1, P1, AdminWorld, aw, card, line  # noqa: F401


async def test_any_role_reads_the_three_reports(aw: AdminWorld) -> None:
    env = await aw.settle([line("1", 100000, otc=False, rxno="R")], card("A1"))
    assert env.infcode == 0
    for who in ("viewer", "operator", "policy"):
        status, body = await aw.call("GET", "/admin/v1/reports/monthly?month=202403&by=institution", who)
        assert status == 200 and (body["month"], body["by"]) == ("202403", "institution")
        assert [(r["key"], r["setl_cnt"], r["medfee_fen"]) for r in body["rows"]] == [(P1, 1, 100000)]
    status, body = await aw.call("GET", "/admin/v1/alerts?date=20240315", "viewer")
    assert status == 200
    assert [(a["code"], a["detail"]["medfee_fen"]) for a in body["alerts"]] == [("LARGE_BILL", 100000)]
    status, body = await aw.call("GET", "/admin/v1/clearing?month=202403", "viewer")
    assert status == 200 and body == {"month": "202403", "rows": [
        {"institution": P1, "setl_cnt": 1, "medfee_fen": 100000, "fund_fen": env.output["setlinfo"]["fund_pay_sumamt"],
         "acct_fen": 0, "held": False}]}
    assert (await aw.call("GET", "/admin/v1/alerts?date=20240315", None))[0] == 401


@pytest.mark.parametrize(("path", "field"), [
    ("/admin/v1/reports/monthly?month=202413&by=institution", "month"),
    ("/admin/v1/reports/monthly?month=2024-03&by=institution", "month"),
    ("/admin/v1/reports/monthly?by=institution", "month"),
    ("/admin/v1/reports/monthly?month=202403&by=pharmacy", "by"),
    ("/admin/v1/reports/monthly?month=202403", "by"),
    ("/admin/v1/reports/monthly?month=202403&by=doctor&extra=1", "extra"),
    ("/admin/v1/alerts?date=20240230", "date"),
    ("/admin/v1/alerts?date=2024031", "date"),
    ("/admin/v1/alerts", "date"),
    ("/admin/v1/clearing?month=202400", "month"),
    ("/admin/v1/clearing?month=20240", "month"),
])
async def test_bad_parameters_are_400_naming_the_field(aw: AdminWorld, path: str, field: str) -> None:
    status, body = await aw.call("GET", path, "viewer")
    assert (status, body["field"]) == (400, field)


async def test_hold_and_release_are_journaled_protective_actions(aw: AdminWorld) -> None:
    assert (await aw.call("POST", f"/admin/v1/institutions/{C1}/hold", "viewer", {"reason": "x"}))[0] == 403
    status, answer = await aw.call("POST", f"/admin/v1/institutions/{C1}/hold", "operator", {"reason": "audit"})
    assert status == 200
    assert (answer["action"], answer["before"], answer["after"], answer["reason"]) == (
        "institution.hold", {"held": False}, {"held": True}, "audit")
    assert (await aw.call("POST", "/admin/v1/institutions/X51018200009/hold", "operator", {}))[0] == 404
    assert (await aw.call("POST", f"/admin/v1/institutions/{C1}/hold", "operator", {"why": "x"}))[0] == 400
    # A hold does not stop settlement.
    await aw.call("POST", f"/admin/v1/institutions/{P1}/hold", "operator", {"reason": "audit"})
    assert (await aw.settle([line("1", 100)], card("A1"))).infcode == 0
    await aw.restart()
    _, body = await aw.call("GET", "/admin/v1/clearing?month=202403", "viewer")
    assert [(r["institution"], r["setl_cnt"], r["held"]) for r in body["rows"]] == [(C1, 0, True), (P1, 1, True)]
    _, view = await aw.call("GET", f"/admin/v1/institutions/{C1}", "viewer")
    assert view["held"] is True
    status, answer = await aw.call("POST", f"/admin/v1/institutions/{C1}/release", "policy", {"reason": "paid"})
    assert (status, answer["after"]) == (200, {"held": False})
    _, audit = await aw.call("GET", "/admin/v1/audit", "viewer")
    assert [(e["action"], e["actor"], e["reason"]) for e in audit["entries"][-2:]] == [
        ("institution.hold", "otto", "audit"), ("institution.release", "paula", "paid")]
    _, body = await aw.call("GET", "/admin/v1/clearing?month=202403", "viewer")
    assert [(r["institution"], r["held"]) for r in body["rows"]] == [(P1, True)]


async def test_reports_survive_a_restart(aw: AdminWorld) -> None:
    await aw.settle([line("1", 100)], card("A1"))
    await aw.settle([line("1", 300)], card("A2"))
    before = await aw.call("GET", "/admin/v1/reports/monthly?month=202403&by=operator", "viewer")
    await aw.restart()
    assert await aw.call("GET", "/admin/v1/reports/monthly?month=202403&by=operator", "viewer") == before
    assert before[1]["rows"][0]["psn_cnt"] == 2
