"""SPEC 13's admin changes through maker-checker (account.credit, policy.pooling,
institution.outpatient_pooling, family.link, family.unlink) and the person look-up's year ledger,
balance and links; journaled, so they survive a restart."""

from __future__ import annotations

import pathlib
import sys
from typing import Any

import pytest
import trio

from admin_world import T0_MS, AdminWorld, card

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "core"))
from whopays_world import P3, rx, who_pays_world  # noqa: E402

DAY_MS = 86_400_000


@pytest.fixture
async def wp(tmp_path: pathlib.Path, nursery: trio.Nursery) -> AdminWorld:
    world = AdminWorld(tmp_path, nursery, who_pays_world(tmp_path))
    await world.start()
    return world


async def _apply(aw: AdminWorld, change: dict[str, Any]) -> dict[str, Any]:
    """Propose (paula) and approve (peter); returns the approval's answer."""
    status, proposal = await aw.call("POST", "/admin/v1/changes", "policy", change)
    assert status == 201, proposal
    status, answer = await aw.call("POST", f"/admin/v1/changes/{proposal['id']}/approve", "policy2")
    assert status == 200, answer
    return answer


async def _person(aw: AdminWorld, psn_no: str) -> dict[str, Any]:
    status, view = await aw.call("GET", f"/admin/v1/persons/{psn_no}", "viewer")
    assert status == 200, view
    return view


async def test_account_credit_needs_two_policy_admins_and_survives_a_restart(wp: AdminWorld) -> None:
    change = {"kind": "account.credit", "psn_no": "MEM1", "amount_fen": 12_345, "reason": "annual transfer"}
    status, proposal = await wp.call("POST", "/admin/v1/changes", "policy", change)
    assert status == 201 and proposal["reason"] == "annual transfer"
    assert wp.core.state.accounts.balance("MEM1") == 0
    assert (await wp.call("POST", f"/admin/v1/changes/{proposal['id']}/approve", "policy"))[0] == 403
    status, answer = await wp.call("POST", f"/admin/v1/changes/{proposal['id']}/approve", "policy2")
    assert (status, answer["before"], answer["after"]) == (200, {"balance_fen": 0}, {"balance_fen": 12_345})
    await wp.restart()
    assert (await _person(wp, "MEM1"))["account"] == {"enabled": True, "opening_fen": None, "balance_fen": 12_345,
                                                       "overdrawn": False}


@pytest.mark.parametrize("change, field", [
    ({"kind": "account.credit", "psn_no": "MEM1", "amount_fen": 0}, "amount_fen"),
    ({"kind": "account.credit", "psn_no": "MEM1", "amount_fen": "5"}, "amount_fen"),
    ({"kind": "account.credit", "psn_no": "MEM1", "amount_fen": 5, "extra": 1}, "extra"),
    ({"kind": "account.credit", "psn_no": 7, "amount_fen": 5}, "psn_no"),
    ({"kind": "policy.pooling", "insutype": 310, "deductible_fen": 1, "annual_cap_fen": 2}, "insutype"),
    ({"kind": "policy.pooling", "insutype": "310", "deductible_fen": -1, "annual_cap_fen": 2}, "deductible_fen"),
    ({"kind": "policy.pooling", "insutype": "310", "deductible_fen": 1}, "annual_cap_fen"),
    ({"kind": "institution.outpatient_pooling", "institution": P3, "enabled": "false"}, "enabled"),
    ({"kind": "institution.outpatient_pooling", "institution": P3, "enabled": 0}, "enabled"),
    ({"kind": "institution.outpatient_pooling", "institution": "C51018200001", "enabled": True}, "institution"),
    ({"kind": "family.link", "owner": "A", "member": "A", "relation": "spouse", "valid_from": "2024-01-01",
      "valid_to": "2024-12-31"}, "member"),
    ({"kind": "family.link", "owner": "A", "member": "B", "relation": "cousin", "valid_from": "2024-01-01",
      "valid_to": "2024-12-31"}, "relation"),
    ({"kind": "family.link", "owner": "A", "member": "B", "relation": "child", "valid_from": "2024-02-30",
      "valid_to": "2024-12-31"}, "valid_from"),
    ({"kind": "family.link", "owner": "A", "member": "B", "relation": "child", "valid_from": "2024-05-01",
      "valid_to": "2024-04-30"}, "valid_to"),
    ({"kind": "family.link", "owner": "OWN1", "member": "MEM1", "relation": "parent", "valid_from": "2024-12-31",
      "valid_to": "2025-12-31"}, "valid_from"),            # overlaps the standing link
    ({"kind": "family.unlink", "owner": "OWN2", "member": "MEM1"}, "member"),   # ended already
    ({"kind": "family.unlink", "owner": "NOBODY", "member": "MEM1"}, "member"),
])
async def test_bad_values_are_400_naming_the_field(wp: AdminWorld, change: dict[str, Any], field: str) -> None:
    status, answer = await wp.call("POST", "/admin/v1/changes", "policy", change)
    assert (status, answer["field"]) == (400, field), answer


