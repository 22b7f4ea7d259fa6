"""The supervision side of a run (SPEC section 14): the monthly report held to the oracle's own sums,
and the year of history that `yibao-sim run --history` settles first under the gateway's test clock.

Monthly report. Before the traffic, the report of every month the run may touch is read (the
gateway's history, like the 3201 baseline); after it, per institution and month, `setl_cnt`,
`medfee_fen`, `fund_fen` and `cash_fen` must equal that baseline plus the oracle's standing
settlements, and `psn_cnt` the oracle's distinct persons where the baseline had no row.

History. The gateway's clock (it must serve with --test-clock) is set to the same Shanghai wall
time one year earlier, a run of the same length and rate (seed + 1, unit prices scaled by
HISTORY_PRICE_PERMILLE) settles there, and the clock is set back to where it was, plus the time
the history took. The main run then finds last year's month in the report: each institution's
`avg_bill_last_year_fen` must be the history run's own floor(medfee / settlements) where the
gateway had nothing else in that month, and AVG_BILL_OVER_LAST_YEAR alerts show.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Iterable, Mapping
from typing import Any

from protocol import SHANGHAI
from simulators.client import GatewayClient
from simulators.oracle import Oracle, Totals

__all__ = ["HISTORY_PRICE_PERMILLE", "AdminLink", "MonthlyCheck", "year_earlier_ms", "yoy_lines"]

# Last year's unit prices, per mille of this year's: averages grow by about 1000/850 - 1 = 18 %,
# above the 105 % rule's threshold, so AVG_BILL_OVER_LAST_YEAR shows.
HISTORY_PRICE_PERMILLE = 850
# The report's figures the oracle can sum, and the 3201 totals field each is.
CHECKED = {"setl_cnt": "setl_cnt", "medfee_fen": "medfee_sumamt", "fund_fen": "fund_pay_sumamt",
           "cash_fen": "psn_cash_pay"}


def year_earlier_ms(now_ms: int) -> int:
    """The same Shanghai wall-clock time one calendar year before `now_ms` (29 Feb -> 28 Feb)."""
    now = datetime.datetime.fromtimestamp(now_ms / 1000, tz=SHANGHAI)
    day = min(now.day, 28) if (now.month, now.day) == (2, 29) else now.day
    return int(now.replace(year=now.year - 1, day=day).timestamp() * 1000)


class AdminLink:
    """The admin API with one admin's bearer token (JSON in and out)."""

    def __init__(self, url: str, token: str) -> None:
        self.client = GatewayClient(url)
        self.token = token

    async def get(self, path: str) -> tuple[int, Any]:
        """GET `path`; (status, decoded JSON or None)."""
        status, body, _ = await self.client.request("GET", path, headers=(("authorization", f"Bearer {self.token}"),))
        return status, _json(body)

    async def post(self, path: str, payload: Mapping[str, Any]) -> tuple[int, Any]:
        """POST a JSON body to `path`; (status, decoded JSON or None)."""
        status, body, _ = await self.client.request(
            "POST", path, json.dumps(payload).encode(),
            headers=(("authorization", f"Bearer {self.token}"), ("content-type", "application/json")))
        return status, _json(body)

    async def aclose(self) -> None:
        await self.client.aclose()


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


@dataclasses.dataclass
class MonthSums:
    """The oracle's standing settlements of one institution in one month: totals and persons."""

    totals: Totals = dataclasses.field(default_factory=Totals)
    persons: set[str] = dataclasses.field(default_factory=set)

    @property
    def avg_bill_fen(self) -> int | None:
        """floor(medfee / settlements), as the report rounds; None without settlements."""
        totals = self.totals
        return totals.medfee_sumamt // totals.setl_cnt if totals.setl_cnt else None


def oracle_months(oracle: Oracle) -> dict[tuple[str, str], MonthSums]:
    """(YYYYMM, institution) -> sums of the settlements the oracle holds as standing."""
    sums: dict[tuple[str, str], MonthSums] = {}
    for settled in oracle.settlements.values():
        if settled.cancelled:
            continue
        month = sums.setdefault((settled.day[:6], settled.institution), MonthSums())
        month.totals = month.totals.plus(Totals(1, settled.medfee_sumamt, settled.fund_pay_sumamt,
                                                settled.psn_cash_pay))
        month.persons.add(settled.psn_no)
    return sums


