"""Maker-checker: propose, approve by another policy admin, reject/withdraw, 409s, expiry, restart."""

from __future__ import annotations

from typing import Any

import msgpack

from admin_world import P1, P2, T0_MS, AdminWorld, aw, card, line  # noqa: F401
from gateway.core.governance import PROPOSAL_TTL_MS

GRADE_A = {"kind": "institution.grade", "institution": P2, "grade": "A"}


async def _propose(aw: AdminWorld, change: dict[str, Any], who: str = "policy") -> dict[str, Any]:
    status, proposal = await aw.call("POST", "/admin/v1/changes", who, change)
    assert status == 201, proposal
    return proposal


async def test_propose_then_approve_by_another_policy_admin(aw: AdminWorld) -> None:
    proposal = await _propose(aw, {**GRADE_A, "reason": "audit passed"})
    assert proposal["status"] == "proposed" and proposal["id"].startswith("chg-")
    assert proposal["change"] == GRADE_A and proposal["proposer"] == "paula" and proposal["reason"] == "audit passed"
    assert proposal["expires_ms"] == T0_MS + PROPOSAL_TTL_MS
    assert aw.core.state.overlay.institutions[P2].grade == "C"   # nothing applied yet
    status, answer = await aw.call("POST", f"/admin/v1/changes/{proposal['id']}/approve", "policy")
    assert status == 403 and "proposer" in answer["error"]
    status, answer = await aw.call("POST", f"/admin/v1/changes/{proposal['id']}/approve", "policy2")
    assert status == 200, answer
    assert (answer["status"], answer["decided_by"], answer["before"], answer["after"]) == (
        "applied", "peter", {"grade": "C"}, {"grade": "A"})
    assert aw.core.state.overlay.institutions[P2].grade == "A"
    status, answer = await aw.call("POST", f"/admin/v1/changes/{proposal['id']}/approve", "policy2")
    assert status == 409
    assert (await aw.call("POST", f"/admin/v1/changes/{proposal['id']}/reject", "policy2"))[0] == 409


async def test_reject_and_withdraw(aw: AdminWorld) -> None:
    first = await _propose(aw, GRADE_A)
    status, answer = await aw.call("POST", f"/admin/v1/changes/{first['id']}/reject", "policy2", {"reason": "no"})
    assert (status, answer["status"], answer["decision_reason"]) == (200, "rejected", "no")
    assert (await aw.call("POST", f"/admin/v1/changes/{first['id']}/approve", "policy2"))[0] == 409
    second = await _propose(aw, {"kind": "institution.monthly_cap", "institution": P1, "monthly_cap_fen": 5})
    status, answer = await aw.call("POST", f"/admin/v1/changes/{second['id']}/reject", "policy")
    assert (status, answer["decided_by"]) == (200, "paula")   # the proposer withdrew it
    assert aw.core.state.overlay.institutions[P1].monthly_cap_fen == 1_000_000
    assert (await aw.call("POST", "/admin/v1/changes/chg-999/approve", "policy2"))[0] == 404
    assert (await aw.call("POST", "/admin/v1/changes/chg-999/reject", "policy2"))[0] == 404
    assert (await aw.call("POST", f"/admin/v1/changes/{second['id']}/approve", "policy2", {"x": 1}))[0] == 400


async def test_proposals_expire_after_72_hours_of_gateway_time(aw: AdminWorld) -> None:
    proposal = await _propose(aw, GRADE_A)
    aw.now_ms = T0_MS + PROPOSAL_TTL_MS - 1
    _, shown = await aw.call("GET", f"/admin/v1/changes/{proposal['id']}", "viewer")
    assert shown["status"] == "proposed"
    aw.now_ms = T0_MS + PROPOSAL_TTL_MS
    _, shown = await aw.call("GET", f"/admin/v1/changes/{proposal['id']}", "viewer")
    assert shown["status"] == "expired"
    status, answer = await aw.call("POST", f"/admin/v1/changes/{proposal['id']}/approve", "policy2")
    assert status == 409 and "expired" in answer["error"]
    assert (await aw.call("POST", f"/admin/v1/changes/{proposal['id']}/reject", "policy2"))[0] == 409
    assert aw.core.state.overlay.institutions[P2].grade == "C"
    _, listed = await aw.call("GET", "/admin/v1/changes?status=expired", "viewer")
    assert [c["id"] for c in listed["changes"]] == [proposal["id"]]


async def test_a_change_that_no_longer_applies_is_409(aw: AdminWorld) -> None:
    key = "A" * 43 + "="
    first = await _propose(aw, {"kind": "terminal.enrol", "dev_no": "T9", "institution": P1, "public_key": key})
    second = await _propose(aw, {"kind": "terminal.enrol", "dev_no": "T9", "institution": P2, "public_key": key},
                            "policy2")
    assert (await aw.call("POST", f"/admin/v1/changes/{first['id']}/approve", "policy2"))[0] == 200
    status, answer = await aw.call("POST", f"/admin/v1/changes/{second['id']}/approve", "policy")
    assert (status, answer["field"]) == (409, "dev_no")
    _, shown = await aw.call("GET", f"/admin/v1/changes/{second['id']}", "viewer")
    assert shown["status"] == "proposed"


async def test_list_and_show(aw: AdminWorld) -> None:
    one = await _propose(aw, GRADE_A)
    two = await _propose(aw, {"kind": "policy.coverage", "insutype": "390", "coverage_permille": 600})
    await aw.call("POST", f"/admin/v1/changes/{two['id']}/approve", "policy2")
    _, listed = await aw.call("GET", "/admin/v1/changes", "viewer")
    assert [(c["id"], c["status"]) for c in listed["changes"]] == [(one["id"], "proposed"), (two["id"], "applied")]
    _, pending = await aw.call("GET", "/admin/v1/changes?status=proposed", "viewer")
    assert [c["id"] for c in pending["changes"]] == [one["id"]]
    assert (await aw.call("GET", "/admin/v1/changes/chg-0", "viewer"))[0] == 404
    assert aw.core.state.overlay.policy.coverage("390") == 600


