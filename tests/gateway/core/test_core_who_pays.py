"""SPEC 13 "Who pays v2" through a real core: pooling per person-year, accounts, family mutual aid,
the checks' order, everything that gives back, queries, reconciliation, snapshots and the year's end."""

from __future__ import annotations

import pathlib
from typing import Any

import msgpack
import pytest

from core_world import P1, T0_MS, World, card, line
from gateway.core import from_wire
from gateway.core import supervision as sup
from gateway.core.clock import business_day
from gateway.core.pooling import PREVIOUS_YEAR_KEPT_MS, YearUsage, year_start_ms
from whopays_world import ANNUAL_CAP_FEN, BALANCES, DEDUCTIBLE_FEN, rx, who_pays_world

ACCT = {"acct_used_flag": "1"}
DAY_MS = 86_400_000


@pytest.fixture
def wp(tmp_path: pathlib.Path) -> World:
    return who_pays_world(tmp_path)


def ok(env: Any) -> dict[str, Any]:
    assert env.infcode == 0, (env.err_code, env.err_msg)
    return env.output


def settle(world: World, items: list[dict[str, Any]], psn: str = "PSN1", dev: str = "T1", infno: str = "2102",
           now_ms: int = T0_MS, insutype: str = "310", **extra: Any) -> Any:
    term = world.sign_in(dev, now_ms=now_ms)
    return world.settle(term, items, who=card(psn, insutype), infno=infno, now_ms=now_ms, extra=extra)[1]


def year_of(world: World, psn: str = "PSN1", year: int = 2024, insutype: str = "310") -> YearUsage:
    return world.core.state.years.used(psn, insutype, year)


def balance(world: World, psn: str) -> int:
    return world.core.state.accounts.balance(psn)


def business(world: World) -> dict[str, Any]:
    """The business state of a snapshot (sign-ins change the op counter and serial reservations; any
    journaled record, such as a refusal's supervision alert, moves the housekeeping floors)."""
    snap = world.core.snapshot()
    return {key: _without_floors(snap[key]) for key in ("ledger", "settlements", "person_years", "accounts",
                                                          "idempotency")}


def _without_floors(part: Any) -> Any:
    return {k: v for k, v in part.items() if not k.startswith("floor_")} if isinstance(part, dict) else part


# -- the settlement's who-pays keys ----------------------------------------------------------------

def test_a_pharmacy_bill_split_between_fund_account_and_cash(wp: World) -> None:
    info = ok(settle(wp, [rx("1", 30_000), line("2", 1000)], **ACCT))["setlinfo"]
    assert {k: info[k] for k in ("medfee_sumamt", "act_pay_dedc", "rx_pay", "otc_pay", "fund_pay_sumamt",
                                 "psn_part_amt", "acct_pay", "acct_mulaid_pay", "psn_cash_pay", "balc",
                                 "acct_payer_psn_no", "person_year_pool_remaining", "bound_by")} == {
        "medfee_sumamt": 31_000, "act_pay_dedc": 20_000, "rx_pay": 7000, "otc_pay": 1000, "fund_pay_sumamt": 8000,
        "psn_part_amt": 23_000, "acct_pay": 23_000, "acct_mulaid_pay": 0, "psn_cash_pay": 0, "balc": 27_000,
        "acct_payer_psn_no": "PSN1", "person_year_pool_remaining": 193_000, "bound_by": []}
    assert year_of(wp) == YearUsage(20_000, 7000) and balance(wp, "PSN1") == 27_000


def test_without_the_flag_the_account_is_not_touched(wp: World) -> None:
    info = ok(settle(wp, [rx("1", 30_000)], acct_payer_psn_no="OWN1"))["setlinfo"]
    assert (info["acct_pay"], info["balc"], info["acct_payer_psn_no"], info["psn_cash_pay"]) == (0, None, None, 23_000)
    assert balance(wp, "OWN1") == 100_000 and balance(wp, "PSN1") == 50_000