async def test_account_credit_when_accounts_are_off_is_400(tmp_path: pathlib.Path, nursery: trio.Nursery) -> None:
    aw = AdminWorld(tmp_path, nursery, who_pays_world(tmp_path, accounts=False))
    await aw.start()
    status, answer = await aw.call("POST", "/admin/v1/changes", "policy",
                                   {"kind": "account.credit", "psn_no": "MEM1", "amount_fen": 5})
    assert (status, answer["field"]) == (400, "kind")
    assert (await _person(aw, "MEM1"))["account"]["enabled"] is False


async def test_policy_pooling_and_outpatient_pooling_change_the_split(wp: AdminWorld) -> None:
    answer = await _apply(wp, {"kind": "policy.pooling", "insutype": "390", "deductible_fen": 1000,
                               "annual_cap_fen": 5000})
    assert (answer["before"], answer["after"]) == (
        {"pooling": None}, {"pooling": {"deductible_fen": 1000, "annual_cap_fen": 5000}})
    env = await wp.settle([rx("1", 11_000)], who=card("H3", "390"))
    assert (env.output["setlinfo"]["act_pay_dedc"], env.output["setlinfo"]["rx_pay"]) == (1000, 5000)
    answer = await _apply(wp, {"kind": "institution.outpatient_pooling", "institution": P3, "enabled": True})
    assert (answer["before"], answer["after"]) == ({"outpatient_pooling": False}, {"outpatient_pooling": True})
    env = await wp.settle([rx("1", 30_000)], who=card("H1"), dev_no="T6")
    assert (env.output["setlinfo"]["act_pay_dedc"], env.output["setlinfo"]["rx_pay"]) == (20_000, 7000)
    await wp.restart()
    assert wp.core.state.overlay.institutions[P3].outpatient_pooling is True
    assert wp.core.state.overlay.policy.pooling["390"].annual_cap_fen == 5000


async def test_family_link_then_unlink_from_the_next_business_day(wp: AdminWorld) -> None:
    link = {"kind": "family.link", "owner": "H1", "member": "H2", "relation": "spouse",
            "valid_from": "2024-03-01", "valid_to": "2025-12-31"}
    answer = await _apply(wp, link)
    assert answer["after"] == {"links": [{k: v for k, v in link.items() if k != "kind"}]}
    extra = {"acct_used_flag": "1", "acct_payer_psn_no": "H1"}
    term = await wp.sign_in()
    env = wp.world.settle(term, [rx("1", 1000, lv="03")], who=card("H2"), now_ms=wp.now_ms, extra=extra)[1]
    assert (env.infcode, env.output["setlinfo"]["acct_mulaid_pay"]) == (0, 1000)
    setl = env.output["setlinfo"]
    await wp.flush()
    await _apply(wp, {"kind": "family.unlink", "owner": "H1", "member": "H2"})
    env = wp.world.settle(term, [rx("1", 1000, lv="03")], who=card("H2"), now_ms=wp.now_ms, extra=extra)[1]
    assert env.infcode == 0                                   # still today: the link ends tonight
    wp.now_ms = T0_MS + DAY_MS
    term = await wp.sign_in()
    env = wp.world.settle(term, [rx("1", 1000, lv="03")], who=card("H2"), now_ms=wp.now_ms, extra=extra)[1]
    assert env.err_code == "MUTUAL_AID_NOT_AUTHORIZED"
    # Giving back after the link ended restores the owner's balance exactly.
    env = wp.world.send(term, "2103", {"setl_id": setl["setl_id"], "psn_no": "H2"}, wp.now_ms)[1]
    assert (env.infcode, env.output["acct_pay"]) == (0, -1000)
    await wp.flush()
    view = await _person(wp, "H1")
    assert view["family_links"]["pays_for"] == [{**{k: v for k, v in link.items() if k != "kind"},
                                                 "valid_to": "2024-03-15"}]
    assert view["account"]["balance_fen"] == 30_000 - 1000    # the second bill still stands
    await wp.restart()                                        # the unlink day is replayed, not recomputed
    assert (await _person(wp, "H1"))["family_links"]["pays_for"][0]["valid_to"] == "2024-03-15"


