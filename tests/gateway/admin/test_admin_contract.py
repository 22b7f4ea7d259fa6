"""SPEC section 11 rule by rule where the other admin tests leave a gap: every change kind SPEC names
goes propose (201) → approve by another policy admin (200, applied); every way of deciding a change
twice is 409; only policy admins decide; every action lands in the audit with who, what and when.
"""

from __future__ import annotations

from typing import Any

import pathlib

import pytest
import trio

from admin_gateway_region import make_region, start_gateway
from admin_world import P1, P2, T0_MS, AdminWorld, aw  # noqa: F401

KEY_B64 = "B" * 43 + "="
# kind -> (the change, a look-up (path, field, expected value) showing it applied)
SPEC_KINDS: dict[str, tuple[dict[str, Any], tuple[str, str, Any]]] = {
    "institution.grade": ({"institution": P2, "grade": "A"}, (f"/admin/v1/institutions/{P2}", "grade", "A")),
    "institution.monthly_cap": ({"institution": P1, "monthly_cap_fen": 123_456},
                                (f"/admin/v1/institutions/{P1}", "monthly_cap_fen", 123_456)),
    "policy.otc_allowance": ({"grade": "C", "otc_allowance_fen": 7000},
                             (f"/admin/v1/institutions/{P2}", "otc_allowance_day_fen", 7000)),
    "policy.coverage": ({"insutype": "390", "coverage_permille": 650}, ("", "", None)),
    "terminal.enrol": ({"dev_no": "T77", "institution": P1, "public_key": KEY_B64},
                       ("/admin/v1/terminals/T77", "institution", P1)),
    "operator.enrol": ({"code": "OP77", "institution": P1}, ("/admin/v1/operators/OP77", "status", "active")),
    "filing.add": ({"psn_no": "Z77", "admdvs": "51", "valid_from": "2024-03-01", "valid_to": "2024-12-31"},
                   ("/admin/v1/persons/Z77", "filings", [{"admdvs": "51", "valid_from": "2024-03-01",
                                                          "valid_to": "2024-12-31"}])),
}


async def propose(aw: AdminWorld, change: dict[str, Any], who: str = "policy") -> dict[str, Any]:
    status, proposal = await aw.call("POST", "/admin/v1/changes", who, change)
    assert status == 201, proposal
    return proposal


@pytest.mark.parametrize("kind", sorted(SPEC_KINDS))
async def test_every_spec_kind_is_proposed_201_and_applied_by_a_second_policy_admin(
        aw: AdminWorld, kind: str) -> None:
    fields, (path, field, expected) = SPEC_KINDS[kind]
    before = aw.core.snapshot()
    proposal = await propose(aw, {"kind": kind, **fields})
    assert isinstance(proposal["id"], str) and proposal["id"] and proposal["status"] == "proposed"
    assert proposal["change"] == {"kind": kind, **fields}
    assert aw.core.snapshot()["admin_changes"] == before["admin_changes"], "a proposal changes nothing"
    assert (await aw.call("POST", f"/admin/v1/changes/{proposal['id']}/approve", "policy"))[0] == 403
    status, decided = await aw.call("POST", f"/admin/v1/changes/{proposal['id']}/approve", "policy2")
    assert (status, decided["id"], decided["status"]) == (200, proposal["id"], "applied")
    assert decided["before"] != decided["after"]
    if path:
        status, view = await aw.call("GET", path, "viewer")
        assert (status, view[field]) == (200, expected)
    else:
        assert aw.core.state.overlay.policy.coverage("390") == 650


async def test_deciding_a_decided_change_is_409_and_applies_nothing(aw: AdminWorld) -> None:
    rejected = await propose(aw, {"kind": "institution.grade", "institution": P2, "grade": "A"})
    assert (await aw.call("POST", f"/admin/v1/changes/{rejected['id']}/reject", "policy2"))[0] == 200
    withdrawn = await propose(aw, {"kind": "institution.grade", "institution": P2, "grade": "B"})
    status, answer = await aw.call("POST", f"/admin/v1/changes/{withdrawn['id']}/reject", "policy")
    assert (status, answer["status"], answer["decided_by"]) == (200, "rejected", "paula")
    applied = await propose(aw, {"kind": "institution.monthly_cap", "institution": P1, "monthly_cap_fen": 9})
    assert (await aw.call("POST", f"/admin/v1/changes/{applied['id']}/approve", "policy2"))[0] == 200
    state = aw.core.snapshot()
    for change in (rejected, withdrawn, applied):
        for who in ("policy", "policy2"):
            for verb in ("approve", "reject"):
                # 409 whoever asks: a decided change is no longer the proposer's to withdraw either.
                status, answer = await aw.call("POST", f"/admin/v1/changes/{change['id']}/{verb}", who)
                assert status == 409, (change["id"], who, verb, answer)
    assert aw.core.snapshot() == state
    assert aw.core.state.overlay.institutions[P2].grade == "C"


