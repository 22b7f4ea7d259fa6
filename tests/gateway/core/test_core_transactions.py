"""Conformance of a real Core to SPEC section 7 (the transactions: the split, allowances, caps,
warnings, kinds, vouchers, cancel, reversal, reconciliation), for rules no other core test pins."""

from __future__ import annotations

import pytest

from core_world import C1, P1, P2, T0_MS, World, card, line
from protocol import limits
from wire_helpers import DAY_MS, ok_output


# -- section 7: settlement arithmetic -----------------------------------------------------------------

def test_self_pay_first_rounds_up_and_fund_rounds_down(world: World) -> None:
    t = world.sign_in()
    env = world.settle(t, [line("1", 1001, lv="02", otc=False, rxno="R")])[1]
    info, cut = ok_output(env)["setlinfo"], env.output["detlcutinfo"][0]
    # preselfpay = ceil(1001 * 100 / 1000) = 101; inscp = 900; rx_pay = floor(900 * 700 / 1000) = 630.
    assert (cut["preselfpay_amt"], cut["inscp_scp_amt"], cut["fulamt_ownpay_amt"], cut["cut_reason"]) == \
        (101, 900, 0, "")
    assert (info["rx_pay"], info["psn_cash_pay"]) == (630, 371)
    odd = ok_output(world.settle(t, [line("1", 999, otc=False, rxno="R")], who=card("P3", insutype="390"))[1])
    assert odd["setlinfo"]["rx_pay"] == 499   # floor(999 * 500 / 1000)


def test_settlement_output_layout(world: World) -> None:
    t = world.sign_in()
    mid = world.next_msgid(P1, T0_MS)
    env = world.settle(t, [line("1", 1000), line("2", 500, lv="03")], msgid_=mid)[1]
    info = ok_output(env)["setlinfo"]
    assert {"setl_id", "mdtrt_id", "psn_no", "insutype", "insuplc_admdvs", "setl_time", "medfee_sumamt",
            "fulamt_ownpay_amt", "preselfpay_amt", "inscp_scp_amt", "fund_pay_sumamt", "otc_pay", "rx_pay",
            "acct_pay", "psn_cash_pay", "crt_payb_lmt_amt", "person_day_remaining",
            "institution_month_remaining", "bound_by", "medins_setl_id"} <= set(info)
    assert info["medins_setl_id"] == mid and info["acct_pay"] == 0 and info["setl_time"] == T0_MS
    assert (info["fulamt_ownpay_amt"], info["inscp_scp_amt"], info["psn_cash_pay"]) == (500, 1000, 500)
    assert env.output["detlcutinfo"][1] == {"feedetl_sn": "2", "fulamt_ownpay_amt": 500, "preselfpay_amt": 0,
                                            "inscp_scp_amt": 0, "cut_reason": "", "overlmt_amt": 0,
                                            "chrgitm_lv": "03", "otc": True, "drug_trac_codg": []}
    # SPEC 13's keys are always present: with no catalogue, pooling or account, as v1 would pay.
    assert {key: info[key] for key in ("overlmt_selfpay", "act_pay_dedc", "person_year_pool_remaining",
                                       "psn_part_amt", "acct_mulaid_pay", "acct_payer_psn_no", "balc")} == {
        "overlmt_selfpay": 0, "act_pay_dedc": 0, "person_year_pool_remaining": None, "psn_part_amt": 500,
        "acct_mulaid_pay": 0, "acct_payer_psn_no": None, "balc": None}
    pre = ok_output(world.settle(t, [line("1", 1000)], infno="2101")[1])["setlinfo"]
    assert "setl_id" not in pre and "mdtrt_id" not in pre


@pytest.mark.parametrize("dev_no, grade, allowance_fen", [("T1", None, 12000), ("T2", None, 6000),
                                                          ("T2", "B", 9000), ("T2", "D", 6000), ("T2", "E", 6000)])