def test_exactly_the_balance_then_the_account_binds(wp: World) -> None:
    info = ok(settle(wp, [rx("1", 5000, lv="03")], psn="H2", **ACCT))["setlinfo"]       # H2 holds 5000
    assert (info["acct_pay"], info["balc"], info["psn_cash_pay"], info["bound_by"]) == (5000, 0, 0, [])
    info = ok(settle(wp, [rx("1", 100, lv="03")], psn="H2", **ACCT))["setlinfo"]
    assert (info["acct_pay"], info["balc"], info["psn_cash_pay"], info["bound_by"]) == (0, 0, 100, ["account_balance"])


def test_a_person_without_an_account_has_balance_0(wp: World) -> None:
    info = ok(settle(wp, [rx("1", 100, lv="03")], psn="NOACCT", **ACCT))["setlinfo"]
    assert (info["acct_pay"], info["balc"], info["bound_by"]) == (0, 0, ["account_balance"])


def test_pooling_through_the_deductible_into_the_cap(wp: World) -> None:
    ok(settle(wp, [rx("1", 15_000)]))                                   # all deductible
    assert year_of(wp) == YearUsage(15_000, 0)
    info = ok(settle(wp, [rx("1", 10_000)]))["setlinfo"]                 # 5000 deductible, 5000 × 70 %
    assert (info["act_pay_dedc"], info["rx_pay"]) == (5000, 3500)
    # Up to 3500 fen short of the cap: a bill whose 70 % is 199 000 fen overshoots it.
    big = [rx(str(n), 1_000_000) for n in range(1, 4)]
    env = settle(wp, big, psn="PSN1")
    info = ok(env)["setlinfo"]
    assert (info["rx_pay"], info["person_year_pool_remaining"]) == (ANNUAL_CAP_FEN - 3500, 0)
    assert "person_year" in info["bound_by"] and "PERSON_YEAR_CAP_REACHED" in env.warnings
    info = ok(settle(wp, [rx("1", 100)]))["setlinfo"]
    assert (info["rx_pay"], info["bound_by"]) == (0, ["person_year"])
    assert year_of(wp) == YearUsage(DEDUCTIBLE_FEN, ANNUAL_CAP_FEN)


def test_a_pharmacy_without_outpatient_pooling(wp: World) -> None:
    env = settle(wp, [rx("1", 30_000), line("2", 1000)], dev="T6")
    info = ok(env)["setlinfo"]
    assert (info["act_pay_dedc"], info["rx_pay"], info["otc_pay"], info["person_year_pool_remaining"]) == (
        0, 0, 1000, ANNUAL_CAP_FEN)
    assert year_of(wp) == YearUsage(0, 0)


def test_a_clinic_pools_the_whole_in_scope_amount(wp: World) -> None:
    info = ok(settle(wp, [line("1", 40_000, otc=False)], dev="T3", infno="2207", **ACCT))["setlinfo"]
    assert (info["act_pay_dedc"], info["fund_pay_sumamt"], info["rx_pay"], info["acct_pay"]) == (20_000, 14_000,
                                                                                                 14_000, 26_000)
    assert year_of(wp) == YearUsage(20_000, 14_000) and balance(wp, "PSN1") == 24_000


def test_no_pooling_policy_for_the_insutype_is_v1(wp: World) -> None:
    info = ok(settle(wp, [rx("1", 30_000)], insutype="390"))["setlinfo"]
    assert (info["act_pay_dedc"], info["rx_pay"], info["person_year_pool_remaining"]) == (0, 15_000, None)
    # The pooled payment is still counted in the person-year (SPEC 13: 2102 adds rx_pay to it).
    assert year_of(wp, insutype="390") == YearUsage(0, 15_000)


def test_pre_settlements_answer_as_if_applied_and_change_nothing(wp: World) -> None:
    before = business(wp)
    info = ok(settle(wp, [rx("1", 30_000)], infno="2101", **ACCT))["setlinfo"]
    assert (info["act_pay_dedc"], info["acct_pay"], info["balc"]) == (20_000, 23_000, 27_000)
    assert business(wp) == before


# -- mutual aid and the order of the checks ---------------------------------------------------------

def test_mutual_aid_pays_from_the_owner_account(wp: World) -> None:
    info = ok(settle(wp, [rx("1", 3000, lv="03")], psn="MEM1", acct_payer_psn_no="OWN1", **ACCT))["setlinfo"]
    assert (info["acct_pay"], info["acct_mulaid_pay"], info["acct_payer_psn_no"], info["balc"]) == (
        3000, 3000, "OWN1", 97_000)
    assert balance(wp, "OWN1") == 97_000 and balance(wp, "MEM1") == 0


