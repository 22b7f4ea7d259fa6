"""The admin API end to end: a real Gateway on an `init` region, HTTP on both listeners, restarts."""

from __future__ import annotations

import errno
import json
import pathlib
import stat
from typing import Any

import trio

from admin_gateway_region import AdminRegionClient, make_region, start_gateway
from gateway.journal.fileops import FaultyFileOps
from protocol import ErrCode, TerminalSession, decode_frame


async def _settle_output(client: AdminRegionClient, term: TerminalSession) -> dict[str, Any]:
    """Settle once; the answer must verify and succeed; returns its setlinfo."""
    _, answer = await client.settle(term)
    env = await client.verify(answer)
    assert env.infcode == 0, env
    return env.output["setlinfo"]


async def test_tokens_and_roles(tmp_path: pathlib.Path, nursery: trio.Nursery) -> None:
    gateway, client = await start_gateway(nursery, make_region(tmp_path))
    code = client.pharmacy_code()
    suspend = f"/admin/v1/institutions/{code}/suspend"
    assert (await client.admin("GET", f"/admin/v1/institutions/{code}", None))[0] == 401
    assert (await client.admin("GET", f"/admin/v1/institutions/{code}", None, token="ybadm_nope"))[0] == 401
    assert (await client.admin("POST", suspend, "victor", {}))[0] == 403
    assert (await client.admin("POST", "/admin/v1/keys/rotate", "victor", {}))[0] == 403
    assert (await client.admin("POST", "/admin/v1/snapshot", "victor", {}))[0] == 403
    change = {"kind": "institution.grade", "institution": code, "grade": "B"}
    assert (await client.admin("POST", "/admin/v1/changes", "olivia", change))[0] == 403
    status, view = await client.admin("GET", f"/admin/v1/institutions/{code}", "victor")
    assert (status, view["status"], view["grade"]) == (200, "active", "A")
    assert gateway.runtime.core.state.governance.audit_seq == 0, "refusals leave no trace"
    gateway.stop()


async def test_suspension_refuses_settlement_and_survives_restart(tmp_path: pathlib.Path) -> None:
    region = make_region(tmp_path)
    async with trio.open_nursery() as nursery:
        gateway, client = await start_gateway(nursery, region)
        term = await client.sign_in()
        code = term.fixmedins_code
        status, answer = await client.admin("POST", f"/admin/v1/institutions/{code}/suspend", "olivia",
                                            {"reason": "inspection found expired stock"})
        assert status == 200 and answer["after"] == {"status": "suspended"}, answer
        _, refused = await client.settle(term)
        assert (await client.verify(refused)).err_code == ErrCode.INSTITUTION_SUSPENDED.wire
        gateway.stop()
    async with trio.open_nursery() as nursery:
        gateway, client = await start_gateway(nursery, region)
        status, view = await client.admin("GET", f"/admin/v1/institutions/{code}", "victor")
        assert (status, view["status"]) == (200, "suspended")
        term = await client.sign_in()   # a suspended institution may still sign in
        _, refused = await client.settle(term)
        assert (await client.verify(refused)).err_code == ErrCode.INSTITUTION_SUSPENDED.wire
        assert (await client.admin("POST", f"/admin/v1/institutions/{code}/resume", "alice", {}))[0] == 200
        assert (await _settle_output(client, term))["fund_pay_sumamt"] > 0
        gateway.stop()


async def test_maker_checker_needs_two_policy_admins(tmp_path: pathlib.Path, nursery: trio.Nursery) -> None:
    gateway, client = await start_gateway(nursery, make_region(tmp_path))
    code = client.pharmacy_code()
    status, proposal = await client.admin("POST", "/admin/v1/changes", "alice",
                                          {"kind": "institution.monthly_cap", "institution": code,
                                           "monthly_cap_fen": 500_000, "reason": "quarterly review"})
    assert (status, proposal["status"]) == (201, "proposed"), proposal
    change_id = proposal["id"]
    approve = f"/admin/v1/changes/{change_id}/approve"
    assert (await client.admin("POST", approve, "alice", {}))[0] == 403
    assert (await client.admin("GET", f"/admin/v1/institutions/{code}", "victor"))[1]["monthly_cap_fen"] == 2_000_000
    status, decided = await client.admin("POST", approve, "bob", {})
    assert (status, decided["status"], decided["decided_by"]) == (200, "applied", "bob")
    assert (await client.admin("POST", approve, "bob", {}))[0] == 409
    assert (await client.admin("GET", f"/admin/v1/institutions/{code}", "victor"))[1]["monthly_cap_fen"] == 500_000

    status, second = await client.admin("POST", "/admin/v1/changes", "bob",
                                        {"kind": "institution.monthly_cap", "institution": code,
                                         "monthly_cap_fen": 1})
    assert status == 201
    status, rejected = await client.admin("POST", f"/admin/v1/changes/{second['id']}/reject", "alice",
                                          {"reason": "typo"})
    assert (status, rejected["status"]) == (200, "rejected")
    assert (await client.admin("POST", f"/admin/v1/changes/{second['id']}/approve", "alice", {}))[0] == 409
    status, listing = await client.admin("GET", "/admin/v1/changes", "victor")
    assert status == 200
    assert [(c["id"], c["status"]) for c in listing["changes"]] == [(change_id, "applied"),
                                                                     (second["id"], "rejected")]
    status, one = await client.admin("GET", f"/admin/v1/changes/{change_id}", "victor")
    assert (status, one["proposer"], one["change"]["monthly_cap_fen"]) == (200, "alice", 500_000)
    assert (await client.admin("GET", "/admin/v1/changes/chg-999999", "victor"))[0] == 404
    gateway.stop()


