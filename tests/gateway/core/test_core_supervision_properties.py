"""Hypothesis: after random settlements, cancellations, reversals and time steps, the supervision figures
equal a recomputation from the settlements that stand, and replay and restore reproduce them."""

from __future__ import annotations

import collections
from typing import Any

from hypothesis import HealthCheck, given, settings, strategies as st

from core_world import C1, P1, P2, T0_MS, World, card, line
from gateway.core.clock import business_day, first_day_of_month
from gateway.core.supervision_report import alerts_body, clearing_body, monthly_body

INSTITUTIONS = {P1: ("T1", "OP1"), P2: ("T2", "OP2"), C1: ("T3", "OPC")}
PERSONS = ["H1", "H2", "H3", "H4"]
DOCTORS = ["OP1", "D2", "D3"]
DAY_MS = 86_400_000
SETTLEMENT_DAYS_KEPT = 62

command = st.one_of(
    st.tuples(st.just("settle"), st.sampled_from(sorted(INSTITUTIONS)), st.sampled_from(PERSONS),
              st.lists(st.tuples(st.integers(1, 60000), st.booleans(), st.sampled_from(["01", "02", "03"]),
                                 st.sampled_from(DOCTORS)), min_size=1, max_size=3),
              st.booleans()),
    st.tuples(st.just("cancel"), st.integers(0, 50)),
    st.tuples(st.just("reverse"), st.integers(0, 50)),
    st.tuples(st.just("reverse_cancel"), st.integers(0, 50)),
    st.tuples(st.just("advance"), st.sampled_from([1, 3_600_000, 9 * 3_600_000, DAY_MS, 10 * DAY_MS, 31 * DAY_MS])),
)