async def test_grade_change_mid_day_changes_the_allowance_on_the_next_settlement(aw: AdminWorld) -> None:
    who = card("PSN5")
    env = await aw.settle([line("1", 8000)], who, dev_no="T2")
    first = env.output["setlinfo"]
    assert (first["otc_pay"], first["crt_payb_lmt_amt"], first["bound_by"]) == (6000, 6000, ["person_day"])
    proposal = await _propose(aw, GRADE_A)
    await aw.call("POST", f"/admin/v1/changes/{proposal['id']}/approve", "policy2")
    aw.now_ms += 60_000
    env = await aw.settle([line("1", 8000)], who, dev_no="T2")
    second = env.output["setlinfo"]
    # Grade A: 12 000 a day, 6 000 already used today.
    assert (second["otc_pay"], second["crt_payb_lmt_amt"]) == (6000, 6000)
    allowance = await _propose(aw, {"kind": "policy.otc_allowance", "grade": "A", "otc_allowance_fen": 15000})
    await aw.call("POST", f"/admin/v1/changes/{allowance['id']}/approve", "policy2")
    env = await aw.settle([line("1", 8000)], who, dev_no="T2")
    assert env.output["setlinfo"]["otc_pay"] == 3000


async def test_cap_change_binds_the_next_settlement(aw: AdminWorld) -> None:
    proposal = await _propose(aw, {"kind": "institution.monthly_cap", "institution": P1, "monthly_cap_fen": 500})
    await aw.call("POST", f"/admin/v1/changes/{proposal['id']}/approve", "policy2")
    env = await aw.settle([line("1", 3000)], card("PSN6"))
    assert env.output["setlinfo"]["fund_pay_sumamt"] == 500
    assert env.output["setlinfo"]["bound_by"] == ["institution_month"]


async def test_enrolments_and_filings_take_effect(aw: AdminWorld) -> None:
    operator = await _propose(aw, {"kind": "operator.enrol", "code": "OP9", "institution": P1})
    filing = await _propose(aw, {"kind": "filing.add", "psn_no": "Y1", "admdvs": "510182",
                                 "valid_from": "2024-03-01", "valid_to": "2024-12-31"})
    for proposal in (operator, filing):
        assert (await aw.call("POST", f"/admin/v1/changes/{proposal['id']}/approve", "policy2"))[0] == 200
    assert (await aw.call("GET", "/admin/v1/operators/OP9", "viewer"))[1]["status"] == "active"
    env = await aw.settle([line("1", 100)], card("Y1", admdvs="440100"))
    assert env.err_code == ""


async def test_proposals_and_audit_survive_restart_and_replay_equals_live(aw: AdminWorld) -> None:
    pending = await _propose(aw, GRADE_A)
    applied = await _propose(aw, {"kind": "institution.monthly_cap", "institution": P1, "monthly_cap_fen": 7})
    await aw.call("POST", f"/admin/v1/changes/{applied['id']}/approve", "policy2")
    rejected = await _propose(aw, {"kind": "policy.coverage", "insutype": "310", "coverage_permille": 1})
    await aw.call("POST", f"/admin/v1/changes/{rejected['id']}/reject", "policy", {"reason": "typo"})
    await aw.call("POST", f"/admin/v1/institutions/{P2}/suspend", "operator", {"reason": "x"})
    live = msgpack.packb(aw.core.snapshot())
    await aw.restart()
    assert msgpack.packb(aw.core.snapshot()) == live
    _, listed = await aw.call("GET", "/admin/v1/changes", "viewer")
    assert [c["status"] for c in listed["changes"]] == ["proposed", "applied", "rejected"]
    assert (await aw.call("POST", f"/admin/v1/changes/{pending['id']}/approve", "policy"))[0] == 403
    assert (await aw.call("POST", f"/admin/v1/changes/{pending['id']}/approve", "policy2"))[0] == 200
    _, audit = await aw.call("GET", "/admin/v1/audit", "viewer")
    assert [e["action"] for e in audit["entries"]] == [
        "change.propose", "change.propose", "change.approve", "change.propose", "change.reject",
        "institution.suspend", "change.approve"]
    approve = audit["entries"][2]
    assert (approve["actor"], approve["change_id"], approve["before"], approve["after"]) == (
        "peter", applied["id"], {"monthly_cap_fen": 1_000_000}, {"monthly_cap_fen": 7})


async def test_snapshot_route_covers_governance(aw: AdminWorld) -> None:
    pending = await _propose(aw, GRADE_A)
    status, answer = await aw.call("POST", "/admin/v1/snapshot", "operator", {"reason": "before upgrade"})
    assert status == 200 and answer["snapshot_op"] == aw.core.last_op
    live = msgpack.packb(aw.core.snapshot())
    await aw.restart()
    assert aw.recovery.snapshot is not None and aw.recovery.snapshot_op >= answer["snapshot_op"]
    assert msgpack.packb(aw.core.snapshot()) == live
    _, shown = await aw.call("GET", f"/admin/v1/changes/{pending['id']}", "viewer")
    assert shown["status"] == "proposed"
    _, audit = await aw.call("GET", "/admin/v1/audit", "viewer")
    assert audit["entries"][-1]["action"] == "snapshot" and audit["entries"][-1]["reason"] == "before upgrade"