def test_allowance_follows_the_grade(world: World, dev_no: str, grade: str | None, allowance_fen: int) -> None:
    if grade is not None:
        world.commit(world.core.admin_apply({"kind": "institution.grade", "institution": P2, "grade": grade}, T0_MS))
    t = world.sign_in(dev_no)
    mid = world.next_msgid(t.fixmedins_code, T0_MS)
    out = ok_output(world.send(t, "1101", world.card_fields(t, mid, "1101", 0, card("Q1")), msgid_=mid)[1])
    assert (out["otc_allowance_day"], out["otc_used_day"], out["otc_remaining_day"]) == (allowance_fen, 0,
                                                                                         allowance_fen)
    assert out["cross_province"] is False


def test_allowance_exactly_used_is_not_bound_but_warns_reached(world: World) -> None:
    t = world.sign_in()
    env = world.settle(t, [line("1", 12000)])[1]
    info = ok_output(env)["setlinfo"]
    assert (info["otc_pay"], info["bound_by"], info["person_day_remaining"]) == (12000, [], 0)
    assert env.warnings == ("PERSON_DAY_LIMIT_REACHED",)


def test_day_warning_thresholds_and_warning_when_the_bill_adds_nothing(world: World) -> None:
    t = world.sign_in()
    assert world.settle(t, [line("1", 9599)], infno="2101")[1].warnings == ()
    ok_output(world.settle(t, [line("1", 12000)])[1])
    env = world.settle(t, [line("1", 100, lv="03")])[1]
    assert ok_output(env)["setlinfo"]["fund_pay_sumamt"] == 0 and env.warnings == ("PERSON_DAY_LIMIT_REACHED",)


def test_month_near_cap_warning_at_ninety_percent(world: World) -> None:
    t = world.sign_in("T2")   # P2: cap 20 000 fen, grade C (6 000 a day)
    for who in ("M1", "M2"):
        ok_output(world.settle(t, [line("1", 6000)], who=card(who))[1])
    below = world.settle(t, [line("1", 5999)], who=card("M3"), infno="2101")[1]
    assert below.warnings == ("PERSON_DAY_NEAR_LIMIT",)   # month: 17 999 of 20 000 is under 90 %
    env = world.settle(t, [line("1", 6000)], who=card("M3"), infno="2101")[1]
    assert env.warnings == ("PERSON_DAY_LIMIT_REACHED", "INSTITUTION_MONTH_NEAR_CAP")
    assert env.output["setlinfo"]["institution_month_remaining"] == 2000


def test_clinic_bound_by_month_and_no_day_warnings(tmp_path) -> None:
    world = World(tmp_path)
    world.commit(world.core.admin_apply({"kind": "institution.monthly_cap", "institution": C1, "monthly_cap_fen": 1000}, T0_MS))
    t = world.sign_in("T3")
    env = world.settle(t, [line("1", 20000)], infno="2207")[1]
    info = ok_output(env)["setlinfo"]
    assert (info["fund_pay_sumamt"], info["otc_pay"], info["rx_pay"], info["bound_by"]) == \
        (1000, 0, 1000, ["institution_month"])
    assert env.warnings == ("INSTITUTION_MONTH_CAP_REACHED",)


def test_doctor_suspended_cut_applies_at_clinics_too(world: World) -> None:
    world.commit(world.core.admin_apply({"kind": "operator.enrol", "code": "DRC", "institution": C1}, T0_MS))
    world.commit(world.core.admin_apply({"kind": "operator.suspend", "operator": "DRC"}, T0_MS))
    t = world.sign_in("T3")
    env = world.settle(t, [line("1", 1000, otc=False, dr="DRC"), line("2", 1000, otc=False)], infno="2206")[1]
    cuts = [c["cut_reason"] for c in ok_output(env)["detlcutinfo"]]
    assert cuts == ["DOCTOR_SUSPENDED", ""] and env.warnings == ("DOCTOR_SUSPENDED",)


