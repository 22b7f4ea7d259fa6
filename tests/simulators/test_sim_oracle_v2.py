"""The oracle's SPEC 13 checks pass hand-made right answers and catch each kind of forged one:
a wrong cut, a wrong over-cap amount, wrong warnings, a sold code that was held, a refusal with
nothing held; under concurrency, cancellations and reversals."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from sim_helpers import NOON_MS
from v2_helpers import CODE, RULES, RX, line

from simulators.oracle import Oracle
from simulators.oracle_v2 import V2Oracle
from simulators.trace_codes import CodeSalt

DAY_MS = 86_400_000


@dataclasses.dataclass(frozen=True)
class Place:
    code: str
    kind: str


PHARMACY, OTHER_PHARMACY = Place("P51018200001", "pharmacy"), Place("P51018200002", "pharmacy")
CLINIC = Place("C51018200001", "clinic")
CODE2 = "12345670000000000002"


def oracle(mode: str = "full", rules: Any = RULES) -> Oracle:
    return Oracle({}, {}, v2=V2Oracle(mode, rules))


def numbered(*items: dict) -> list[dict]:
    return [{**item, "feedetl_sn": str(n)} for n, item in enumerate(items, start=1)]


# The protocol guide's worked example, answered by hand (grade-A pharmacy, employee, coverage 70 %).
EXAMPLE = numbered(line("X1", 1000), line("X2", 2000, **RX), line("X3", 500), line("X9", 300))


def cut_row(sn: str, reason: str, own: int, over: int, first: int, scope: int, lv: str, otc: bool,
            codes: list[str] | None = None) -> dict[str, Any]:
    return {"feedetl_sn": sn, "cut_reason": reason, "fulamt_ownpay_amt": own, "overlmt_amt": over,
            "preselfpay_amt": first, "inscp_scp_amt": scope, "chrgitm_lv": lv, "otc": otc,
            "drug_trac_codg": codes or []}


def example_answer() -> dict[str, Any]:
    return {"infcode": 0, "err_code": "", "err_msg": "success", "warnings": [
        "RESTRICTED_USE", "NOT_IN_CATALOGUE", "CATALOGUE_OVERRIDE", "PERSON_DAY_NEAR_LIMIT"], "output": {
        "detlcutinfo": [cut_row("1", "", 0, 0, 0, 1000, "01", True), cut_row("2", "", 0, 500, 300, 1200, "02", False),
                        cut_row("3", "RESTRICTED_USE", 500, 0, 0, 0, "01", True),
                        cut_row("4", "NOT_IN_CATALOGUE", 300, 0, 0, 0, "01", True)],
        "setlinfo": {"setl_id": "S1", "psn_no": "P1", "insutype": "310", "setl_time": NOON_MS,
                     "medfee_sumamt": 3800, "fulamt_ownpay_amt": 800, "preselfpay_amt": 300, "inscp_scp_amt": 2200,
                     "overlmt_selfpay": 500, "otc_pay": 1000, "rx_pay": 840, "fund_pay_sumamt": 1840,
                     "psn_cash_pay": 1960}}}


def check(o: Oracle, answer: dict, items: list[dict] = EXAMPLE, place: Place = PHARMACY, infno: str = "2101") -> None:
    sent = o.tick()
    o.v2.on_answer(infno, "a", place, items, answer, sent, o.tick())


def test_the_worked_example_answered_right_passes() -> None:
    o = oracle()
    check(o, example_answer())
    check(o, example_answer(), infno="2102")
    assert o.violations == [] and o.v2.counts["bills"] == 1 and o.v2.counts["not in catalogue"] == 1


def forged(change: Any) -> dict[str, Any]:
    answer = example_answer()
    change(answer)
    return answer


def rows(answer: dict) -> list[dict]:
    return answer["output"]["detlcutinfo"]


@pytest.mark.parametrize(("what", "change", "caught"), [
    ("a restricted line paid", lambda a: rows(a)[2].update(cut_reason="", fulamt_ownpay_amt=0, inscp_scp_amt=500),
     ["line 3 cut as"]),
    ("the cut reason of another rule", lambda a: rows(a)[3].update(cut_reason="RX_REQUIRED"), ["line 4 cut as"]),
    ("the cap ignored", lambda a: rows(a)[1].update(overlmt_amt=0, preselfpay_amt=400, inscp_scp_amt=1600),
     ["line 2 cut as"]),
    ("the till's class used", lambda a: rows(a)[1].update(chrgitm_lv="01"), ["line 2 cut as"]),
    ("otc as a string", lambda a: rows(a)[0].update(otc="1"), ["line 1 cut as"]),
    ("a line missing", lambda a: rows(a).pop(), ["detlcutinfo"]),
    ("overlmt_selfpay wrong", lambda a: a["output"]["setlinfo"].update(overlmt_selfpay=0), ["line sums"]),
    ("CATALOGUE_OVERRIDE missing", lambda a: a["warnings"].remove("CATALOGUE_OVERRIDE"), ["line warnings"]),
    ("a cut reason twice", lambda a: a["warnings"].insert(1, "RESTRICTED_USE"), ["line warnings"]),
    ("cut reasons out of order", lambda a: a["warnings"].reverse(), ["line warnings"]),
    ("otc_pay over the OTC lines", lambda a: a["output"]["setlinfo"].update(otc_pay=1100, rx_pay=740),
     ["over the lines' in-scope"]),
    ("rx_pay over the coverage", lambda a: a["output"]["setlinfo"].update(otc_pay=900, rx_pay=941),
     ["over the lines' in-scope"]),
])
def test_forged_line_answers_are_caught(what: str, change: Any, caught: list[str]) -> None:
    o = oracle()
    check(o, forged(change))
    assert len(o.violations) == len(caught), (what, o.violations)
    assert all(c in v for c, v in zip(caught, o.violations, strict=True)), (what, o.violations)


def test_clinic_fund_is_held_to_the_lines_in_scope() -> None:
    items = numbered(line("X1", 1000))
    answer = {"infcode": 0, "err_code": "", "warnings": [], "output": {
        "detlcutinfo": [cut_row("1", "", 0, 0, 0, 1000, "01", True)],
        "setlinfo": {"setl_time": NOON_MS, "insutype": "390", "overlmt_selfpay": 0, "fulamt_ownpay_amt": 0,
                     "preselfpay_amt": 0, "inscp_scp_amt": 1000, "otc_pay": 0, "rx_pay": 500, "fund_pay_sumamt": 500}}}
    o = oracle()
    check(o, answer, items, CLINIC, "2206")
    assert o.violations == []
    answer["output"]["setlinfo"].update(rx_pay=501, fund_pay_sumamt=501)
    check(o, answer, items, CLINIC, "2206")
    assert len(o.violations) == 1 and "at most 500" in o.violations[0]


def test_approval_and_codes_are_read_as_sent_only_in_full_mode() -> None:
    items = numbered(line("X3", 500, hosp_appr_flag="1", drug_trac_codg=[CODE]))
    cut = [cut_row("1", "RESTRICTED_USE", 500, 0, 0, 0, "01", True)]
    paid = [cut_row("1", "", 0, 0, 0, 500, "01", True, [CODE])]
    sums_cut = {"overlmt_selfpay": 0, "fulamt_ownpay_amt": 500, "preselfpay_amt": 0, "inscp_scp_amt": 0}
    sums_paid = {"overlmt_selfpay": 0, "fulamt_ownpay_amt": 0, "preselfpay_amt": 0, "inscp_scp_amt": 500}

    def answer(detl: list[dict], sums: dict, warnings: list[str]) -> dict:
        return {"infcode": 0, "err_code": "", "warnings": warnings, "output": {"detlcutinfo": detl, "setlinfo": {
            "setl_time": NOON_MS, "insutype": "310", "otc_pay": 0, "rx_pay": 0, "fund_pay_sumamt": 0, **sums}}}

    ignoring, reading = oracle("catalogue"), oracle("full")
    check(ignoring, answer(cut, sums_cut, ["RESTRICTED_USE"]), items)
    check(reading, answer(paid, sums_paid, []), items)
    assert ignoring.violations == [] and reading.violations == []
    check(ignoring, answer(paid, sums_paid, []), items)
    check(reading, answer(cut, sums_cut, ["RESTRICTED_USE"]), items)
    assert len(ignoring.violations) == 3 and len(reading.violations) == 3  # the line, its warning, the sums


def test_off_checks_nothing() -> None:
    o = oracle("off", None)
    check(o, {"infcode": 0, "err_code": "", "output": {"setlinfo": {}}})
    assert o.violations == [] and o.v2.summary_lines() == ["v2 checks off"]
    with pytest.raises(ValueError, match="line rules"):
        V2Oracle("full", None)
    with pytest.raises(ValueError, match="one of"):
        V2Oracle("partly", RULES)


# Traceability: a bill of one X1 line carrying codes.
def coded(*codes: str, split: bool = False) -> list[dict]:
    return numbered(line("X1", 1000, cnt=len(codes), drug_trac_codg=list(codes), **({"trdn_flag": "1"} if split else {})))


def paid(items: list[dict], setl_id: str = "", at_ms: int = NOON_MS) -> dict[str, Any]:
    item = items[0]
    return {"infcode": 0, "err_code": "", "err_msg": "success", "warnings": [], "output": {
        "detlcutinfo": [cut_row("1", "", 0, 0, 0, item["det_item_fee_sumamt"], "01", True, item["drug_trac_codg"])],
        "setlinfo": {"setl_id": setl_id, "setl_time": at_ms, "insutype": "310", "overlmt_selfpay": 0,
                     "fulamt_ownpay_amt": 0, "preselfpay_amt": 0, "inscp_scp_amt": item["det_item_fee_sumamt"],
                     "otc_pay": 0, "rx_pay": 0, "fund_pay_sumamt": 0}}}


REUSED = {"infcode": -2, "err_code": "TRACE_CODE_REUSED", "err_msg": "line 1: traceability code was already sold",
          "warnings": [], "output": {}}


def sell(o: Oracle, msgid: str, items: list[dict], setl_id: str, place: Place = PHARMACY,
         answer: dict | None = None, at_ms: int = NOON_MS) -> None:
    """A 2102 sent and answered before anything else happens."""
    sent = o.tick()
    o.v2.on_settle_sent(place, msgid, items, sent)
    o.v2.on_answer("2102", msgid, place, items, answer or paid(items, setl_id, at_ms), sent, o.tick(), msgid=msgid)


def presettle(o: Oracle, items: list[dict], answer: dict, place: Place = OTHER_PHARMACY) -> None:
    check(o, answer, items, place, "2101")


def cancel(o: Oracle, setl_id: str, msgid: str = "c1", answered: bool = True) -> None:
    o.v2.on_cancel_sent(PHARMACY.code, setl_id, msgid, o.tick())
    if answered:
        o.v2.on_cancelled(PHARMACY.code, setl_id, o.tick())


def test_a_code_sold_twice_must_be_refused() -> None:
    o = oracle()
    sell(o, "m1", coded(CODE, CODE2), "S1")
    presettle(o, coded(CODE2), REUSED)
    assert o.violations == [] and o.v2.counts["resold codes"] == 1
    presettle(o, coded(CODE2), paid(coded(CODE2)))
    sell(o, "m2", coded(CODE), "S2", OTHER_PHARMACY)
    assert len(o.violations) == 2 and all("held by standing settlement S1" in v for v in o.violations)


def test_a_refusal_with_nothing_held_is_caught() -> None:
    o = oracle()
    presettle(o, coded(CODE), REUSED)
    sell(o, "m1", coded(CODE), "S1", answer={**REUSED})   # the 2102 itself is no holder of its codes
    assert len(o.violations) == 2 and all("no settlement may have held" in v for v in o.violations)


def test_a_settlement_in_flight_may_or_may_not_hold() -> None:
    for answer in (REUSED, paid(coded(CODE))):
        o = oracle()
        first = o.tick()
        o.v2.on_settle_sent(PHARMACY, "m1", coded(CODE), first)
        resale = o.tick()
        o.v2.on_answer("2102", "m1", PHARMACY, coded(CODE), paid(coded(CODE), "S1"), first, o.tick(), msgid="m1")
        o.v2.on_answer("2101", "r", OTHER_PHARMACY, coded(CODE), answer, resale, o.tick())
        assert o.violations == [], answer


def test_cancellation_releases_and_a_cancel_in_flight_is_either() -> None:
    o = oracle()
    sell(o, "m1", coded(CODE), "S1")
    sent = o.tick()
    cancel(o, "S1")
    o.v2.on_answer("2101", "during", OTHER_PHARMACY, coded(CODE), REUSED, sent, o.tick())
    presettle(o, coded(CODE), paid(coded(CODE)))
    assert o.violations == []
    presettle(o, coded(CODE), REUSED)
    assert len(o.violations) == 1 and "no settlement may have held" in o.violations[0]


def test_a_reversed_settlement_releases_its_codes() -> None:
    o = oracle()
    sent = o.tick()
    o.v2.on_settle_sent(PHARMACY, "m1", coded(CODE), sent)
    o.v2.on_answer("2102", "unseen", PHARMACY, coded(CODE), paid(coded(CODE), "S1"), sent, o.tick(), msgid="m1",
                   seen=False)
    presettle(o, coded(CODE), paid(coded(CODE)))    # never sure: it is being reversed
    reversal = o.tick()
    o.v2.on_reversal(PHARMACY.code, "m1", reversal, o.tick())
    presettle(o, coded(CODE), paid(coded(CODE)))
    assert o.violations == []
    presettle(o, coded(CODE), REUSED)
    assert len(o.violations) == 1


def test_a_reinstated_cancellation_holds_again() -> None:
    o = oracle()
    sell(o, "m1", coded(CODE), "S1")
    cancel(o, "S1", "c1", answered=False)          # its outcome stayed unknown: the POS reverses it
    presettle(o, coded(CODE), paid(coded(CODE)))
    reversal = o.tick()
    o.v2.on_reversal(PHARMACY.code, "c1", reversal, o.tick())
    presettle(o, coded(CODE), REUSED)
    assert o.violations == []
    presettle(o, coded(CODE), paid(coded(CODE)))
    assert len(o.violations) == 1 and "held by standing settlement S1" in o.violations[0]


def test_split_packages_clinics_and_refused_settlements_hold_nothing() -> None:
    o = oracle()
    sell(o, "m1", coded(CODE, split=True), "S1")
    sell(o, "m2", coded(CODE2), "S2", CLINIC)
    sell(o, "m3", coded(CODE2), "", answer={"infcode": -2, "err_code": "PERSON_INELIGIBLE", "output": {}})
    presettle(o, coded(CODE), paid(coded(CODE)))
    presettle(o, coded(CODE2), paid(coded(CODE2)))
    sell(o, "m4", coded(CODE), "S4")
    presettle(o, coded(CODE, split=True), paid(coded(CODE, split=True)))  # a split code is never checked
    assert o.violations == []
    presettle(o, coded(CODE2), REUSED)
    assert len(o.violations) == 1


def test_a_code_older_than_the_retention_may_be_sold_again() -> None:
    o = oracle(rules=dataclasses.replace(RULES, trace_retention_days=30))
    sell(o, "m1", coded(CODE), "S1", at_ms=NOON_MS - 31 * DAY_MS)
    presettle(o, coded(CODE), paid(coded(CODE)))
    assert o.violations == []


def test_refusal_text_and_a_gateway_that_reads_no_codes() -> None:
    o = oracle()
    sell(o, "m1", coded(CODE), "S1")
    presettle(o, coded(CODE), {**REUSED, "err_msg": "line 1: code already sold by settlement S1"})
    assert len(o.violations) == 1 and "names another settlement" in o.violations[0]
    blind = oracle("catalogue")
    presettle(blind, coded(CODE), REUSED)
    assert len(blind.violations) == 1 and "does not read traceability codes" in blind.violations[0]


def test_code_salt_is_a_bijection_keeping_the_product() -> None:
    salt = CodeSalt(12345)
    codes = [f"1234567{n:013d}" for n in range(1000)] + ["99999999999999999999"]
    fresh = [salt.code(c) for c in codes]
    assert len(set(fresh)) == len(codes) and all(f[:7] == c[:7] and len(f) == 20 for f, c in zip(fresh, codes))
    assert fresh[0] != codes[0] and salt.code("ABC") == "ABC" and CodeSalt(12345).code(CODE) == salt.code(CODE)
    items = salt.items([line("X1", 1, drug_trac_codg=[CODE]), line("X2", 1)])
    assert items[0]["drug_trac_codg"] == [salt.code(CODE)] and items[1] == line("X2", 1)