async def test_grade_change_lowers_the_daily_allowance(tmp_path: pathlib.Path, nursery: trio.Nursery) -> None:
    gateway, client = await start_gateway(nursery, make_region(tmp_path))
    term = await client.sign_in()
    code, psn_no = term.fixmedins_code, client.settling_person(term)
    first = await _settle_output(client, term)
    assert first["crt_payb_lmt_amt"] == 12_000    # grade A, nothing used yet today
    _, proposal = await client.admin("POST", "/admin/v1/changes", "alice",
                                     {"kind": "institution.grade", "institution": code, "grade": "C"})
    assert (await client.admin("POST", f"/admin/v1/changes/{proposal['id']}/approve", "bob", {}))[0] == 200
    status, view = await client.admin("GET", f"/admin/v1/institutions/{code}", "victor")
    assert (status, view["grade"], view["otc_allowance_day_fen"]) == (200, "C", 6_000)
    assert view["month_used_fen"] == first["fund_pay_sumamt"]
    status, person = await client.admin("GET", f"/admin/v1/persons/{psn_no}", "victor")
    assert (status, person["days"][-1]["otc_used_fen"], person["blocked"]) == (200, first["otc_pay"], False)
    second = await _settle_output(client, term)
    assert second["crt_payb_lmt_amt"] == 6_000 - first["otc_pay"]
    gateway.stop()


async def test_bad_input_is_400_naming_the_field_and_applies_nothing(
        tmp_path: pathlib.Path, nursery: trio.Nursery) -> None:
    gateway, client = await start_gateway(nursery, make_region(tmp_path))
    code = client.pharmacy_code()
    core = gateway.runtime.core
    last_op = core.last_op
    cases = [
        ("POST", "/admin/v1/changes", {"kind": "institution.grade", "institution": code, "grade": "Z"}, "grade"),
        ("POST", "/admin/v1/changes", {"kind": "institution.grade", "institution": code, "grade": "B",
                                       "colour": "red"}, "colour"),
        ("POST", "/admin/v1/changes", {"kind": "policy.otc_allowance", "grade": "A",
                                       "otc_allowance_fen": -5}, "otc_allowance_fen"),
        ("POST", "/admin/v1/changes", {"kind": "institution.teleport"}, "kind"),
        ("POST", f"/admin/v1/institutions/{code}/suspend", {"why": "no"}, "why"),
        ("POST", f"/admin/v1/institutions/{code}/suspend", {"reason": 7}, "reason"),
    ]
    for method, path, body, field in cases:
        status, answer = await client.admin(method, path, "alice", body)
        assert (status, answer.get("field")) == (400, field), (path, body, answer)
    for raw in (b"{not json", b"[1, 2]", b'"text"'):
        status, answer = await client.admin("POST", "/admin/v1/changes", "alice", raw=raw)
        assert (status, answer["field"]) == (400, "body"), raw
    assert core.last_op == last_op
    status, view = await client.admin("GET", f"/admin/v1/institutions/{code}", "victor")
    assert (view["status"], view["grade"]) == ("active", "A")
    assert (await client.admin("GET", "/admin/v1/changes", "victor"))[1]["changes"] == []
    gateway.stop()


async def test_key_rotation_keeps_old_answers_verifiable(tmp_path: pathlib.Path) -> None:
    region = make_region(tmp_path)
    key_path = region / "gateway_ed25519.pem"
    async with trio.open_nursery() as nursery:
        gateway, client = await start_gateway(nursery, region)
        term = await client.sign_in()
        mid = client.new_msgid(term)
        frame = client.settle_frame(term, mid)
        answer = (await client.post_tx(frame))[1]
        old_kid = decode_frame(answer).key_id
        status, rotated = await client.admin("POST", "/admin/v1/keys/rotate", "olivia", {"reason": "yearly"})
        assert (status, rotated["retired_kid"]) == (200, old_kid), rotated
        new_kid = rotated["kid"]
        _, body = await client.get("/fsi/v1/keys")
        listed = {k["kid"]: k["status"] for k in json.loads(body)["keys"]}
        assert listed == {new_kid: "active", old_kid: "retired"}
        assert (await client.post_tx(frame))[1] == answer, "a replay returns its stored bytes"
        assert (await client.verify(answer)).infcode == 0
        _, fresh = await client.settle(term)
        assert decode_frame(fresh).key_id == new_kid
        assert (await client.verify(fresh)).infcode == 0
        retired_file = key_path.with_name(f"{key_path.name}.{old_kid}.retired")
        assert retired_file.exists()
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
        gateway.stop()
    async with trio.open_nursery() as nursery:
        gateway, client = await start_gateway(nursery, region)
        assert set(await client.keys()) == {new_kid, old_kid}
        term = await client.sign_in()
        # The same settlement (same msgid) under the new session: its stored, old-key bytes.
        assert (await client.post_tx(client.settle_frame(term, mid)))[1] == answer
        _, fresh = await client.settle(term)
        assert decode_frame(fresh).key_id == new_kid
        gateway.stop()


