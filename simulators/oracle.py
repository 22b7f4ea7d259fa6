"""An independent model of what the gateway may commit, fed with every verified answer.

The oracle never trusts the gateway's own counters: it keeps the committed settlements it saw and
checks each answer against them (SPEC section 7). Terminals run concurrently, so the order in which
the gateway applied two overlapping requests is unknown; every check below holds for any order.

Logical time: `tick()` numbers events. A terminal takes a tick when it first sends a message
(`sent`) and another when its final answer arrives (`received`); a settlement is committed at its
`received` tick, and a cancellation becomes possible from the tick its 2103/2208 is first sent.

Timed-out settlements: the terminal ignores the answer and reverses the msgid (2601). From its
`sent` tick until the 2601 answer the gateway may or may not hold it; after a successful 2601 it
must not. So it never enters the sums below: leaving it out of a lower bound L keeps L a lower
bound, and leaving it out of a sum that must stay under a ceiling can only make that sum smaller.
Its own answer (which the oracle sees, the POS does not) is still checked per answer.

Per answer (2101/2102/2206/2207), with `sent`/`received` ticks:
- fund_pay_sumamt + psn_cash_pay == medfee_sumamt == Σ det_item_fee_sumamt; no negative part;
- at a pharmacy: otc_pay ≤ crt_payb_lmt_amt ≤ max(0, allowance(grade) − L), where L is the
  person's otc_pay that Shanghai day over settlements committed before `sent` and whose
  cancellation had not been sent before `received`. Those were applied before the gateway saw
  this request and still stood when it answered, so L ≤ the usage the gateway had to use;
- fund_pay_sumamt ≤ max(0, monthly_cap − L'), L' the institution's fund that Shanghai month, by
  the same rule.
On the sums (whatever the interleaving):
- per person per Shanghai day: Σ standing otc_pay ≤ the largest allowance among the grades of the
  standing settlements with otc_pay > 0, where standing means committed and no cancellation sent
  (a cancellation in flight, or re-instated by a 2601 without limit checks, may have let the
  gateway grant the room again). Take the one of them the gateway applied last: its otc_pay > 0
  means usage after it was ≤ its grade's allowance, and every other standing one was applied
  before it and still stood, so the standing sum is at most that usage;
- per institution per Shanghai month: Σ standing fund_pay_sumamt ≤ monthly_cap_fen (same argument
  with the cap, which is one per institution).
Others:
- a retry of a committed msgid is answered with identical bytes;
- a cancellation gives back exactly the settlement's amounts (negated), once;
- a 2601 answers `reversed: true`, not `already_reversed` (each msgid is reversed once), and
  `original_found` true exactly when the original's answer was 0 (false when it was a rejection;
  either when it stayed unknown); a resend of a reversed msgid answers -2 ORIGINAL_REVERSED;
- 3201 per institution per day balances: the baseline taken at the start plus the oracle's
  standing totals;
- 3202 pages of each institution and day: at most 200 rows, setl_id ascending, `next` the last
  row's setl_id exactly when more follow; every committed settlement listed with its msgid,
  person, time and amounts and the status the oracle expects, every reversed timed-out one
  likewise with "reversed"; any other row of a settlement this run sent but never saw committed
  is "reversed"; the other settled rows (history) add up to the baseline.

SPEC 13's line cut and traceability codes are checked by `Oracle.v2` (simulators/oracle_v2.py),
which the terminals feed with the lines they sent.

Settlements made before the run (a gateway with history) only raise the usage the gateway counts,
so the inequalities still hold; 3201 and 3202 are checked against the baseline.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from protocol import SHANGHAI
from simulators.oracle_v2 import V2Oracle

DETAIL_PAGE_ROWS_MAX = 200


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
    msgid: str = ""
    committed_tick: int = 0
    cancel_sent_tick: int | None = None
    cancelled: bool = False

    @property
    def day(self) -> str:
        """The Shanghai day of setl_time, YYYYMMDD."""
        return shanghai_day(self.setl_time_ms)

    def stood_through(self, sent_tick: int, received_tick: int) -> bool:
        """True when committed before `sent_tick` and no cancellation was sent before `received_tick`."""
        return self.committed_tick < sent_tick and (self.cancel_sent_tick is None
                                                    or self.cancel_sent_tick > received_tick)


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

    @classmethod
    def of(cls, fields: Mapping[str, Any]) -> Totals:
        """The totals named in a 3201 `gateway` map or a 3202 row (count 1)."""
        count = fields.get("setl_cnt", 1)
        return cls(count, fields["medfee_sumamt"], fields["fund_pay_sumamt"], fields["psn_cash_pay"])


class Oracle:
    """Checks committed answers; `violations` lists every broken invariant, one line each."""

    def __init__(self, allowance_fen: Mapping[str, int], monthly_cap_fen: Mapping[str, int],
                 v2: V2Oracle | None = None) -> None:
        """`allowance_fen`: institution code -> daily OTC allowance (0 for clinics);
        `monthly_cap_fen`: institution code -> monthly fund cap; `v2`: SPEC 13's line and
        traceability checks (default: off), which report here."""
        self.allowance_fen = dict(allowance_fen)
        self.monthly_cap_fen = dict(monthly_cap_fen)
        self.violations: list[str] = []
        self.v2 = v2 if v2 is not None else V2Oracle()
        self.v2.report = self.violation
        self.settlements: dict[tuple[str, str], Committed] = {}
        self._answers: dict[tuple[str, str], bytes] = {}
        self._person_day: dict[tuple[str, str], list[Committed]] = collections.defaultdict(list)
        self._institution_month: dict[tuple[str, str], list[Committed]] = collections.defaultdict(list)
        # Every settlement an answer committed (standing, cancelled or reversed), by institution:
        # the end-of-run reconciliation reads it per institution instead of scanning them all.
        self._by_institution: dict[str, list[Committed]] = collections.defaultdict(list)
        self._settles_sent: set[tuple[str, str]] = set()
        self._unseen: dict[tuple[str, str], Committed] = {}
        # Timed-out settlements the gateway had applied and then reversed, by (institution, setl_id).
        self.reversed: dict[tuple[str, str], Committed] = {}
        # 2601 answers by (oinfno, "original found" | "original not found" | "already reversed").
        self.reversals: collections.Counter[tuple[str, str]] = collections.Counter()
        self._ticks = 0

    def tick(self) -> int:
        """The next logical instant (strictly increasing)."""
        self._ticks += 1
        return self._ticks

    def violation(self, what: str) -> None:
        """Record one broken invariant."""
        self.violations.append(what)

    def days(self, institution: str) -> set[str]:
        """The Shanghai days of every settlement committed at `institution`."""
        return {s.day for s in self._by_institution.get(institution, ())}

    def person_day_lower_bound(self, psn_no: str, day: str, sent_tick: int, received_tick: int) -> int:
        """otc_pay of the person's settlements that day that stood from before `sent` to `received`."""
        return sum(s.otc_pay for s in self._person_day[(psn_no, day)] if s.stood_through(sent_tick, received_tick))

    def institution_month_lower_bound(self, institution: str, month: str, sent_tick: int,
                                      received_tick: int) -> int:
        """fund_pay_sumamt of the institution's settlements that month that stood from `sent` to `received`."""
        return sum(s.fund_pay_sumamt for s in self._institution_month[(institution, month)]
                   if s.stood_through(sent_tick, received_tick))

    def check_amounts(self, where: str, setlinfo: Mapping[str, Any], bill_fen: int) -> None:
        """fund + cash == medfee == the bill's sum; no negative part."""
        medfee, fund, cash = setlinfo["medfee_sumamt"], setlinfo["fund_pay_sumamt"], setlinfo["psn_cash_pay"]
        if medfee != bill_fen or fund + cash != medfee:
            self.violation(f"{where}: amounts do not add up: fund {fund} + cash {cash}, medfee {medfee}, bill {bill_fen}")
        if min(fund, cash, setlinfo["otc_pay"], setlinfo["rx_pay"]) < 0:
            self.violation(f"{where}: negative amount in {dict(setlinfo)}")

    def check_bounds(self, where: str, institution: str, setlinfo: Mapping[str, Any], sent_tick: int,
                     received_tick: int) -> None:
        """The per-answer bounds: allowance and cap less what certainly stood when it was processed."""
        day = shanghai_day(setlinfo["setl_time"])
        allowance = self.allowance_fen.get(institution, 0)
        used = self.person_day_lower_bound(setlinfo["psn_no"], day, sent_tick, received_tick)
        limit, otc = setlinfo["crt_payb_lmt_amt"], setlinfo["otc_pay"]
        if otc > limit or limit > max(0, allowance - used):
            self.violation(f"{where}: person {setlinfo['psn_no']} otc_pay {otc}, crt_payb_lmt_amt {limit}, "
                           f"allowance {allowance}, standing before it was sent {used}")
        cap = self.monthly_cap_fen.get(institution, 0)
        month_used = self.institution_month_lower_bound(institution, day[:6], sent_tick, received_tick)
        if setlinfo["fund_pay_sumamt"] > max(0, cap - month_used):
            self.violation(f"{where}: institution {institution} fund {setlinfo['fund_pay_sumamt']} over room: "
                           f"cap {cap}, standing before it was sent {month_used}")

    def on_presettle(self, where: str, institution: str, setlinfo: Mapping[str, Any], bill_fen: int,
                     sent_tick: int, received_tick: int) -> None:
        """Check a 2101/2206 answer (it changes nothing)."""
        self.check_amounts(where, setlinfo, bill_fen)
        self.check_bounds(where, institution, setlinfo, sent_tick, received_tick)

    def on_settle_sent(self, institution: str, msgid: str) -> None:
        """A 2102/2207 with `msgid` left this run (committed or not, 3202 may list it)."""
        self._settles_sent.add((institution, msgid))

    def on_settle(self, where: str, institution: str, msgid: str, setlinfo: Mapping[str, Any],
                  bill_fen: int, answer: bytes, sent_tick: int, received_tick: int) -> None:
        """Check and record a committed 2102/2207 answer."""
        self.check_amounts(where, setlinfo, bill_fen)
        self.check_bounds(where, institution, setlinfo, sent_tick, received_tick)
        self._answers[(institution, msgid)] = answer
        settled = Committed(institution, setlinfo["psn_no"], setlinfo["setl_id"], setlinfo["setl_time"],
                            setlinfo["medfee_sumamt"], setlinfo["fund_pay_sumamt"], setlinfo["psn_cash_pay"],
                            setlinfo["otc_pay"], setlinfo["rx_pay"], msgid, received_tick)
        self.settlements[(institution, settled.setl_id)] = settled
        self._institution_month[(institution, settled.day[:6])].append(settled)
        self._by_institution[institution].append(settled)
        if self.allowance_fen.get(institution, 0) > 0:
            self._person_day[(settled.psn_no, settled.day)].append(settled)
        self.check_sums(where, settled)

    def on_unseen_settle(self, where: str, institution: str, msgid: str, setlinfo: Mapping[str, Any],
                         bill_fen: int, sent_tick: int, received_tick: int) -> None:
        """Check a 2102/2207 answer the POS never saw (timed out); it is to be reversed, so it
        never counts as standing."""
        self.check_amounts(where, setlinfo, bill_fen)
        self.check_bounds(where, institution, setlinfo, sent_tick, received_tick)
        self._unseen[(institution, msgid)] = Committed(
            institution, setlinfo["psn_no"], setlinfo["setl_id"], setlinfo["setl_time"], setlinfo["medfee_sumamt"],
            setlinfo["fund_pay_sumamt"], setlinfo["psn_cash_pay"], setlinfo["otc_pay"], setlinfo["rx_pay"], msgid,
            received_tick)

    def on_reversal(self, where: str, institution: str, omsgid: str, oinfno: str, applied: bool | None,
                    output: Mapping[str, Any]) -> None:
        """Check a successful 2601 of `omsgid`, sent once; `applied`: whether the original's answer
        was 0 (True) or a rejection (False), None when it stayed unknown."""
        found, again = output.get("original_found"), output.get("already_reversed", False)
        if output.get("reversed") is not True or again:
            self.violation(f"{where}: first 2601 of {omsgid} answered {dict(output)}")
        elif applied is not None and found is not applied:
            self.violation(f"{where}: 2601 of {omsgid} original_found {found!r}, but the original was "
                           f"{'applied' if applied else 'refused'}")
        outcome = "already reversed" if again else ("original found" if found else "original not found")
        self.reversals[(oinfno, outcome)] += 1
        unseen = self._unseen.pop((institution, omsgid), None)
        if unseen is not None:
            self.reversed[(institution, unseen.setl_id)] = unseen
            self._by_institution[institution].append(unseen)

    def on_resend_after_reversal(self, where: str, msgid: str, answer: Mapping[str, Any]) -> None:
        """A request carrying a reversed msgid answers -2 ORIGINAL_REVERSED (-1 proves nothing)."""
        if answer["infcode"] != -1 and (answer["infcode"], answer["err_code"]) != (-2, "ORIGINAL_REVERSED"):
            self.violation(f"{where}: resend of reversed {msgid} answered infcode {answer['infcode']} "
                           f"{answer['err_code']!r}, expected -2 'ORIGINAL_REVERSED'")

    def check_sums(self, where: str, settled: Committed) -> None:
        """The person-day and institution-month sums over standing settlements (order-free): those
        with no cancellation sent, since one in flight or re-instated may have freed room again."""
        standing = [s for s in self._person_day.get((settled.psn_no, settled.day), ())
                    if s.cancel_sent_tick is None]
        paying = [s for s in standing if s.otc_pay > 0]
        if paying:
            used = sum(s.otc_pay for s in paying)
            ceiling = max(self.allowance_fen.get(s.institution, 0) for s in paying)
            if used > ceiling:
                self.violation(f"{where}: person {settled.psn_no} day {settled.day} standing otc_pay {used} "
                               f"over the largest allowance of its pharmacies {ceiling}")
        month = settled.day[:6]
        month_used = sum(s.fund_pay_sumamt for s in self._institution_month[(settled.institution, month)]
                         if s.cancel_sent_tick is None)
        cap = self.monthly_cap_fen.get(settled.institution, 0)
        if month_used > cap:
            self.violation(f"{where}: institution {settled.institution} month {month} fund {month_used} "
                           f"over cap {cap}")

    def on_retry(self, where: str, institution: str, msgid: str, answer: bytes) -> None:
        """A resend of a committed msgid must get the first answer byte for byte."""
        first = self._answers.get((institution, msgid))
        if first is not None and first != answer:
            self.violation(f"{where}: retry of {msgid} answered different bytes")

    def on_cancel_sent(self, institution: str, setl_id: str) -> None:
        """A 2103/2208 of `setl_id` is about to leave: from now on it may be applied."""
        settled = self.settlements.get((institution, setl_id))
        if settled is not None and settled.cancel_sent_tick is None:
            settled.cancel_sent_tick = self.tick()

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
        for s in self._institution_month.get((institution, day[:6]), ()):
            if not s.cancelled and s.day == day:
                totals = totals.plus(Totals(1, s.medfee_sumamt, s.fund_pay_sumamt, s.psn_cash_pay))
        return totals

    def on_totals(self, institution: str, expected: Totals, stmt_rslt: str, gateway: Mapping[str, Any],
                  day: str = "") -> None:
        """Check a 3201 answer sent with `expected` (the baseline plus the oracle's standing totals)."""
        got = Totals.of(gateway)
        if stmt_rslt != "0" or got != expected:
            self.violation(f"3201 {institution} {day}: stmt_rslt {stmt_rslt!r}, gateway {got}, oracle {expected}")

    def on_detail(self, institution: str, day: str, pages: Sequence[Mapping[str, Any]], baseline: Totals) -> None:
        """Check the 3202 pages of one institution and day (each page `{rows, next}`) against what was seen."""
        where = f"3202 {institution} {day}"
        rows = self._check_pages(where, pages)
        listed = {row["setl_id"]: row for row in rows}
        for s in self._by_institution.get(institution, ()):
            if s.day != day:
                continue
            if (institution, s.setl_id) in self.reversed:
                status = "reversed"
            else:
                status = "cancelled" if s.cancelled else "settled"
            row = listed.pop(s.setl_id, None)
            expected = {"msgid": s.msgid, "psn_no": s.psn_no, "setl_time": s.setl_time_ms,
                        "medfee_sumamt": s.medfee_sumamt, "fund_pay_sumamt": s.fund_pay_sumamt,
                        "psn_cash_pay": s.psn_cash_pay, "status": status}
            if row is None or {k: row.get(k) for k in expected} != expected:
                self.violation(f"{where}: {s.setl_id} listed as {row}, expected {expected}")
        history = Totals()
        for row in listed.values():
            if (institution, row["msgid"]) in self._settles_sent:
                if row["status"] != "reversed":
                    self.violation(f"{where}: {row['setl_id']} of msgid {row['msgid']} never answered as "
                                   f"committed, but listed {row['status']!r}")
            elif row["status"] == "settled":
                history = history.plus(Totals.of(row))
        if history != baseline:
            self.violation(f"{where}: settled rows from before the run {history}, baseline {baseline}")

    def _check_pages(self, where: str, pages: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """The rows of all pages, after checking page size, order and `next` chaining."""
        rows: list[Mapping[str, Any]] = []
        for number, page in enumerate(pages, start=1):
            page_rows = list(page["rows"])
            last = number == len(pages)
            if len(page_rows) > DETAIL_PAGE_ROWS_MAX:
                self.violation(f"{where}: page {number} has {len(page_rows)} rows")
            expected_next = None if last else (page_rows[-1]["setl_id"] if page_rows else "")
            if page.get("next") != expected_next:
                self.violation(f"{where}: page {number} next {page.get('next')!r}, expected {expected_next!r}")
            rows.extend(page_rows)
        ids = [row["setl_id"] for row in rows]
        if ids != sorted(set(ids)):
            self.violation(f"{where}: rows not in strictly ascending setl_id order")
        return rows
