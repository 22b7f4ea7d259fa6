"""An independent model of what the gateway may commit, fed with every verified answer.

The oracle never trusts the gateway's own counters: it keeps the committed settlements it saw and
checks each new answer against them (SPEC section 7):
- every answer's signature verified against GET /fsi/v1/keys (the terminal reports failures);
- fund_pay_sumamt + psn_cash_pay == medfee_sumamt == Σ det_item_fee_sumamt of the bill;
- at a pharmacy: otc_pay ≤ crt_payb_lmt_amt ≤ max(0, allowance(grade) − the person's standing
  otc_pay that Shanghai day, at any pharmacy);
- per institution per Shanghai month: Σ standing fund_pay_sumamt ≤ monthly_cap_fen;
- a retry of a committed msgid answered with identical bytes;
- a cancellation gives back exactly the settlement's amounts (negated);
- at the end, 3201 per institution balances against the oracle's standing totals.

Settlements made before the run (a gateway with history) only lower the limits the gateway may
grant, so the inequalities still hold; 3201 is checked against a baseline taken at the start.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

from protocol import SHANGHAI


def shanghai_day(ms: int) -> str:
    """The Asia/Shanghai business day of a millisecond timestamp, as YYYYMMDD."""
    return datetime.datetime.fromtimestamp(ms // 1000, tz=SHANGHAI).strftime("%Y%m%d")


@dataclasses.dataclass
class Committed:
    """One settlement the gateway committed, as the oracle saw it."""

    institution: str
    psn_no: str
    setl_id: str
    setl_time_ms: int
    medfee_sumamt: int
    fund_pay_sumamt: int
    psn_cash_pay: int
    otc_pay: int
    rx_pay: int
    cancelled: bool = False


@dataclasses.dataclass
class Totals:
    """3201 totals of one institution for one day."""

    setl_cnt: int = 0
    medfee_sumamt: int = 0
    fund_pay_sumamt: int = 0
    psn_cash_pay: int = 0

    def plus(self, other: Totals) -> Totals:
        """The field-wise sum."""
        return Totals(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other), strict=True)))


class Oracle:
    """Checks committed answers; `violations` lists every broken invariant, one line each."""

    def __init__(self, allowance_fen: Mapping[str, int], monthly_cap_fen: Mapping[str, int]) -> None:
        """`allowance_fen`: institution code -> daily OTC allowance (0 for clinics);
        `monthly_cap_fen`: institution code -> monthly fund cap."""
        self.allowance_fen = dict(allowance_fen)
        self.monthly_cap_fen = dict(monthly_cap_fen)
        self.violations: list[str] = []
        self.settlements: dict[tuple[str, str], Committed] = {}
        self._answers: dict[tuple[str, str], bytes] = {}

    def violation(self, what: str) -> None:
        """Record one broken invariant."""
        self.violations.append(what)

    def person_day_used(self, psn_no: str, day: str) -> int:
        """Standing otc_pay of a person on a Shanghai day, at any pharmacy."""
        return sum(s.otc_pay for s in self.settlements.values()
                   if not s.cancelled and s.psn_no == psn_no and shanghai_day(s.setl_time_ms) == day)

    def institution_month_used(self, institution: str, month: str) -> int:
        """Standing fund_pay_sumamt of an institution in a Shanghai month (YYYYMM)."""
        return sum(s.fund_pay_sumamt for s in self.settlements.values()
                   if not s.cancelled and s.institution == institution
                   and shanghai_day(s.setl_time_ms)[:6] == month)

    def check_amounts(self, where: str, setlinfo: Mapping[str, Any], bill_fen: int) -> None:
        """fund + cash == medfee == the bill's sum; no negative part."""
        medfee, fund, cash = setlinfo["medfee_sumamt"], setlinfo["fund_pay_sumamt"], setlinfo["psn_cash_pay"]
        if medfee != bill_fen or fund + cash != medfee:
            self.violation(f"{where}: amounts do not add up: fund {fund} + cash {cash}, medfee {medfee}, bill {bill_fen}")
        if min(fund, cash, setlinfo["otc_pay"], setlinfo["rx_pay"]) < 0:
            self.violation(f"{where}: negative amount in {dict(setlinfo)}")

    def check_person_day(self, where: str, institution: str, setlinfo: Mapping[str, Any], now_ms: int) -> None:
        """otc_pay ≤ crt_payb_lmt_amt ≤ allowance − the person's earlier standing otc_pay today."""
        allowance = self.allowance_fen.get(institution, 0)
        used = self.person_day_used(setlinfo["psn_no"], shanghai_day(now_ms))
        limit, otc = setlinfo["crt_payb_lmt_amt"], setlinfo["otc_pay"]
        if otc > limit or limit > max(0, allowance - used):
            self.violation(f"{where}: person {setlinfo['psn_no']} otc_pay {otc}, crt_payb_lmt_amt {limit}, "
                           f"allowance {allowance}, used earlier today {used}")

    def on_presettle(self, where: str, institution: str, setlinfo: Mapping[str, Any], bill_fen: int,
                     now_ms: int) -> None:
        """Check a 2101/2206 answer (changes nothing); `now_ms` dates it when setl_time is absent."""
        self.check_amounts(where, setlinfo, bill_fen)
        self.check_person_day(where, institution, setlinfo, setlinfo.get("setl_time", now_ms))

    def on_settle(self, where: str, institution: str, msgid: str, setlinfo: Mapping[str, Any],
                  bill_fen: int, answer: bytes) -> None:
        """Check and record a committed 2102/2207 answer."""
        self.check_amounts(where, setlinfo, bill_fen)
        self.check_person_day(where, institution, setlinfo, setlinfo["setl_time"])
        self._answers[(institution, msgid)] = answer
        settled = Committed(institution, setlinfo["psn_no"], setlinfo["setl_id"], setlinfo["setl_time"],
                            setlinfo["medfee_sumamt"], setlinfo["fund_pay_sumamt"], setlinfo["psn_cash_pay"],
                            setlinfo["otc_pay"], setlinfo["rx_pay"])
        self.settlements[(institution, settled.setl_id)] = settled
        month = shanghai_day(settled.setl_time_ms)[:6]
        used = self.institution_month_used(institution, month)
        if used > self.monthly_cap_fen.get(institution, 0):
            self.violation(f"{where}: institution {institution} month {month} fund {used} "
                           f"over cap {self.monthly_cap_fen.get(institution, 0)}")

    def on_retry(self, where: str, institution: str, msgid: str, answer: bytes) -> None:
        """A resend of a committed msgid must get the first answer byte for byte."""
        first = self._answers.get((institution, msgid))
        if first is not None and first != answer:
            self.violation(f"{where}: retry of {msgid} answered different bytes")

    def on_cancel(self, where: str, institution: str, setl_id: str, output: Mapping[str, Any]) -> None:
        """Check and record a committed 2103/2208 answer."""
        settled = self.settlements.get((institution, setl_id))
        if settled is None or settled.cancelled:
            self.violation(f"{where}: cancel of {setl_id} that is not a standing settlement")
            return
        expected = (-settled.medfee_sumamt, -settled.fund_pay_sumamt, -settled.psn_cash_pay)
        got = (output.get("medfee_sumamt"), output.get("fund_pay_sumamt"), output.get("psn_cash_pay"))
        if got != expected:
            self.violation(f"{where}: cancel of {setl_id} gave back {got}, expected {expected}")
        settled.cancelled = True

    def standing_totals(self, institution: str, day: str) -> Totals:
        """The oracle's 3201 totals: standing settlements of `institution` with setl_time on `day`."""
        totals = Totals()
        for s in self.settlements.values():
            if s.institution == institution and not s.cancelled and shanghai_day(s.setl_time_ms) == day:
                totals = totals.plus(Totals(1, s.medfee_sumamt, s.fund_pay_sumamt, s.psn_cash_pay))
        return totals

    def on_totals(self, institution: str, expected: Totals, stmt_rslt: str, gateway: Mapping[str, Any]) -> None:
        """Check a 3201 answer sent with `expected` (the baseline plus the oracle's standing totals)."""
        got = Totals(gateway["setl_cnt"], gateway["medfee_sumamt"], gateway["fund_pay_sumamt"], gateway["psn_cash_pay"])
        if stmt_rslt != "0" or got != expected:
            self.violation(f"3201 {institution}: stmt_rslt {stmt_rslt!r}, gateway {got}, oracle {expected}")
