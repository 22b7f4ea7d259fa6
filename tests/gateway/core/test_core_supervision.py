"""Supervision (SPEC 14) in the core: every figure computed by hand from the settlements made here."""

from __future__ import annotations

import datetime
import pathlib
from typing import Any

import msgpack
import pytest

from core_world import C1, P1, P2, T0_MS, World, card, line
from gateway.core import FieldError, from_wire, parse_registry
from gateway.core import supervision as sup
from gateway.core.records import AlertRecord
from gateway.core.supervision_report import (
    alerts_body, clearing_body, csv_rows, monthly_body, parse_by, parse_date, parse_month,
)

SHANGHAI = datetime.timezone(datetime.timedelta(hours=8))
DAY_MS = 86_400_000


def at(*when: int) -> int:
    """Unix ms of a Shanghai wall-clock time (year, month, day[, hour, minute, second, ms])."""
    *parts, ms = (*when, 0, 0, 0, 0)[:7] if len(when) < 7 else when
    return int(datetime.datetime(*parts, tzinfo=SHANGHAI).timestamp() * 1000) + ms


class Till:
    """The test region's three tills, each with its own operator, and a settle helper."""

    def __init__(self, world: World, now_ms: int = T0_MS) -> None:
        self.world = world
        self.terms = {P1: world.sign_in("T1", "OP1", now_ms), P2: world.sign_in("T2", "OP2", now_ms),
                      C1: world.sign_in("T3", "OPC", now_ms)}

    def settle(self, institution: str, lines: list[dict[str, Any]], psn_no: str = "A1", now_ms: int = T0_MS,
               voucher: bool = False) -> dict[str, Any]:
        world = self.world
        cert = world.voucher(psn_no, org=institution, now_ms=now_ms, tid=f"t{world.serial}") if voucher else None
        infno = "2207" if institution == C1 else "2102"
        result, env = world.settle(self.terms[institution], lines, who=card(psn_no), infno=infno, now_ms=now_ms,
                                   cert=cert)
        assert env.infcode == 0, env
        return {"msgid": env.msgid, **env.output["setlinfo"]}

    def cancel(self, institution: str, info: dict[str, Any], now_ms: int = T0_MS) -> None:
        infno = "2208" if institution == C1 else "2103"
        _, env = self.world.send(self.terms[institution], infno,
                                 {"setl_id": info["setl_id"], "psn_no": info["psn_no"]}, now_ms)
        assert env.infcode == 0, env

    def reverse(self, institution: str, info: dict[str, Any], oinfno: str = "2102", now_ms: int = T0_MS
                ) -> dict[str, Any]:
        _, env = self.world.send(self.terms[institution], "2601", {"omsgid": info["msgid"], "oinfno": oinfno},
                                 now_ms)
        assert env.infcode == 0, env
        return env.output


@pytest.fixture
def long_world(tmp_path: pathlib.Path) -> World:
    return World(tmp_path, session_ttl_s=10**8)


def _rows(world: World, month: str, by: str) -> dict[str, dict[str, Any]]:
    return {row["key"]: row for row in monthly_body(world.core.state, month, by)["rows"]}


def _row(setl_cnt: int, psn_cnt: int, medfee: int, fund: int | None, cash: int | None, ownpay: int, avg: int,
         selfpay: int, voucher: int | None, bound: tuple[int, int, int] | None, acct: int | None = 0,
         last: int | None = None, yoy: int | None = None) -> dict[str, Any]:
    return {"setl_cnt": setl_cnt, "psn_cnt": psn_cnt, "medfee_fen": medfee, "fund_fen": fund, "acct_fen": acct,
            "cash_fen": cash, "ownpay_fen": ownpay, "avg_bill_fen": avg, "selfpay_permille": selfpay,
            "voucher_permille": voucher,
            "bound": None if bound is None else dict(zip(("person_day", "institution_month", "person_year"), bound)),
            "avg_bill_last_year_fen": last, "avg_bill_yoy_permille": yoy}