async def test_audit_lists_actions_with_actor_across_restart(tmp_path: pathlib.Path) -> None:
    region = make_region(tmp_path)
    async with trio.open_nursery() as nursery:
        gateway, client = await start_gateway(nursery, region)
        code = client.pharmacy_code()
        await client.admin("POST", "/admin/v1/cards/C0001/block", "olivia", {"reason": "reported stolen"})
        _, proposal = await client.admin("POST", "/admin/v1/changes", "alice",
                                         {"kind": "institution.grade", "institution": code, "grade": "B"})
        await client.admin("POST", f"/admin/v1/changes/{proposal['id']}/approve", "bob", {})
        status, snap = await client.admin("POST", "/admin/v1/snapshot", "olivia", {})
        assert status == 200 and snap["snapshot_op"] >= 1
        gateway.stop()
    async with trio.open_nursery() as nursery:
        gateway, client = await start_gateway(nursery, region)
        status, page = await client.admin("GET", "/admin/v1/audit", "victor")
        assert status == 200
        trail = [(e["actor"], e["action"]) for e in page["entries"]]
        assert trail == [("olivia", "card.block"), ("alice", "change.propose"), ("bob", "change.approve"),
                         ("olivia", "snapshot")]
        block, _, approve, _ = page["entries"]
        assert (block["reason"], block["target"], block["after"]) == (
            "reported stolen", {"card_no": "C0001"}, {"blocked": True})
        assert (approve["change_id"], approve["before"], approve["after"]) == (
            proposal["id"], {"grade": "A"}, {"grade": "B"})
        assert [e["seq"] for e in page["entries"]] == [1, 2, 3, 4]
        assert all(isinstance(e["at_ms"], int) and e["at_ms"] > 0 for e in page["entries"])
        assert (await client.admin("GET", "/admin/v1/audit?limit=0", "victor"))[0] == 400
        gateway.stop()


async def test_a_disk_failure_answers_500_and_leaves_nothing_applied(
        tmp_path: pathlib.Path, nursery: trio.Nursery) -> None:
    faults = FaultyFileOps()
    gateway, client = await start_gateway(nursery, make_region(tmp_path), file_ops=faults)
    code = client.pharmacy_code()
    faults.fail("fsync", errno.EIO)
    status, answer = await client.admin("POST", f"/admin/v1/institutions/{code}/suspend", "olivia", {})
    assert status == 500, answer
    with trio.fail_after(10):
        while (await client.get("/readyz", client.admin_port))[0] != 200:
            await trio.sleep(0.05)
    status, view = await client.admin("GET", f"/admin/v1/institutions/{code}", "victor")
    assert (status, view["status"]) == (200, "active"), "rolled back to what is durable"
    assert (await client.admin("GET", "/admin/v1/audit", "victor"))[1]["entries"] == []
    status, answer = await client.admin("POST", f"/admin/v1/institutions/{code}/suspend", "olivia", {})
    assert (status, answer["after"]) == (200, {"status": "suspended"})
    gateway.stop()


async def test_start_finishes_or_discards_an_interrupted_rotation(tmp_path: pathlib.Path) -> None:
    region = make_region(tmp_path)
    key_path = region / "gateway_ed25519.pem"
    staged = key_path.with_name(key_path.name + ".staged")
    async with trio.open_nursery() as nursery:
        gateway, client = await start_gateway(nursery, region)
        _, rotated = await client.admin("POST", "/admin/v1/keys/rotate", "olivia", {})
        gateway.stop()
    # Put the files back as a crash after the durable record, before the install, leaves them.
    retired = key_path.with_name(f"{key_path.name}.{rotated['retired_kid']}.retired")
    staged.write_bytes(key_path.read_bytes())
    key_path.write_bytes(retired.read_bytes())
    retired.unlink()
    async with trio.open_nursery() as nursery:
        gateway, client = await start_gateway(nursery, region)
        assert gateway.runtime.core.keys.active_kid == rotated["kid"]
        assert not staged.exists() and retired.exists()
        gateway.stop()
    # A staged key the journal never heard of (a crash before the record) is dropped.
    staged.write_bytes(retired.read_bytes())
    async with trio.open_nursery() as nursery:
        gateway, client = await start_gateway(nursery, region)
        assert gateway.runtime.core.keys.active_kid == rotated["kid"]
        assert not staged.exists()
        keys = {k["kid"]: k["status"] for k in json.loads((await client.get("/fsi/v1/keys"))[1])["keys"]}
        assert keys == {rotated["kid"]: "active", rotated["retired_kid"]: "retired"}
        gateway.stop()