@pytest.mark.parametrize("dev_no, infno", [("T3", "2102"), ("T3", "2101"), ("T1", "2206"), ("T1", "2207"),
                                           ("T1", "2208")])
def test_settlement_infnos_follow_the_institution_kind(world: World, dev_no: str, infno: str) -> None:
    t = world.sign_in(dev_no)
    assert world.settle(t, [line("1", 100)], infno=infno)[1].err_code == "WRONG_INSTITUTION_KIND"


def test_suspended_clinic_may_sign_in_and_reconcile_but_not_settle(world: World) -> None:
    world.commit(world.core.admin_apply({"kind": "institution.suspend", "institution": C1}, T0_MS))
    t = world.sign_in("T3")
    assert world.send(t, "3202", {"stmt_date": "20240315", "limit": 5})[1].infcode == 0
    for infno in ("2206", "2207"):
        assert world.settle(t, [line("1", 100)], infno=infno)[1].err_code == "INSTITUTION_SUSPENDED"


def test_kind_is_checked_before_suspension(world: World) -> None:
    world.commit(world.core.admin_apply({"kind": "institution.suspend", "institution": P1}, T0_MS))
    t = world.sign_in()
    assert world.settle(t, [line("1", 100)], infno="2207")[1].err_code == "WRONG_INSTITUTION_KIND"


def test_person_blocked_is_checked_before_filing(world: World) -> None:
    t = world.sign_in()
    assert world.settle(t, [line("1", 100)], who=card("PBLK", admdvs="440100"))[1].err_code == "PERSON_INELIGIBLE"


def test_cross_province_applies_to_person_info(world: World) -> None:
    t = world.sign_in()
    mid = world.next_msgid(P1, T0_MS)
    unfiled = world.card_fields(t, mid, "1101", 0, card("Y1", admdvs="440100"))
    assert world.send(t, "1101", unfiled, msgid_=mid)[1].err_code == "CROSS_PROVINCE_NOT_FILED"
    mid = world.next_msgid(P1, T0_MS)
    filed = world.card_fields(t, mid, "1101", 0, card("X001", admdvs="440100"))
    assert ok_output(world.send(t, "1101", filed, msgid_=mid)[1])["cross_province"] is True


# -- section 7: vouchers ----------------------------------------------------------------------------

def test_queries_and_pre_settlements_do_not_use_up_a_voucher(world: World) -> None:
    t = world.sign_in()
    token = world.voucher()
    assert ok_output(world.send(t, "1101", token)[1])["psn_no"] == "PSN9"
    assert world.settle(t, [line("1", 100)], infno="2101", cert=token)[1].infcode == 0
    assert world.settle(t, [line("1", 100)], cert=token)[1].infcode == 0
    assert world.settle(t, [line("1", 100)], cert=token)[1].err_code == "VOUCHER_ALREADY_USED"


# -- section 7: cancel, reversal, reconciliation -----------------------------------------------------

def test_cancel_output_is_flat_and_negated(world: World) -> None:
    t = world.sign_in()
    info = ok_output(world.settle(t, [line("1", 1000), line("2", 2000, otc=False, rxno="R")])[1])["setlinfo"]
    out = ok_output(world.send(t, "2103", {"setl_id": info["setl_id"], "psn_no": "PSN1"}, now_ms=T0_MS + 1000)[1])
    assert out == {"setl_id": info["setl_id"], "cancel_time": T0_MS + 1000, "medfee_sumamt": -3000,
                   "fund_pay_sumamt": -info["fund_pay_sumamt"], "psn_cash_pay": -info["psn_cash_pay"],
                   "otc_pay": -1000, "rx_pay": -1400, "acct_pay": 0, "act_pay_dedc": 0}


def test_only_the_settling_institution_may_cancel(world: World) -> None:
    t1, t2 = world.sign_in("T1"), world.sign_in("T2")
    info = ok_output(world.settle(t1, [line("1", 1000)])[1])["setlinfo"]
    assert world.send(t2, "2103", {"setl_id": info["setl_id"], "psn_no": "PSN1"})[1].err_code == \
        "SETTLEMENT_NOT_FOUND"