@pytest.mark.parametrize("payer, code", [
    ("PBLK", "PERSON_INELIGIBLE"),                 # a blocked payer, even with a link
    ("OWN2", "MUTUAL_AID_NOT_AUTHORIZED"),         # the link expired yesterday
    ("PSN1", "MUTUAL_AID_NOT_AUTHORIZED"),         # no link at all
])
@pytest.mark.parametrize("dev, infno", [("T1", "2101"), ("T1", "2102"), ("T3", "2206"), ("T3", "2207")])
def test_refused_payers(wp: World, payer: str, code: str, dev: str, infno: str) -> None:
    before = business(wp)
    env = settle(wp, [line("1", 3000, otc=False)], psn="MEM1", dev=dev, infno=infno, acct_payer_psn_no=payer, **ACCT)
    assert (env.infcode, env.err_code) == (-2, code) and "acct_payer_psn_no" in env.err_msg
    assert business(wp) == before
    # A mutual-aid refusal raises the supervision alert on the payer (SPEC 14), journaled.
    refused = wp.core.state.supervision.has_event(T0_MS, sup.MUTUAL_AID_REFUSED, payer)
    assert refused == (code == "MUTUAL_AID_NOT_AUTHORIZED")
    wp.assert_replay_and_restore()


def test_the_patient_checks_come_before_the_payer_checks(wp: World) -> None:
    env = settle(wp, [line("1", 3000)], psn="PBLK", acct_payer_psn_no="NOLINK", **ACCT)
    assert env.err_code == "PERSON_INELIGIBLE" and "acct_payer_psn_no" not in env.err_msg
    term = wp.sign_in()
    env = wp.settle(term, [line("1", 3000)], who=card("Z", admdvs="440100"), extra={
        "acct_used_flag": "1", "acct_payer_psn_no": "NOLINK"})[1]
    assert env.err_code == "CROSS_PROVINCE_NOT_FILED"
    env = wp.settle(term, [line("1", 3000)], who=card("X001", admdvs="440100"), extra={
        "acct_used_flag": "1", "acct_payer_psn_no": "NOLINK"})[1]
    assert env.err_code == "MUTUAL_AID_NOT_AUTHORIZED"     # filed: the person checks pass first


def test_the_payer_is_checked_only_when_the_flag_is_1(wp: World) -> None:
    info = ok(settle(wp, [line("1", 3000)], psn="MEM1", acct_payer_psn_no="PBLK"))["setlinfo"]
    assert info["acct_pay"] == 0


def test_a_link_valid_today_only(wp: World) -> None:
    ok(settle(wp, [rx("1", 100, lv="03")], psn="MEM1", acct_payer_psn_no="OWN3", **ACCT))
    env = settle(wp, [rx("1", 100, lv="03")], psn="MEM1", acct_payer_psn_no="OWN3", now_ms=T0_MS + DAY_MS, **ACCT)
    assert env.err_code == "MUTUAL_AID_NOT_AUTHORIZED"


@pytest.mark.parametrize("extra, field", [
    ({"acct_used_flag": "2"}, "acct_used_flag"), ({"acct_used_flag": 1}, "acct_used_flag"),
    ({"acct_used_flag": True}, "acct_used_flag"), ({"acct_payer_psn_no": ""}, "acct_payer_psn_no"),
    ({"acct_payer_psn_no": "x" * 65}, "acct_payer_psn_no"), ({"acct_payer_psn_no": 5}, "acct_payer_psn_no"),
])
def test_malformed_who_pays_fields(wp: World, extra: dict[str, Any], field: str) -> None:
    env = settle(wp, [line("1", 3000)], **extra)
    assert (env.err_code, env.err_msg.split(":")[0]) == ("MALFORMED_INPUT", f"input.{field}")


def test_nil_who_pays_fields_count_as_absent(wp: World) -> None:
    info = ok(settle(wp, [line("1", 3000, lv="03")], acct_used_flag=None, acct_payer_psn_no=None))["setlinfo"]
    assert info["acct_pay"] == 0


# -- everything that gives back -------------------------------------------------------------------