class MonthlyCheck:
    """GET /admin/v1/reports/monthly before and after the traffic, held to the oracle."""

    def __init__(self, link: AdminLink) -> None:
        self.link = link
        self.baseline: dict[str, dict[str, dict[str, Any]]] = {}
        self.checked = 0
        self.last: dict[str, dict[str, dict[str, Any]]] = {}

    async def rows(self, month: str) -> dict[str, dict[str, Any]] | None:
        """The institution rows of `month` by code; None when the gateway does not answer 200."""
        status, body = await self.link.get(f"/admin/v1/reports/monthly?month={month}&by=institution")
        if status != 200 or not isinstance(body, dict):
            return None
        return {row["key"]: row for row in body["rows"]}

    async def take_baseline(self, months: Iterable[str]) -> bool:
        """Read the report of each month before the traffic; False when the gateway has no such report."""
        for month in sorted(set(months)):
            rows = await self.rows(month)
            if rows is None:
                return False
            self.baseline[month] = rows
        return True

    async def check(self, oracle: Oracle) -> None:
        """Each institution-month: the report equals the baseline plus the oracle's standing settlements."""
        sums = oracle_months(oracle)
        for month in sorted(set(self.baseline) | {m for m, _ in sums}):
            rows = await self.rows(month)
            if rows is None:
                oracle.violation(f"monthly report {month}: refused at the end")
                continue
            self.last[month] = rows
            baseline = self.baseline.get(month, {})
            for code in sorted(set(rows) | set(baseline) | {c for m, c in sums if m == month}):
                self._check_one(oracle, month, code, rows.get(code), baseline.get(code), sums.get((month, code)))

    def _check_one(self, oracle: Oracle, month: str, code: str, row: Mapping[str, Any] | None,
                   before: Mapping[str, Any] | None, ours: MonthSums | None) -> None:
        ours = ours or MonthSums()
        expected = {key: (before or {}).get(key, 0) + getattr(ours.totals, field) for key, field in CHECKED.items()}
        got = {key: (row or {}).get(key, 0) for key in CHECKED}
        if before is None and ours.totals.setl_cnt:
            expected["psn_cnt"], got["psn_cnt"] = len(ours.persons), (row or {}).get("psn_cnt", 0)
        if got != expected:
            oracle.violation(f"monthly report {month} {code}: gateway {got}, oracle {expected}")
        self.checked += 1


def yoy_lines(history: Oracle, rows_by_month: Mapping[str, Mapping[str, Mapping[str, Any]]],
              history_baseline: Mapping[str, Mapping[str, Any]], oracle: Oracle,
              alerts: Iterable[Mapping[str, Any]]) -> list[str]:
    """The year-on-year lines of the summary, checking `avg_bill_last_year_fen` against the history run.

    `history_baseline`: the report rows (by month, then code) the gateway had before the history
    run; where it had none, last year's average must be the history oracle's own.
    """
    last_year = oracle_months(history)
    lines = ["year on year (GET /admin/v1/reports/monthly, by institution)"]
    for month, rows in sorted(rows_by_month.items()):
        previous = f"{int(month) - 100:06d}"
        for code, row in sorted(rows.items()):
            ours = last_year.get((previous, code))
            if ours is not None and code not in history_baseline.get(previous, {}) \
                    and row["avg_bill_last_year_fen"] != ours.avg_bill_fen:
                oracle.violation(f"monthly report {month} {code}: avg_bill_last_year_fen "
                                 f"{row['avg_bill_last_year_fen']}, history run {ours.avg_bill_fen}")
            last = row["avg_bill_last_year_fen"]
            lines.append(f"  {month} {code}  average bill {row['avg_bill_fen'] / 100:8.2f} yuan  last year "
                         + (f"{last / 100:8.2f} yuan  {row['avg_bill_yoy_permille']} per mille" if last is not None
                            else "     (none)"))
    over = [a["subject"] for a in alerts if a["code"] == "AVG_BILL_OVER_LAST_YEAR"]
    listed = f" ({', '.join(sorted(over))})" if over else ""
    lines.append(f"AVG_BILL_OVER_LAST_YEAR alerts today: {len(over)}{listed}")
    return lines