@pytest.mark.parametrize("who", ["viewer", "operator"])
async def test_only_policy_admins_propose_or_decide(aw: AdminWorld, who: str) -> None:
    change = {"kind": "institution.grade", "institution": P2, "grade": "A"}
    status, answer = await aw.call("POST", "/admin/v1/changes", who, change)
    assert status == 403 and "policy" in answer["error"]
    proposal = await propose(aw, change)
    for verb in ("approve", "reject"):
        assert (await aw.call("POST", f"/admin/v1/changes/{proposal['id']}/{verb}", who))[0] == 403
    _, shown = await aw.call("GET", f"/admin/v1/changes/{proposal['id']}", who)
    assert shown["status"] == "proposed"


async def test_every_admin_action_is_audited_with_who_what_and_when(aw: AdminWorld) -> None:
    steps = [
        ("POST", "/admin/v1/changes", "policy", {"kind": "institution.grade", "institution": P2, "grade": "A"},
         "change.propose", "paula"),
        ("POST", "/admin/v1/changes/{id}/approve", "policy2", None, "change.approve", "peter"),
        ("POST", "/admin/v1/changes", "policy2", {"kind": "institution.grade", "institution": P2, "grade": "B"},
         "change.propose", "peter"),
        ("POST", "/admin/v1/changes/{id}/reject", "policy", {"reason": "no"}, "change.reject", "paula"),
        ("POST", f"/admin/v1/institutions/{P1}/suspend", "operator", {"reason": "inspection"},
         "institution.suspend", "otto"),
        ("POST", "/admin/v1/cards/C77/block", "policy", {}, "card.block", "paula"),
        ("POST", "/admin/v1/keys/rotate", "operator", {}, "key.rotate", "otto"),
        ("POST", "/admin/v1/snapshot", "operator", {}, "snapshot", "otto"),
    ]
    change_id = ""
    for number, (method, path, who, body, action, actor) in enumerate(steps, start=1):
        aw.now_ms = T0_MS + number * 1000
        status, answer = await aw.call(method, path.format(id=change_id), who, body)
        assert status in (200, 201), (path, answer)
        change_id = answer.get("id", change_id)
        status, page = await aw.call("GET", f"/admin/v1/audit?after={number - 1}&limit=1", "viewer")
        entry = page["entries"][0]
        assert (status, entry["seq"], entry["action"], entry["actor"], entry["at_ms"]) == (
            200, number, action, actor, T0_MS + number * 1000), entry
    _, everything = await aw.call("GET", "/admin/v1/audit", "viewer")
    assert len(everything["entries"]) == len(steps) and everything["next"] is None


async def test_registry_and_secrets_are_never_rewritten_and_changes_apply_on_top_at_start(
        tmp_path: pathlib.Path) -> None:
    region = make_region(tmp_path)
    files = {name: (region / name).read_bytes() for name in ("registry.toml", "secrets.toml", "gateway.toml")}
    async with trio.open_nursery() as nursery:
        gateway, client = await start_gateway(nursery, region)
        code = client.pharmacy_code()
        status, proposal = await client.admin("POST", "/admin/v1/changes", "alice",
                                              {"kind": "institution.grade", "institution": code, "grade": "D"})
        assert status == 201
        assert (await client.admin("POST", f"/admin/v1/changes/{proposal['id']}/approve", "bob", {}))[0] == 200
        assert (await client.admin("POST", f"/admin/v1/institutions/{code}/suspend", "olivia", {}))[0] == 200
        status, rotated = await client.admin("POST", "/admin/v1/keys/rotate", "olivia", {})
        assert status == 200
        gateway.stop()
    assert {name: (region / name).read_bytes() for name in files} == files
    async with trio.open_nursery() as nursery:
        gateway, client = await start_gateway(nursery, region)
        status, view = await client.admin("GET", f"/admin/v1/institutions/{code}", "victor")
        assert (status, view["grade"], view["status"]) == (200, "D", "suspended")
        keys = {k["kid"]: k["status"] for k in (await client.admin("GET", "/admin/v1/keys", "victor"))[1]["keys"]}
        assert keys == {rotated["kid"]: "active", rotated["retired_kid"]: "retired"}
        gateway.stop()