def _cancel(world: World, info: dict[str, Any], dev: str = "T1", now_ms: int = T0_MS) -> Any:
    term = world.sign_in(dev, now_ms=now_ms)
    return world.send(term, "2103" if dev != "T3" else "2208",
                      {"setl_id": info["setl_id"], "psn_no": info["psn_no"]}, now_ms)[1]


def test_cancel_gives_back_deductible_pooled_and_balance_even_after_the_link_ended(wp: World) -> None:
    before = business(wp)
    info = ok(settle(wp, [rx("1", 30_000)], psn="MEM1", acct_payer_psn_no="OWN3", **ACCT))["setlinfo"]
    assert year_of(wp, "MEM1") == YearUsage(20_000, 7000) and balance(wp, "OWN3") == 100_000 - 23_000
    out = ok(_cancel(wp, info, now_ms=T0_MS + DAY_MS))        # OWN3's link ended yesterday
    assert (out["acct_pay"], out["act_pay_dedc"], out["rx_pay"]) == (-23_000, -20_000, -7000)
    assert year_of(wp, "MEM1") == YearUsage(0, 0) and balance(wp, "OWN3") == 100_000
    after = business(wp)
    assert (after["person_years"]["rows"], after["accounts"]) == (before["person_years"]["rows"], before["accounts"])


def test_reversal_of_a_settlement_gives_everything_back(wp: World) -> None:
    term = wp.sign_in()
    mid = wp.next_msgid(P1, T0_MS)
    ok(wp.settle(term, [rx("1", 30_000)], who=card("PSN1"), msgid_=mid, extra=ACCT)[1])
    ok(wp.send(term, "2601", {"omsgid": mid, "oinfno": "2102"})[1])
    assert year_of(wp) == YearUsage(0, 0) and balance(wp, "PSN1") == 50_000


def test_a_reinstated_cancellation_takes_again_without_checks_and_may_overdraw(wp: World) -> None:
    term = wp.sign_in()
    first = ok(wp.settle(term, [rx("1", 5000, lv="03")], who=card("H2"), extra=ACCT)[1])["setlinfo"]
    cancel_mid = wp.next_msgid(P1, T0_MS)
    ok(wp.send(term, "2103", {"setl_id": first["setl_id"], "psn_no": "H2"}, msgid_=cancel_mid)[1])
    second = ok(wp.settle(term, [rx("1", 5000, lv="03")], who=card("H2"), extra=ACCT)[1])["setlinfo"]
    assert second["acct_pay"] == 5000 and balance(wp, "H2") == 0
    ok(wp.send(term, "2601", {"omsgid": cancel_mid, "oinfno": "2103"})[1])
    assert balance(wp, "H2") == -5000
    # The overdraft raises the supervision alert (SPEC 14), again on replay.
    day = wp.core.state.supervision.days[business_day(T0_MS)]
    assert day.events[sup.ACCOUNT_OVERDRAWN] == {"H2": {"balance_fen": -5000, "setl_id": first["setl_id"],
                                                       "time": T0_MS}}
    wp.assert_replay_and_restore()
    info = ok(wp.settle(term, [rx("1", 100, lv="03")], who=card("H2"), extra=ACCT)[1])["setlinfo"]
    assert (info["acct_pay"], info["balc"], info["bound_by"]) == (0, -5000, ["account_balance"])
    ok(wp.send(term, "2103", {"setl_id": second["setl_id"], "psn_no": "H2"})[1])
    assert balance(wp, "H2") == 0


def test_reinstating_can_pass_the_deductible_and_the_cap(wp: World) -> None:
    term = wp.sign_in()
    first = ok(wp.settle(term, [rx("1", 30_000)], who=card("H1"))[1])["setlinfo"]
    cancel_mid = wp.next_msgid(P1, T0_MS)
    ok(wp.send(term, "2103", {"setl_id": first["setl_id"], "psn_no": "H1"}, msgid_=cancel_mid)[1])
    ok(wp.settle(term, [rx("1", 30_000)], who=card("H1"))[1])
    ok(wp.send(term, "2601", {"omsgid": cancel_mid, "oinfno": "2103"})[1])
    assert year_of(wp, "H1") == YearUsage(40_000, 14_000)
    out = _person_info(wp, "H1")
    assert (out["pool_deductible_remaining"], out["pool_year_remaining"]) == (0, ANNUAL_CAP_FEN - 14_000)