def test_reversal_input_rules(world: World) -> None:
    t = world.sign_in()
    mid = world.next_msgid(P1, T0_MS)
    ok_output(world.settle(t, [line("1", 1000)], msgid_=mid)[1])
    for oinfno in ("2101", "1101", "2601", "9001"):
        assert world.send(t, "2601", {"omsgid": mid, "oinfno": oinfno})[1].err_code == "MALFORMED_INPUT"
    assert world.send(t, "2601", {"omsgid": mid, "oinfno": "2103"})[1].err_code == "SETTLEMENT_NOT_FOUND"
    assert world.send(t, "2601", {"omsgid": mid, "oinfno": "2102"})[1].infcode == 0


def test_clinic_reversal_of_a_settlement(world: World) -> None:
    t = world.sign_in("T3")
    mid = world.next_msgid(C1, T0_MS)
    ok_output(world.settle(t, [line("1", 1000, otc=False)], infno="2207", msgid_=mid)[1])
    assert ok_output(world.send(t, "2601", {"omsgid": mid, "oinfno": "2207"})[1]) == {"reversed": True,
                                                                                "original_found": True}
    assert world.core.state.ledger.institution_month_used(C1, world.core.state.settlements.get(
        world.core.view.setl_id(1)).month) == 0


def test_totals_balance_only_on_standing_settlements(world: World) -> None:
    t = world.sign_in()
    kept = ok_output(world.settle(t, [line("1", 1000)])[1])["setlinfo"]
    gone = ok_output(world.settle(t, [line("1", 3000)], who=card("PSN2"))[1])["setlinfo"]
    ok_output(world.send(t, "2103", {"setl_id": gone["setl_id"], "psn_no": "PSN2"})[1])
    theirs = {"stmt_date": "20240315", "setl_cnt": 1, "medfee_sumamt": 1000,
              "fund_pay_sumamt": kept["fund_pay_sumamt"], "psn_cash_pay": kept["psn_cash_pay"]}
    out = ok_output(world.send(t, "3201", theirs)[1])
    assert out["stmt_rslt"] == "0" and out["gateway"] == {**{k: v for k, v in theirs.items() if k != "stmt_date"},
                                                          "acct_pay": 0}
    assert ok_output(world.send(t, "3201", {**theirs, "setl_cnt": 2})[1])["stmt_rslt"] == "1"


def test_detail_last_page_has_nil_next(world: World) -> None:
    t = world.sign_in()
    ids = [ok_output(world.settle(t, [line("1", 100)], who=card(f"D{i}"))[1])["setlinfo"]["setl_id"] for i in range(3)]
    page = ok_output(world.send(t, "3202", {"stmt_date": "20240315", "limit": 2})[1])
    assert [r["setl_id"] for r in page["rows"]] == ids[:2] and page["next"] == ids[1]
    last = ok_output(world.send(t, "3202", {"stmt_date": "20240315", "after": page["next"], "limit": 2})[1])
    assert [r["setl_id"] for r in last["rows"]] == ids[2:] and last["next"] is None
    exact = ok_output(world.send(t, "3202", {"stmt_date": "20240315", "limit": 3})[1])
    assert exact["next"] is None


def test_limits_are_the_spec_numbers() -> None:
    assert (limits.AMOUNT_FEN_MAX, limits.ITEMS_MAX, limits.DETAIL_LIMIT_MAX) == (10**10, 200, 500)
    assert (limits.FRESH_PAST_MS, limits.FRESH_FUTURE_MS) == (DAY_MS, 300_000)


