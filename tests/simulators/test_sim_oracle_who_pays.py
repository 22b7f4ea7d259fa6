"""The oracle's who-pays checks (SPEC 13): a clean history passes; each forged account payment,
payer, mutual-aid answer, deductible, pooled payment and end-of-run balance is caught."""

from __future__ import annotations

from typing import Any

import pytest
from sim_helpers import ALLOWANCE_A_FEN, CAP_FEN, NOON_MS, setlinfo

from simulators.oracle import Oracle, WhoPaysTerms

PHARMACY, NO_POOLING, CLINIC = "P51018200001", "P51018200004", "C51018200001"
PATIENT, OWNER, STRANGER = "5101820000000001", "5101820000000002", "5101820000000003"
DEDUCTIBLE, ANNUAL_CAP = 20_000, 200_000
TERMS = WhoPaysTerms({"310": (DEDUCTIBLE, ANNUAL_CAP)}, frozenset({NO_POOLING}),
                     {(OWNER, PATIENT): (("2024-01-01", "2034-12-31"),)},
                     {PATIENT: 10_000, OWNER: 50_000})
CASH = (False, None)
OWN = (True, None)


def oracle() -> Oracle:
    caps = {PHARMACY: CAP_FEN * 100, NO_POOLING: CAP_FEN * 100, CLINIC: CAP_FEN * 100}
    return Oracle({PHARMACY: ALLOWANCE_A_FEN, NO_POOLING: ALLOWANCE_A_FEN, CLINIC: 0}, caps, who_pays=TERMS)


def info(setl_id: str, medfee: int, rx: int, acct: int = 0, payer: str | None = None, dedc: int = 0,
         psn_no: str = PATIENT, remaining: int | None = None, balc: int | None = None) -> dict[str, Any]:
    """A pharmacy answer with `rx` pooled (no OTC) and `acct` from `payer`'s account."""
    answer = setlinfo(setl_id, psn_no, medfee, rx, 0, 0)
    answer.update(insutype="310", act_pay_dedc=dedc, acct_pay=acct, psn_cash_pay=medfee - rx - acct,
                  psn_part_amt=medfee - rx, acct_payer_psn_no=payer,
                  acct_mulaid_pay=acct if payer not in (None, psn_no) else 0, balc=balc,
                  person_year_pool_remaining=ANNUAL_CAP - rx if remaining is None else remaining)
    return answer


def settle(o: Oracle, setl_id: str, answer: dict[str, Any], paying: tuple[bool, str | None],
           institution: str = PHARMACY) -> None:
    sent = o.tick()
    o.on_settle(setl_id, institution, "M" + setl_id, answer, answer["medfee_sumamt"], b"x", sent, o.tick(), paying)


def test_a_clean_history_passes() -> None:
    o = oracle()
    settle(o, "S1", info("S1", 30_000, 7000, dedc=20_000, acct=10_000, payer=PATIENT, balc=0), OWN)
    settle(o, "S2", info("S2", 5000, 3500, acct=1500, payer=OWNER, balc=48_500, remaining=189_500),
           (True, OWNER))
    settle(o, "S3", info("S3", 1000, 0, remaining=ANNUAL_CAP - 10_500), CASH, institution=NO_POOLING)
    o.on_person_start(PATIENT, {"acct_balance": 10_000, "pool_deductible_remaining": DEDUCTIBLE,
                                "pool_year_remaining": ANNUAL_CAP})
    o.on_person_end(PATIENT, {"acct_balance": 10_000 - 10_000, "pool_deductible_remaining": 0,
                              "pool_year_remaining": ANNUAL_CAP - 10_500})
    assert o.violations == [] and o.mutual_aid["paid"] == 1


@pytest.mark.parametrize("answer, paying, institution, caught", [
    (info("S", 30_000, 0, acct=10_001, payer=PATIENT, balc=-1), OWN, PHARMACY, "at most 10000"),
    (info("S", 30_000, 0, acct=100, payer=OWNER, balc=49_900), OWN, PHARMACY, "acct_payer_psn_no"),
    (info("S", 30_000, 0, acct=100), CASH, PHARMACY, "no account asked for"),
    (info("S", 30_000, 0, acct=100, payer=PATIENT, balc=9900) | {"acct_mulaid_pay": 100}, OWN, PHARMACY,
     "acct_mulaid_pay"),
    (info("S", 30_000, 9000, dedc=20_001), CASH, PHARMACY, "act_pay_dedc 20001"),
    (info("S", 900_000, 200_001), CASH, PHARMACY, "pooled 200001"),
    (info("S", 30_000, 7000, dedc=20_000, remaining=193_001), CASH, PHARMACY, "remaining 193001"),
    (info("S", 30_000, 7000, dedc=20_000), CASH, NO_POOLING, "outside outpatient pooling"),
    (info("S", 30_000, 0) | {"psn_part_amt": 1}, CASH, PHARMACY, "psn_part_amt"),
    (info("S", 30_000, 7000, acct=1000, payer=PATIENT, balc=9000) | {"psn_cash_pay": 22_001}, OWN, PHARMACY,
     "do not add up"),
])
def test_forged_answers_are_caught(answer: dict[str, Any], paying: tuple[bool, str | None], institution: str,
                                   caught: str) -> None:
    o = oracle()
    settle(o, "S", answer, paying, institution)
    assert any(caught in v for v in o.violations), o.violations