# -- queries and reconciliation --------------------------------------------------------------------

def _person_info(world: World, psn: str, insutype: str = "310", now_ms: int = T0_MS) -> dict[str, Any]:
    term = world.sign_in(now_ms=now_ms)
    mid = world.next_msgid(P1, now_ms)
    return ok(world.send(term, "1101", world.card_fields(term, mid, "1101", 0, card(psn, insutype)), now_ms,
                         mid)[1])


def test_1101_shows_the_year_and_the_balance(wp: World, tmp_path: pathlib.Path) -> None:
    out = _person_info(wp, "PSN1")
    assert (out["pool_deductible_remaining"], out["pool_year_remaining"], out["acct_balance"]) == (
        DEDUCTIBLE_FEN, ANNUAL_CAP_FEN, 50_000)
    ok(settle(wp, [rx("1", 30_000)], **ACCT))
    out = _person_info(wp, "PSN1")
    assert (out["pool_deductible_remaining"], out["pool_year_remaining"], out["acct_balance"]) == (
        0, ANNUAL_CAP_FEN - 7000, 27_000)
    out = _person_info(wp, "PSN1", insutype="390")
    assert (out["pool_deductible_remaining"], out["pool_year_remaining"]) == (None, None)
    (tmp_path / "off").mkdir()
    off = _person_info(who_pays_world(tmp_path / "off", accounts=False), "PSN1")
    assert off["acct_balance"] is None


def test_totals_and_detail_carry_acct_pay(wp: World) -> None:
    info = ok(settle(wp, [rx("1", 30_000)], **ACCT))["setlinfo"]
    term = wp.sign_in()
    theirs = {"stmt_date": "20240315", "setl_cnt": 1, "medfee_sumamt": 30_000, "fund_pay_sumamt": 7000,
              "psn_cash_pay": 0}
    out = ok(wp.send(term, "3201", theirs)[1])
    assert out == {"stmt_rslt": "0", "gateway": {**{k: v for k, v in theirs.items() if k != "stmt_date"},
                                                 "acct_pay": 23_000}}
    assert ok(wp.send(term, "3201", {**theirs, "acct_pay": 23_000})[1])["stmt_rslt"] == "0"
    assert ok(wp.send(term, "3201", {**theirs, "acct_pay": 22_999})[1])["stmt_rslt"] == "1"
    assert ok(wp.send(term, "3201", {**theirs, "acct_pay": None})[1])["stmt_rslt"] == "0"
    assert wp.send(term, "3201", {**theirs, "acct_pay": -1})[1].err_code == "MALFORMED_INPUT"
    rows = ok(wp.send(term, "3202", {"stmt_date": "20240315", "limit": 10})[1])["rows"]
    assert [(r["setl_id"], r["acct_pay"]) for r in rows] == [(info["setl_id"], 23_000)]


def test_settlement_facts_carry_the_account_part(wp: World) -> None:
    term = wp.sign_in()
    result, _ = wp.settle(term, [rx("1", 5000, lv="03")], who=card("H2"), extra=ACCT)
    assert (result.facts.acct_fen, result.facts.cash_fen) == (5000, 0)
    result, _ = wp.settle(term, [rx("1", 100, lv="03")], who=card("H2"), extra=ACCT)
    assert result.facts.bound_by == ("account_balance",)


# -- durability: replay, snapshots, old snapshots --------------------------------------------------

def _wire_round_trip(value: Any) -> Any:
    return msgpack.unpackb(msgpack.packb(value, use_bin_type=True), raw=False)


def test_replay_and_snapshot_reproduce_years_and_balances(wp: World) -> None:
    term = wp.sign_in()
    ok(wp.settle(term, [rx("1", 30_000)], who=card("MEM1"), extra={**ACCT, "acct_payer_psn_no": "OWN1"})[1])
    info = ok(wp.settle(term, [rx("1", 9000)], who=card("H1"), extra=ACCT)[1])["setlinfo"]
    ok(wp.send(term, "2103", {"setl_id": info["setl_id"], "psn_no": "H1"})[1])
    replayed = wp.make_core()
    for record in wp.records:
        replayed.commit(from_wire(_wire_round_trip(record.to_wire())))
    assert replayed.snapshot() == wp.core.snapshot()
    restored = wp.make_core()
    restored.restore(_wire_round_trip(wp.core.snapshot()))
    assert restored.snapshot() == wp.core.snapshot()
    assert restored.state.accounts.balance("OWN1") == 100_000 - 23_000