def _without_key(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {key: {k: v for k, v in row.items() if k != "key"} for key, row in rows.items()}


def _month_of_settlements(long_world: World) -> tuple[Till, dict[str, dict[str, Any]]]:
    till = Till(long_world)
    made = {
        # 10000 = 3000 甲 + 5000 乙 (preselfpay ceil(500)) + 2000 丙: fund 7500 (OTC), cash 2500, own-pay 2500.
        "s1": till.settle(P1, [line("1", 3000), line("2", 5000, lv="02", dr="DRX"), line("3", 2000, lv="03")]),
        # An e-voucher bill of 1001, all 甲 OTC: fund 1001.
        "s2": till.settle(P1, [line("1", 1001)], psn_no="V1", voucher=True),
        # A1 has 4500 of the 12000 allowance left: fund 4500, cash 3500, bound person_day.
        "s3": till.settle(P1, [line("1", 8000)]),
        "s4": till.settle(P1, [line("1", 500)], psn_no="A3"),         # cancelled below
        "s5": till.settle(P1, [line("1", 700)], psn_no="A4"),         # reversed below
        # P2 (grade C, 6000 a day, cap 20000): A5 gets 6000 of 30000 (bound person_day).
        "s6": till.settle(P2, [line("1", 30000)], psn_no="A5"),
        # A6's prescription: rx 21000 wanted, 14000 of the month left: bound institution_month.
        "s7": till.settle(P2, [line("1", 30000, otc=False, rxno="R1")], psn_no="A6"),
        # A1 at P2: day used 12000 >= 6000, month used up: fund 0, bound person_day only.
        "s9": till.settle(P2, [line("1", 100)]),
        # Clinic: 乙 10000 (preselfpay 1000), fund floor(9000 * 700 / 1000) = 6300, cash 3700.
        "s8": till.settle(C1, [line("1", 10000, lv="02", otc=False, dr="DRC")]),
    }
    till.cancel(P1, made["s4"])
    till.reverse(P1, made["s5"])
    return till, made


def test_monthly_report_by_institution_doctor_and_operator_by_hand(long_world: World) -> None:
    _, made = _month_of_settlements(long_world)
    assert [(made[s]["fund_pay_sumamt"], made[s]["psn_cash_pay"], made[s]["bound_by"])
            for s in ("s1", "s2", "s3", "s6", "s7", "s9", "s8")] == [
        (7500, 2500, []), (1001, 0, []), (4500, 3500, ["person_day"]), (6000, 24000, ["person_day"]),
        (14000, 16000, ["institution_month"]), (0, 100, ["person_day"]), (6300, 3700, [])]
    p1 = _row(3, 2, 19001, 13001, 6000, 2500, 19001 // 3, 2500 * 1000 // 19001, 1000 // 3, (1, 0, 0))
    p2 = _row(3, 3, 60100, 20000, 40100, 0, 60100 // 3, 0, 0, (2, 1, 0))
    c1 = _row(1, 1, 10000, 6300, 3700, 1000, 10000, 100, 0, (0, 0, 0))
    assert (p1["avg_bill_fen"], p1["selfpay_permille"], p1["voucher_permille"], p2["avg_bill_fen"]) == (
        6333, 131, 333, 20033)
    assert _without_key(_rows(long_world, "202403", "institution")) == {P1: p1, P2: p2, C1: c1}
    assert _without_key(_rows(long_world, "202403", "operator")) == {"OP1": p1, "OP2": p2, "OPC": c1}
    # Doctors: a settlement counts once per doctor on its lines, with that doctor's lines' sums.
    # OP1 billed s1 (lines 1 and 3: 5000, own-pay 2000), s2, s3, s6, s7, s9.
    op1_medfee = 5000 + 1001 + 8000 + 30000 + 30000 + 100
    assert _without_key(_rows(long_world, "202403", "doctor")) == {
        "OP1": _row(6, 4, op1_medfee, None, None, 2000, op1_medfee // 6, 2000 * 1000 // op1_medfee, None, None,
                    acct=None),
        "DRX": _row(1, 1, 5000, None, None, 500, 5000, 100, None, None, acct=None),
        "DRC": _row(1, 1, 10000, None, None, 1000, 10000, 100, None, None, acct=None),
    }
    body = monthly_body(long_world.core.state, "202403", "institution")
    assert (body["month"], body["by"], [row["key"] for row in body["rows"]]) == ("202403", "institution",
                                                                                  sorted([P1, P2, C1]))
    assert monthly_body(long_world.core.state, "202402", "institution")["rows"] == []


def test_clearing_lists_settled_and_held_institutions(long_world: World) -> None:
    _month_of_settlements(long_world)
    long_world.commit(long_world.core.admin_apply({"kind": "institution.hold", "institution": C1}, T0_MS,
                                                   actor="otto", role="operator", reason="audit"))
    assert clearing_body(long_world.core.state, "202403") == {"month": "202403", "rows": [
        {"institution": C1, "setl_cnt": 1, "medfee_fen": 10000, "fund_fen": 6300, "acct_fen": 0, "held": True},
        {"institution": P1, "setl_cnt": 3, "medfee_fen": 19001, "fund_fen": 13001, "acct_fen": 0, "held": False},
        {"institution": P2, "setl_cnt": 3, "medfee_fen": 60100, "fund_fen": 20000, "acct_fen": 0, "held": False}]}
    # A month without settlements still lists the institutions on hold; a release ends it.
    assert clearing_body(long_world.core.state, "202401")["rows"] == [
        {"institution": C1, "setl_cnt": 0, "medfee_fen": 0, "fund_fen": 0, "acct_fen": 0, "held": True}]
    long_world.commit(long_world.core.admin_apply({"kind": "institution.release", "institution": C1}, T0_MS))
    assert clearing_body(long_world.core.state, "202401")["rows"] == []
    audit = long_world.core.state.governance.audit
    assert [(e["action"], e["before"], e["after"]) for e in list(audit)[-2:]] == [
        ("institution.hold", {"held": False}, {"held": True}), ("institution.release", {"held": True}, {"held": False})]


def test_a_hold_does_not_stop_settlement(long_world: World) -> None:
    till = Till(long_world)
    long_world.commit(long_world.core.admin_apply({"kind": "institution.hold", "institution": P1}, T0_MS))
    assert till.settle(P1, [line("1", 100)])["fund_pay_sumamt"] == 100


def test_month_boundary_is_shanghai_midnight(long_world: World) -> None:
    last_of_march, first_of_april = at(2024, 3, 31, 23, 59, 59, 999), at(2024, 4, 1)
    till = Till(long_world, last_of_march)
    till.settle(P1, [line("1", 1000)], now_ms=last_of_march)
    till.settle(P1, [line("1", 3000)], psn_no="A2", now_ms=first_of_april)
    assert _rows(long_world, "202403", "institution")[P1]["medfee_fen"] == 1000
    assert _rows(long_world, "202404", "institution")[P1]["medfee_fen"] == 3000
    assert alerts_body(long_world.core.state, "20240331")["alerts"] == []
    assert long_world.core.state.supervision.days[sup.business_day(first_of_april)].institutions == {P1: [1, 3000]}


def test_year_on_year_average_bill_and_its_alert(long_world: World) -> None:
    last_year = at(2023, 3, 10, 9)
    till = Till(long_world, last_year)
    till.settle(P1, [line("1", 1000)], now_ms=last_year)
    till.settle(P1, [line("1", 2001)], psn_no="A2", now_ms=last_year)       # last year: floor(3001 / 2) = 1500
    till.settle(P2, [line("1", 2000)], psn_no="A3", now_ms=last_year)       # P2 last year: 2000
    gone = till.settle(C1, [line("1", 5000, otc=False)], psn_no="A4", now_ms=last_year)
    till.cancel(C1, gone, now_ms=last_year)                                   # C1 has no standing bill last year
    till.settle(P1, [line("1", 1700)], now_ms=at(2024, 3, 1, 9))
    till.settle(P1, [line("1", 1701)], psn_no="A2", now_ms=T0_MS)          # this March: floor(3401 / 2) = 1700
    till.settle(P2, [line("1", 2100)], psn_no="A3", now_ms=T0_MS)          # 2100 * 1000 = 1050 * 2000: not over
    till.settle(C1, [line("1", 900, otc=False)], psn_no="A4", now_ms=T0_MS)
    rows = _rows(long_world, "202403", "institution")
    assert (rows[P1]["avg_bill_last_year_fen"], rows[P1]["avg_bill_yoy_permille"]) == (1500, 1700 * 1000 // 1500)
    assert (rows[P2]["avg_bill_last_year_fen"], rows[P2]["avg_bill_yoy_permille"]) == (2000, 1050)
    assert (rows[C1]["avg_bill_last_year_fen"], rows[C1]["avg_bill_yoy_permille"]) == (None, None)
    assert _rows(long_world, "202303", "institution")[P1]["avg_bill_fen"] == 1500
    alerts = [a for a in alerts_body(long_world.core.state, "20240315")["alerts"]
              if a["code"] == "AVG_BILL_OVER_LAST_YEAR"]
    assert alerts == [{"code": "AVG_BILL_OVER_LAST_YEAR", "subject": P1, "detail": {
        "from": "20240301", "through": "20240315", "setl_cnt": 2, "medfee_fen": 3401, "avg_bill_fen": 1700,
        "last_year_month": "202303", "avg_bill_last_year_fen": 1500, "avg_bill_yoy_permille": 1133,
        "max_permille": 1050}}]
    # On the 1st only the first bill counts: 1700 * 1000 > 1500 * 1050 as well.
    first = alerts_body(long_world.core.state, "20240301")["alerts"]
    assert [(a["subject"], a["detail"]["setl_cnt"]) for a in first] == [(P1, 1)]


def test_large_bill_and_multi_institution_alerts_follow_cancellations(long_world: World) -> None:
    till = Till(long_world)
    large = till.settle(P1, [line("1", 100000, otc=False, rxno="R")], psn_no="A9")
    till.settle(P1, [line("1", 99999, otc=False, rxno="R")], psn_no="A8")
    till.settle(P1, [line("1", 100)])
    till.settle(P1, [line("1", 200)])
    till.settle(P2, [line("1", 100)])
    at_clinic = till.settle(C1, [line("1", 100, otc=False)])
    alerts = alerts_body(long_world.core.state, "20240315")["alerts"]
    assert alerts == [
        {"code": "MULTI_INSTITUTION_DAY", "subject": "A1", "detail": {
            "institution_cnt": 3, "threshold": 3, "setl_cnt": 4,
            "institutions": [{"institution": C1, "setl_cnt": 1}, {"institution": P1, "setl_cnt": 2},
                             {"institution": P2, "setl_cnt": 1}]}},
        {"code": "LARGE_BILL", "subject": large["setl_id"], "detail": {
            "setl_id": large["setl_id"], "institution": P1, "psn_no": "A9", "medfee_fen": 100000,
            "setl_time": T0_MS, "threshold_fen": 100000}}]
    till.cancel(C1, at_clinic)
    till.reverse(P1, large)
    assert alerts_body(long_world.core.state, "20240315")["alerts"] == []
    assert alerts_body(long_world.core.state, "20240316")["alerts"] == []


def test_refusal_alert_is_journaled_once_per_subject_and_day(long_world: World, monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    # TRACE_CODE_REUSED is answered by the traceability rules; any refusal exercises the hook.
    monkeypatch.setitem(sup.REFUSAL_ALERTS, "VOUCHER_ALREADY_USED", (sup.TRACE_CODE_REUSE_ATTEMPT, "institution"))
    world = long_world
    term = world.sign_in("T1", "OP1")
    cert = world.voucher("V1", org=P1, tid="once")
    assert world.settle(term, [line("1", 100)], cert=cert)[1].infcode == 0
    records_before = len(world.records)
    result, env = world.settle(term, [line("1", 100)], cert=cert)
    assert env.err_code == "VOUCHER_ALREADY_USED"
    assert isinstance(result.record, AlertRecord) and result.wait_op == result.record.op
    assert len(world.records) == records_before + 1
    result, env = world.settle(term, [line("1", 100)], cert=cert)          # the same day: no second alert
    assert env.err_code == "VOUCHER_ALREADY_USED" and result.record is None
    alerts = alerts_body(world.core.state, "20240315")["alerts"]
    assert [(a["code"], a["subject"]) for a in alerts] == [("TRACE_CODE_REUSE_ATTEMPT", P1)]
    assert {k: alerts[0]["detail"][k] for k in ("err_code", "infno", "institution", "opter", "time")} == {
        "err_code": "VOUCHER_ALREADY_USED", "infno": "2102", "institution": P1, "opter": "OP1", "time": T0_MS}
    world.assert_replay_and_restore()


def test_refusal_alert_subjects_and_evidence(long_world: World) -> None:
    state = long_world.core.state
    institution = state.overlay.institutions[P1]

    class Env:
        msgid, infno, opter, dev_no = "M1", "2102", "OP1", "T1"
        input = {"acct_payer_psn_no": "PAYER"}

    assert sup.refusal_alert(state.supervision, "PERSON_INELIGIBLE", T0_MS, Env(), institution, None) is None
    record = sup.refusal_alert(state.supervision, "MUTUAL_AID_NOT_AUTHORIZED", T0_MS, Env(), institution,
                               {"patient": "KID", "bad": b"x"})
    assert record is not None and (record.code, record.subject) == ("MUTUAL_AID_REFUSED", "PAYER")
    assert record.detail["patient"] == "KID" and "bad" not in record.detail
    by_evidence = sup.refusal_alert(state.supervision, "MUTUAL_AID_NOT_AUTHORIZED", T0_MS, Env(), institution,
                                    {"payer": "OTHER"})
    assert by_evidence is not None and by_evidence.subject == "OTHER"
    trace = sup.refusal_alert(state.supervision, "TRACE_CODE_REUSED", T0_MS, Env(), institution,
                              {"feedetl_sn": "2", "drug_trac_codg": "8123"})
    assert trace is not None and (trace.subject, trace.detail["feedetl_sn"]) == (P1, "2")


def test_account_overdrawn_hook(long_world: World) -> None:
    supervision = long_world.core.state.supervision
    supervision.note_overdrawn(T0_MS, "A1", -300, "S1")
    supervision.note_overdrawn(T0_MS + 1, "A1", -900, "S2")                 # at most one per subject and day
    assert alerts_body(long_world.core.state, "20240315")["alerts"] == [
        {"code": "ACCOUNT_OVERDRAWN", "subject": "A1", "detail": {"balance_fen": -300, "setl_id": "S1",
                                                                   "time": T0_MS}}]


def test_event_alerts_per_day_are_bounded(long_world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sup, "EVENT_ALERTS_PER_DAY_MAX", 3)
    supervision = long_world.core.state.supervision
    for n in range(5):
        supervision.note_overdrawn(T0_MS, f"A{n}", -1, "S")
    assert len(alerts_body(long_world.core.state, "20240315")["alerts"]) == 3
    assert supervision.has_event(T0_MS, sup.ACCOUNT_OVERDRAWN, "A9")


def test_month_closes_keeping_distinct_persons_and_replays(long_world: World) -> None:
    till = Till(long_world)
    till.settle(P1, [line("1", 100)])
    till.settle(P1, [line("1", 100)])
    till.settle(P2, [line("1", 100)], psn_no="A2")
    till.settle(P1, [line("1", 100)], psn_no="A3", now_ms=at(2024, 3, 31, 23))
    till.settle(P2, [line("1", 100)])
    supervision = long_world.core.state.supervision
    march = supervision.months[202403]
    before = monthly_body(long_world.core.state, "202403", "institution")
    # Open until 26 h after the month ended (2024-04-02 02:00 Shanghai); a commit then closes it.
    till.settle(P1, [line("1", 100)], now_ms=at(2024, 4, 2, 1, 59))
    assert march.open and march.rows[0][P1].persons == {"A1": 2, "A3": 1}
    till.settle(P1, [line("1", 100)], now_ms=at(2024, 4, 2, 2))
    assert not march.open and march.rows[0][P1].persons is None and march.rows[0][P1].psn_closed == 2
    assert monthly_body(long_world.core.state, "202403", "institution") == before
    day = supervision.days[sup.business_day(T0_MS)]
    assert day.persons is None and set(day.multi) == {"A1"}
    long_world.assert_replay_and_restore()


def test_months_and_days_are_dropped_past_retention(long_world: World) -> None:
    till = Till(long_world, at(2022, 1, 10))
    till.settle(P1, [line("1", 100)], now_ms=at(2022, 1, 10))
    supervision = long_world.core.state.supervision
    till.settle(P1, [line("1", 100)], now_ms=at(2022, 3, 31, 23))
    assert 202201 in supervision.months and len(supervision.days) == 2
    till.settle(P1, [line("1", 100)], now_ms=at(2022, 4, 1))                  # January's days go, its rows stay
    assert sorted(sup.month_of_day(d) for d in supervision.days) == [202203, 202204]
    till.settle(P1, [line("1", 100)], now_ms=at(2024, 2, 29, 23))            # 25 months after January 2022
    assert 202201 in supervision.months
    till.settle(P1, [line("1", 100)], now_ms=at(2024, 3, 1))
    assert 202201 not in supervision.months and 202203 in supervision.months


def test_restore_of_a_snapshot_without_supervision_recomputes_it(long_world: World) -> None:
    _month_of_settlements(long_world)
    snapshot = long_world.core.snapshot()
    old = {k: v for k, v in snapshot.items() if k != "supervision"}
    restored = long_world.make_core()
    restored.restore(msgpack.unpackb(msgpack.packb(old, use_bin_type=True), raw=False))
    for by in sup.BY_DIMENSIONS:
        assert monthly_body(restored.state, "202403", by) == monthly_body(long_world.core.state, "202403", by)
    assert alerts_body(restored.state, "20240315") == alerts_body(long_world.core.state, "20240315")


def test_settlement_records_written_before_supervision_still_load(long_world: World) -> None:
    till = Till(long_world)
    till.settle(P1, [line("1", 100)])
    record = next(r for r in long_world.records if r.KIND == "settle")
    wire = record.to_wire()
    for key in ("opter", "cert_type", "bound_by", "fulamt_ownpay_amt", "preselfpay_amt", "overlmt_amt",
                "acct_pay", "doctors"):
        del wire["setl"][key]
    fresh = long_world.make_core()
    for earlier in long_world.records:
        fresh.commit(from_wire(wire) if earlier is record else earlier)
    assert _without_key({r["key"]: r for r in monthly_body(fresh.state, "202403", "institution")["rows"]})[P1][
        "setl_cnt"] == 1
    assert monthly_body(fresh.state, "202403", "operator")["rows"] == []
    assert monthly_body(fresh.state, "202403", "doctor")["rows"] == []


def test_replay_and_restore_reproduce_the_aggregates(long_world: World) -> None:
    _month_of_settlements(long_world)
    long_world.assert_replay_and_restore()


@pytest.mark.parametrize("text", ["2024-03", "20243", "202413", "202400", "abcdef", None])
def test_bad_month_names_the_field(text: str | None) -> None:
    with pytest.raises(FieldError) as caught:
        parse_month(text)
    assert caught.value.field == "month"


@pytest.mark.parametrize("text", ["2024031", "20240230", "2024-03-01", None])
def test_bad_date_names_the_field(text: str | None) -> None:
    with pytest.raises(FieldError) as caught:
        parse_date(text)
    assert caught.value.field == "date"


def test_bad_by_names_the_field() -> None:
    with pytest.raises(FieldError) as caught:
        parse_by("pharmacy")
    assert caught.value.field == "by"
    assert parse_month("000112") == 112 and parse_by("doctor") == "doctor"


def test_csv_rows_flatten_bound_and_leave_nil_empty(long_world: World) -> None:
    _month_of_settlements(long_world)
    rows = list(csv_rows(monthly_body(long_world.core.state, "202403", "doctor")))
    assert rows[0] == ["key", "setl_cnt", "psn_cnt", "medfee_fen", "fund_fen", "acct_fen", "cash_fen", "ownpay_fen",
                       "avg_bill_fen", "selfpay_permille", "voucher_permille", "bound_person_day",
                       "bound_institution_month", "bound_person_year", "avg_bill_last_year_fen",
                       "avg_bill_yoy_permille"]
    assert rows[1] == ["DRC", "1", "1", "10000", "", "", "", "1000", "10000", "100", "", "", "", "", "", ""]
    institution = list(csv_rows(monthly_body(long_world.core.state, "202403", "institution")))
    assert institution[1][11:14] == ["0", "0", "0"]
    clearing = list(csv_rows(clearing_body(long_world.core.state, "202403")))
    assert clearing[0] == ["institution", "setl_cnt", "medfee_fen", "fund_fen", "acct_fen", "held"]
    assert clearing[1][-1] == "false"


def test_policy_thresholds_default_and_bounds(long_world: World) -> None:
    policy = long_world.registry.policy
    assert (policy.large_bill_fen, policy.alert_institutions_per_day, policy.avg_bill_yoy_max_permille) == (
        100000, 3, 1050)
    base = {"otc_allowance_fen": {g: 1 for g in "ABCDE"}, "coverage_permille": {}, "selfpay_prop_permille": 1,
            "warn_person_day_permille": 1, "warn_institution_month_permille": 1}
    parsed = parse_registry({"policy": {**base, "large_bill_fen": 5, "alert_institutions_per_day": 2,
                                        "avg_bill_yoy_max_permille": 1200}}, "r.toml").policy
    assert (parsed.large_bill_fen, parsed.alert_institutions_per_day, parsed.avg_bill_yoy_max_permille) == (5, 2, 1200)
    for key, value in (("alert_institutions_per_day", 1), ("large_bill_fen", 0), ("avg_bill_yoy_max_permille", "x")):
        with pytest.raises(ValueError, match=f"policy.{key}"):
            parse_registry({"policy": {**base, key: value}}, "r.toml")


def test_unknown_doctor_keys_beyond_the_bound_count_under_overflow(long_world: World,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sup, "KEYS_PER_MONTH_MAX", 2)
    till = Till(long_world)
    infos = [till.settle(P1, [line("1", 100, dr=f"D{n}")], psn_no=f"A{n}") for n in range(4)]
    till.cancel(P1, infos[3])
    doctors = _rows(long_world, "202403", "doctor")
    assert sorted(doctors) == ["D0", "D1", sup.OVERFLOW_KEY]
    assert (doctors[sup.OVERFLOW_KEY]["setl_cnt"], doctors[sup.OVERFLOW_KEY]["psn_cnt"]) == (1, 1)