async def test_an_unlink_invalid_since_its_proposal_is_409_at_approval(wp: AdminWorld) -> None:
    change = {"kind": "family.unlink", "owner": "OWN1", "member": "MEM1"}
    first = (await wp.call("POST", "/admin/v1/changes", "policy", change))[1]
    second = (await wp.call("POST", "/admin/v1/changes", "policy", change))[1]
    assert (await wp.call("POST", f"/admin/v1/changes/{first['id']}/approve", "policy2"))[0] == 200
    status, answer = await wp.call("POST", f"/admin/v1/changes/{second['id']}/approve", "policy2")
    assert (status, answer["field"]) == (409, "member")
    link = {"kind": "family.link", "owner": "A", "member": "B", "relation": "child", "valid_from": "2024-01-01",
            "valid_to": "2024-12-31"}
    first = (await wp.call("POST", "/admin/v1/changes", "policy", link))[1]
    second = (await wp.call("POST", "/admin/v1/changes", "policy", link))[1]
    assert (await wp.call("POST", f"/admin/v1/changes/{first['id']}/approve", "policy2"))[0] == 200
    status, answer = await wp.call("POST", f"/admin/v1/changes/{second['id']}/approve", "policy2")
    assert (status, answer["field"]) == (409, "valid_from")


async def test_person_look_up_shows_the_year_the_balance_an_overdraft_and_the_links(wp: AdminWorld) -> None:
    extra = {"acct_used_flag": "1"}
    term = await wp.sign_in()
    first = wp.world.settle(term, [rx("1", 5000, lv="03")], who=card("H2"), now_ms=wp.now_ms, extra=extra)[1]
    cancel_mid = wp.world.next_msgid(term.fixmedins_code, wp.now_ms)
    wp.world.send(term, "2103", {"setl_id": first.output["setlinfo"]["setl_id"], "psn_no": "H2"}, wp.now_ms,
                  cancel_mid)
    wp.world.settle(term, [rx("1", 30_000)], who=card("H2"), now_ms=wp.now_ms, extra=extra)
    env = wp.world.send(term, "2601", {"omsgid": cancel_mid, "oinfno": "2103"}, wp.now_ms)[1]
    assert env.infcode == 0
    await wp.flush()
    view = await _person(wp, "H2")
    assert view["account"] == {"enabled": True, "opening_fen": 5000, "balance_fen": -5000, "overdrawn": True}
    assert view["year"] == 2024
    assert view["person_years"] == [{"year": 2024, "insutype": "310", "deductible_used_fen": 20_000,
                                     "pool_paid_fen": 7000, "deductible_fen": 20_000, "annual_cap_fen": 200_000,
                                     "deductible_remaining_fen": 0, "pool_remaining_fen": 193_000}]
    links = (await _person(wp, "MEM1"))["family_links"]
    assert [x["owner"] for x in links["paid_by"]] == ["OWN1", "OWN2", "OWN3", "PBLK"] and links["pays_for"] == []