def test_an_old_snapshot_without_who_pays_restores_its_year_from_standing_settlements(wp: World) -> None:
    info = ok(settle(wp, [rx("1", 30_000)]))["setlinfo"]
    snap = _wire_round_trip(wp.core.snapshot())
    del snap["person_years"], snap["accounts"]
    for row in snap["settlements"]:
        del row["act_pay_dedc"], row["acct_payer_psn_no"]     # written before these fields existed
    restored = wp.make_core()
    restored.restore(snap)
    # A v1 settlement took its rx_pay as pooled payment and no deductible.
    assert restored.state.years.used("PSN1", "310", 2024) == YearUsage(0, 7000)
    wp.restart(restored)
    ok(_cancel(wp, info))
    assert restored.state.years.records() == 0


# -- the year's end --------------------------------------------------------------------------------

def test_the_year_turns_at_shanghai_midnight(wp: World) -> None:
    new_year_ms = year_start_ms(2025)
    world = wp
    last_ms = new_year_ms - 1
    info = ok(settle(world, [rx("1", 30_000)], now_ms=last_ms))["setlinfo"]
    assert (info["act_pay_dedc"], info["rx_pay"]) == (20_000, 7000)
    assert _person_info(world, "PSN1", now_ms=last_ms)["pool_deductible_remaining"] == 0
    out = _person_info(world, "PSN1", now_ms=new_year_ms)
    assert (out["pool_deductible_remaining"], out["pool_year_remaining"]) == (DEDUCTIBLE_FEN, ANNUAL_CAP_FEN)
    info2 = ok(settle(world, [rx("1", 30_000)], now_ms=new_year_ms))["setlinfo"]
    assert (info2["act_pay_dedc"], info2["rx_pay"]) == (20_000, 7000)
    assert year_of(world, year=2024) == YearUsage(20_000, 7000) and year_of(world, year=2025) == YearUsage(20_000, 7000)


def test_a_reversal_just_after_new_year_gives_back_to_the_old_year_then_it_is_compacted(wp: World) -> None:
    last_ms = year_start_ms(2025) - 1
    term = wp.sign_in(now_ms=last_ms)
    mid = wp.next_msgid(P1, last_ms)
    ok(wp.settle(term, [rx("1", 30_000)], who=card("PSN1"), msgid_=mid, now_ms=last_ms, extra=ACCT)[1])
    ok(settle(wp, [rx("1", 30_000)], psn="H1", now_ms=last_ms))
    later_ms = year_start_ms(2025) + 3_600_000
    term = wp.sign_in(now_ms=later_ms)
    ok(wp.send(term, "2601", {"omsgid": mid, "oinfno": "2102"}, later_ms)[1])
    assert year_of(wp, year=2024) == YearUsage(0, 0) and balance(wp, "PSN1") == 50_000
    assert year_of(wp, "H1", year=2024) == YearUsage(20_000, 7000)
    gone_ms = year_start_ms(2025) + PREVIOUS_YEAR_KEPT_MS
    ok(settle(wp, [line("1", 100)], psn="H3", now_ms=gone_ms))
    assert wp.core.state.years.floor_year == 2025 and year_of(wp, "H1", year=2024) == YearUsage(0, 0)


def test_accounts_off_pays_nothing_from_accounts(tmp_path: pathlib.Path) -> None:
    world = who_pays_world(tmp_path, accounts=False)
    info = ok(settle(world, [rx("1", 100, lv="03")], **ACCT))["setlinfo"]
    assert (info["acct_pay"], info["balc"], info["psn_cash_pay"]) == (0, 0, 100)


