"""The simulator's supervision checks: the monthly report against the oracle, and the year-earlier clock."""

from __future__ import annotations

import datetime
from typing import Any

from sim_helpers import NOON_MS, setlinfo
from protocol import SHANGHAI
from simulators.oracle import Oracle
from simulators.supervision import MonthlyCheck, year_earlier_ms, yoy_lines

P1, P2 = "P51018200001", "P51018200002"


class FakeLink:
    """Answers GET /admin/v1/reports/monthly from a dict of month -> rows."""

    def __init__(self, months: dict[str, list[dict[str, Any]]]) -> None:
        self.months = months

    async def get(self, path: str) -> tuple[int, Any]:
        month = path.split("month=")[1][:6]
        return 200, {"month": month, "by": "institution", "rows": self.months.get(month, [])}


def _oracle() -> Oracle:
    oracle = Oracle({P1: 12000, P2: 12000}, {P1: 10**9, P2: 10**9})
    for n, (code, psn, medfee, fund) in enumerate([(P1, "A", 1000, 700), (P1, "B", 2001, 1000), (P2, "A", 500, 0)]):
        oracle.on_settle("t", code, f"M{n}", setlinfo(f"S{n}", psn, medfee, fund, 0, 12000), medfee, b"x",
                         oracle.tick(), oracle.tick())
    return oracle


def _row(code: str, cnt: int, psn: int, medfee: int, fund: int, cash: int, **more: Any) -> dict[str, Any]:
    return {"key": code, "setl_cnt": cnt, "psn_cnt": psn, "medfee_fen": medfee, "fund_fen": fund, "cash_fen": cash,
            **more}


async def test_monthly_report_equal_to_baseline_plus_oracle_passes() -> None:
    history = _row(P2, 4, 3, 10000, 5000, 5000)
    link = FakeLink({"202511": [history]})
    check = MonthlyCheck(link)  # type: ignore[arg-type]
    assert await check.take_baseline(["202511"])
    link.months["202511"] = [_row(P1, 2, 2, 3001, 1700, 1301), _row(P2, 5, 99, 10500, 5000, 5500)]
    oracle = _oracle()
    await check.check(oracle)
    # P2 had history: its distinct persons cannot be summed, so psn_cnt is not compared there.
    assert oracle.violations == [] and check.checked == 2


async def test_monthly_report_differences_are_violations() -> None:
    link = FakeLink({})
    check = MonthlyCheck(link)  # type: ignore[arg-type]
    assert await check.take_baseline(["202511"])
    link.months["202511"] = [_row(P1, 2, 1, 3001, 1700, 1301), _row(P2, 1, 1, 501, 0, 500)]
    oracle = _oracle()
    await check.check(oracle)
    assert len(oracle.violations) == 2
    assert oracle.violations[0].startswith(f"monthly report 202511 {P1}: gateway") and "psn_cnt" in oracle.violations[0]


def test_year_on_year_lines_check_last_years_average() -> None:
    history, oracle = _oracle(), Oracle({}, {})
    rows = {"202611": {P1: _row(P1, 1, 1, 2000, 0, 2000, avg_bill_fen=2000, avg_bill_last_year_fen=1500,
                                avg_bill_yoy_permille=1333),
                       P2: _row(P2, 1, 1, 500, 0, 500, avg_bill_fen=500, avg_bill_last_year_fen=None,
                                avg_bill_yoy_permille=None)}}
    alerts = [{"code": "AVG_BILL_OVER_LAST_YEAR", "subject": P1, "detail": {}}]
    lines = yoy_lines(history, rows, {}, oracle, alerts)
    assert oracle.violations == [f"monthly report 202611 {P2}: avg_bill_last_year_fen None, history run 500"]
    assert "1333 per mille" in lines[1] and lines[-1] == f"AVG_BILL_OVER_LAST_YEAR alerts today: 1 ({P1})"


def test_year_earlier_keeps_the_shanghai_wall_clock() -> None:
    def shanghai(ms: int) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(ms / 1000, tz=SHANGHAI)

    assert shanghai(year_earlier_ms(NOON_MS)).isoformat() == "2024-11-23T12:00:00+08:00"
    leap = int(datetime.datetime(2028, 2, 29, 23, 59, tzinfo=SHANGHAI).timestamp() * 1000)
    assert shanghai(year_earlier_ms(leap)).isoformat() == "2027-02-28T23:59:00+08:00"