def test_reversing_a_cancelled_settlement_gives_back_nothing_twice(world: World) -> None:
    t = world.sign_in()
    mid = world.next_msgid(P1, T0_MS)
    info = ok_output(world.settle(t, [line("1", 3000)], msgid_=mid)[1])["setlinfo"]
    ok_output(world.send(t, "2103", {"setl_id": info["setl_id"], "psn_no": "PSN1"})[1])
    assert ok_output(world.send(t, "2601", {"omsgid": mid, "oinfno": "2102"})[1])["original_found"] is True
    ledger = world.core.state.ledger
    month = world.core.state.settlements.get(info["setl_id"]).month
    assert ledger.person_day_used("PSN1", 19797) == 0 and ledger.institution_month_used(P1, month) == 0
    out = ok_output(world.send(t, "3201", {"stmt_date": "20240315", "setl_cnt": 0, "medfee_sumamt": 0,
                                     "fund_pay_sumamt": 0, "psn_cash_pay": 0})[1])
    assert out["stmt_rslt"] == "0"


def test_reversed_settlement_is_out_of_totals(world: World) -> None:
    t = world.sign_in()
    mid = world.next_msgid(P1, T0_MS)
    ok_output(world.settle(t, [line("1", 3000)], msgid_=mid)[1])
    ok_output(world.send(t, "2601", {"omsgid": mid, "oinfno": "2102"})[1])
    out = ok_output(world.send(t, "3201", {"stmt_date": "20240315", "setl_cnt": 0, "medfee_sumamt": 0,
                                     "fund_pay_sumamt": 0, "psn_cash_pay": 0})[1])
    assert out == {"stmt_rslt": "0", "gateway": {"setl_cnt": 0, "medfee_sumamt": 0, "fund_pay_sumamt": 0,
                                                 "psn_cash_pay": 0, "acct_pay": 0}}


def test_both_limits_bind_at_once(tmp_path) -> None:
    world = World(tmp_path, p2_cap_fen=5000)
    t = world.sign_in("T2")   # grade C: 6 000 a day; cap 5 000
    env = world.settle(t, [line("1", 8000), line("2", 2000, otc=False, rxno="R")])[1]
    info = ok_output(env)["setlinfo"]
    # otc wanted min(8 000, 6 000) = 6 000, rx 1 400; room 5 000: rx cut to 0, otc to 5 000.
    assert (info["otc_pay"], info["rx_pay"], info["fund_pay_sumamt"]) == (5000, 0, 5000)
    assert info["bound_by"] == ["person_day", "institution_month"]
    assert (info["crt_payb_lmt_amt"], info["person_day_remaining"], info["institution_month_remaining"]) == \
        (6000, 1000, 0)
    assert info["psn_cash_pay"] == 5000


def test_cancel_next_day_gives_back_to_the_settlement_day(world: World) -> None:
    last_ms = 1_710_518_399_999   # 2024-03-15 23:59:59.999 Shanghai
    t = world.sign_in(now_ms=last_ms)
    info = ok_output(world.settle(t, [line("1", 12000)], now_ms=last_ms)[1])["setlinfo"]
    next_ms = last_ms + 1000
    ok_output(world.settle(t, [line("1", 2000)], now_ms=next_ms)[1])
    ok_output(world.send(t, "2103", {"setl_id": info["setl_id"], "psn_no": "PSN1"}, now_ms=next_ms)[1])
    mid = world.next_msgid(P1, next_ms)
    out = ok_output(world.send(t, "1101", world.card_fields(t, mid, "1101", 0, card()), now_ms=next_ms, msgid_=mid)[1])
    assert (out["otc_used_day"], out["otc_remaining_day"]) == (2000, 10000)


def test_person_day_usage_counts_across_pharmacies_against_each_ones_grade(world: World) -> None:
    t1, t2 = world.sign_in("T1"), world.sign_in("T2")   # grades A (12 000) and C (6 000)
    ok_output(world.settle(t1, [line("1", 6000)], who=card("G1"))[1])
    info = ok_output(world.settle(t2, [line("1", 1000)], who=card("G1"))[1])["setlinfo"]
    assert (info["crt_payb_lmt_amt"], info["otc_pay"], info["bound_by"]) == (0, 0, ["person_day"])