def test_clinic_cancel_output_negates_the_who_pays_amounts(wp: World) -> None:
    info = ok(settle(wp, [line("1", 40_000, otc=False)], dev="T3", infno="2207", **ACCT))["setlinfo"]
    out = ok(_cancel(wp, info, dev="T3"))
    assert (out["acct_pay"], out["act_pay_dedc"], out["fund_pay_sumamt"]) == (-26_000, -20_000, -14_000)
    assert balance(wp, "PSN1") == BALANCES["PSN1"] and year_of(wp) == YearUsage(0, 0)


def test_metrics_count_the_account_part_and_the_who_pays_limits(wp: World) -> None:
    from gateway.metrics import GatewayMetrics
    metrics = GatewayMetrics()
    term = wp.sign_in()
    for items, psn in (([rx("1", 5000, lv="03")], "H2"), ([rx("1", 100, lv="03")], "H2"),
                       ([rx(str(n), 1_000_000) for n in range(3)], "H1")):
        result, env = wp.settle(term, items, who=card(psn), extra=ACCT)
        assert env.infcode == 0
        metrics.observe_tx(result.facts, 0.001)
    text = metrics.render().decode()
    assert 'yb_settlement_amount_fen_total{kind="pharmacy",part="acct"} 35000.0' in text
    assert 'yb_limit_bound_total{limit="account_balance"} 2.0' in text
    assert 'yb_limit_bound_total{limit="person_year"} 1.0' in text
    assert 'yb_warnings_total{code="PERSON_YEAR_CAP_REACHED"} 1.0' in text


def _handler_request(world: World, term: Any, psn: str, codes: tuple[str, ...], extra: dict[str, Any]) -> Any:
    """A decoded 2102 whose line carries traceability `codes`, ready for the handler."""
    from gateway.core.handlers import Request
    from protocol import decode_frame, decode_request_envelope, fingerprint, parse_request_input
    mid = world.next_msgid(P1, T0_MS)
    items = [{**rx("1", 3000), "drug_trac_codg": list(codes)}]
    fields = world.card_fields(term, mid, "2102", 3000, card(psn))
    frame = term.request_frame("2102", mid, {**fields, "medfee_sumamt": 3000, "items": items, **extra}, T0_MS)
    env = decode_request_envelope(decode_frame(frame).body)
    typed = parse_request_input(env)
    return Request(env, world.core.state.overlay.institutions[P1], world.core.sessions.get(env.sign_no), typed,
                   fingerprint(env.infno, env.input), T0_MS)


def test_the_payer_rules_come_before_traceability(wp: World) -> None:
    from gateway.core.config import Rejection
    from gateway.core.handlers import HANDLERS
    term = wp.sign_in()
    held = HANDLERS["2102"](wp.core.view, _handler_request(wp, term, "PSN1", ("TC-1",), {}))
    wp.commit(held.record)
    for payer, code in (("NOLINK", "MUTUAL_AID_NOT_AUTHORIZED"), ("PBLK", "PERSON_INELIGIBLE"),
                        ("OWN1", "TRACE_CODE_REUSED")):
        with pytest.raises(Rejection) as caught:
            HANDLERS["2102"](wp.core.view, _handler_request(wp, term, "MEM1", ("TC-1",),
                                                            {"acct_used_flag": "1", "acct_payer_psn_no": payer}))
        assert caught.value.code.wire == code, payer
    with pytest.raises(Rejection) as caught:       # a blocked payer without a link: blocked first
        HANDLERS["2102"](wp.core.view, _handler_request(wp, term, "H1", (), {"acct_used_flag": "1",
                                                                            "acct_payer_psn_no": "PBLK"}))
    assert caught.value.code.wire == "PERSON_INELIGIBLE"


def test_an_unlink_keeps_its_day_through_snapshots_and_replay(wp: World) -> None:
    core = wp.core
    change = {"kind": "family.unlink", "owner": "OWN1", "member": "MEM1"}
    proposal = wp.commit(core.propose_change(change, T0_MS, actor="a", role="policy"))
    wp.commit(core.approve_change(proposal.id, T0_MS + DAY_MS, actor="b", role="policy"))
    links = core.state.overlay.family_links[("OWN1", "MEM1")]
    assert [str(link.valid_to) for link in links] == ["2024-03-16"]
    wp.assert_replay_and_restore()
    restored = wp.make_core()
    restored.restore(_wire_round_trip(core.snapshot()))
    assert restored.state.overlay.family_links[("OWN1", "MEM1")] == links