def test_the_deductible_and_the_balance_count_what_stood_before() -> None:
    o = oracle()
    settle(o, "S1", info("S1", 15_000, 0, dedc=15_000, acct=5000, payer=PATIENT, balc=5000), OWN)
    settle(o, "S2", info("S2", 30_000, 7000, dedc=5001, acct=5001, payer=PATIENT, balc=-1), OWN)
    assert any("act_pay_dedc 5001" in v for v in o.violations)
    assert any("acct_pay 5001" in v for v in o.violations)


def test_a_settlement_in_flight_with_another_is_not_held_to_it() -> None:
    o = oracle()
    sent_a, sent_b = o.tick(), o.tick()
    o.on_settle("a", PHARMACY, "MA", info("A", 15_000, 0, dedc=15_000, acct=10_000, payer=PATIENT, balc=0),
                15_000, b"a", sent_a, o.tick(), OWN)
    o.on_settle("b", PHARMACY, "MB", info("B", 15_000, 0, dedc=5000, acct=0, payer=PATIENT, balc=0),
                15_000, b"b", sent_b, o.tick(), OWN)
    assert o.violations == []
    o.on_settle("c", PHARMACY, "MC", info("C", 9000, 0, dedc=1, acct=0, payer=PATIENT, balc=0),
                9000, b"c", o.tick(), o.tick(), OWN)
    assert any("act_pay_dedc 1" in v for v in o.violations)    # 20,000 stood before it was sent


def test_mutual_aid_answers() -> None:
    o = oracle()
    o.on_payer_answer("a", PATIENT, STRANGER, "20251123", {"infcode": -2, "err_code": "MUTUAL_AID_NOT_AUTHORIZED"})
    o.on_payer_answer("b", PATIENT, OWNER, "20251123", {"infcode": 0, "err_code": ""})
    o.on_payer_answer("c", PATIENT, STRANGER, "20251123", {"infcode": -2, "err_code": "CARD_BLOCKED"})
    assert o.violations == [] and o.mutual_aid["refused"] == 1
    o.on_payer_answer("d", PATIENT, STRANGER, "20251123", {"infcode": 0, "err_code": ""})
    o.on_payer_answer("e", PATIENT, OWNER, "20251123", {"infcode": -2, "err_code": "MUTUAL_AID_NOT_AUTHORIZED"})
    o.on_payer_answer("f", PATIENT, OWNER, "20350101", {"infcode": 0, "err_code": ""})   # the link ended
    assert [v.split(":")[0] for v in o.violations] == ["d", "e", "f"]


def test_end_of_run_balances_and_years_must_move_by_what_stands() -> None:
    o = oracle()
    o.on_person_start(OWNER, {"acct_balance": 40_000, "pool_deductible_remaining": 0, "pool_year_remaining": 0})
    settle(o, "S1", info("S1", 5000, 0, acct=5000, payer=OWNER, balc=35_000, remaining=0), (True, OWNER))
    settle(o, "S2", info("S2", 5000, 0, acct=5000, payer=OWNER, balc=30_000, remaining=0), (True, OWNER))
    o.on_cancel_sent(PHARMACY, "S2")
    o.on_cancel("c", PHARMACY, "S2", {"medfee_sumamt": -5000, "fund_pay_sumamt": 0, "psn_cash_pay": 0,
                                      "acct_pay": -5000, "act_pay_dedc": 0})
    o.on_person_end(OWNER, {"acct_balance": 35_000, "pool_deductible_remaining": 0, "pool_year_remaining": 0})
    assert o.violations == []
    o.on_person_end(OWNER, {"acct_balance": 30_000, "pool_deductible_remaining": 0, "pool_year_remaining": 0})
    assert any("acct_balance 30000" in v for v in o.violations)
    assert o.people_at_cap() == 1
    settle(o, "S3", info("S3", 40_000, 0, acct=35_001, payer=OWNER, balc=0, remaining=0), (True, OWNER))
    assert any("at most 35000 stood" in v for v in o.violations)
    assert any("standing account payments 40001 over 40000" in v for v in o.violations)