def _ownpay(item: dict[str, Any]) -> int:
    fee = item["det_item_fee_sumamt"]
    return {"01": 0, "02": -(-fee * 100 // 1000), "03": fee}[item["chrgitm_lv"]]


def _expected_rows(standing: list[Any], facts: dict[str, dict[str, Any]], month: int, by: str) -> list[dict]:
    groups: dict[str, list[tuple[Any, int, int]]] = collections.defaultdict(list)
    for s in standing:
        if s.month != month:
            continue
        items = facts[s.setl_id]["items"]
        if by == "doctor":
            per_doctor: dict[str, list[int]] = {}
            for item in items:
                sums = per_doctor.setdefault(item["bilg_dr_codg"], [0, 0])
                sums[0] += item["det_item_fee_sumamt"]
                sums[1] += _ownpay(item)
            for doctor, (medfee, ownpay) in per_doctor.items():
                groups[doctor].append((s, medfee, ownpay))
        else:
            key = s.institution if by == "institution" else INSTITUTIONS[s.institution][1]
            groups[key].append((s, s.medfee_sumamt, sum(_ownpay(item) for item in items)))
    rows = []
    for key, members in sorted(groups.items()):
        cnt, medfee, ownpay = len(members), sum(m[1] for m in members), sum(m[2] for m in members)
        settlements = [m[0] for m in members]
        doctor = by == "doctor"
        bound = {limit: sum(limit in facts[s.setl_id]["bound_by"] for s in settlements)
                 for limit in ("person_day", "institution_month", "person_year")}
        rows.append({
            "key": key, "setl_cnt": cnt, "psn_cnt": len({s.psn_no for s in settlements}), "medfee_fen": medfee,
            "fund_fen": None if doctor else sum(s.fund_pay_sumamt for s in settlements),
            "acct_fen": None if doctor else 0,
            "cash_fen": None if doctor else sum(s.psn_cash_pay for s in settlements),
            "ownpay_fen": ownpay, "avg_bill_fen": medfee // cnt,
            "selfpay_permille": ownpay * 1000 // medfee if medfee else 0,
            "voucher_permille": None if doctor else sum(facts[s.setl_id]["voucher"] for s in settlements) * 1000 // cnt,
            "bound": None if doctor else bound, "avg_bill_last_year_fen": None, "avg_bill_yoy_permille": None})
    return rows


def _expected_alerts(standing: list[Any], day: int) -> list[tuple[str, str, Any]]:
    at: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    large = []
    for s in standing:
        if s.day == day:
            at[s.psn_no][s.institution] += 1
            if s.medfee_sumamt >= 100_000:
                large.append(s.setl_id)
    return ([("MULTI_INSTITUTION_DAY", psn, sorted(at[psn].items())) for psn in sorted(at) if len(at[psn]) >= 3]
            + [("LARGE_BILL", setl_id, None) for setl_id in sorted(large)])


def _settlements_at(alert: dict[str, Any]) -> Any:
    """A MULTI_INSTITUTION_DAY alert's (institution, settlements) pairs."""
    if alert["code"] != "MULTI_INSTITUTION_DAY":
        return None
    return [(row["institution"], row["setl_cnt"]) for row in alert["detail"]["institutions"]]


def _check(world: World, facts: dict[str, dict[str, Any]], now_ms: int) -> None:
    state = world.core.state
    standing = state.settlements.standing()
    today = business_day(now_ms)
    oldest_kept_day = today - SETTLEMENT_DAYS_KEPT + 1
    for month in state.supervision.months:
        if first_day_of_month(month) < oldest_kept_day:
            continue    # some of its settlements have left the settlement store: nothing to recompute from
        for by in ("institution", "doctor", "operator"):
            assert monthly_body(state, f"{month:06d}", by)["rows"] == _expected_rows(standing, facts, month, by), by
        clearing = [(r["institution"], r["setl_cnt"], r["fund_fen"])
                    for r in clearing_body(state, f"{month:06d}")["rows"]]
        assert clearing == [(r["key"], r["setl_cnt"], r["fund_fen"])
                            for r in _expected_rows(standing, facts, month, "institution")]
    for day in {s.day for s in standing} | {today}:
        if day >= oldest_kept_day:
            date = _date(day)
            got = [(a["code"], a["subject"], _settlements_at(a)) for a in alerts_body(state, date)["alerts"]
                   if a["code"] in ("MULTI_INSTITUTION_DAY", "LARGE_BILL")]
            assert got == _expected_alerts(standing, day), date


def _date(day: int) -> str:
    import datetime
    return (datetime.date(1970, 1, 1) + datetime.timedelta(days=day)).strftime("%Y%m%d")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(command, min_size=1, max_size=30))
def test_aggregates_equal_a_recomputation_from_standing_settlements(tmp_path_factory, commands) -> None:
    world = World(tmp_path_factory.mktemp("s"), session_ttl_s=10**8, p2_cap_fen=10**7)
    now_ms = T0_MS
    terms = {code: world.sign_in(dev, opter, now_ms) for code, (dev, opter) in INSTITUTIONS.items()}
    facts: dict[str, dict[str, Any]] = {}
    settled: list[tuple[str, str, dict[str, Any]]] = []      # (institution, msgid, setlinfo)
    cancels: list[tuple[str, str]] = []                        # (institution, cancel msgid)
    for cmd in commands:
        if cmd[0] == "settle":
            _, institution, psn, lines, voucher = cmd
            items = [line(str(n), fee, lv=lv, otc=otc, rxno=None if otc else "R", dr=doctor)
                     for n, (fee, otc, lv, doctor) in enumerate(lines)]
            cert = world.voucher(psn, org=institution, now_ms=now_ms, tid=f"t{world.serial}") if voucher else None
            _, env = world.settle(terms[institution], items, who=card(psn), now_ms=now_ms, cert=cert,
                                  infno="2207" if institution == C1 else "2102")
            assert env.infcode == 0, env
            info = env.output["setlinfo"]
            facts[info["setl_id"]] = {"items": items, "voucher": voucher, "bound_by": info["bound_by"]}
            settled.append((institution, env.msgid, info))
        elif cmd[0] in ("cancel", "reverse") and settled:
            institution, mid, info = settled[cmd[1] % len(settled)]
            if cmd[0] == "cancel":
                infno = "2208" if institution == C1 else "2103"
                _, env = world.send(terms[institution], infno, {"setl_id": info["setl_id"], "psn_no": info["psn_no"]},
                                    now_ms)
                if env.infcode == 0:
                    cancels.append((institution, env.msgid))
            else:
                oinfno = "2207" if institution == C1 else "2102"
                world.send(terms[institution], "2601", {"omsgid": mid, "oinfno": oinfno}, now_ms)
        elif cmd[0] == "reverse_cancel" and cancels:
            institution, mid = cancels[cmd[1] % len(cancels)]
            world.send(terms[institution], "2601", {"omsgid": mid, "oinfno": "2208" if institution == C1 else "2103"},
                       now_ms)
        elif cmd[0] == "advance":
            now_ms += cmd[1]
        _check(world, facts, now_ms)
    world.assert_replay_and_restore()
