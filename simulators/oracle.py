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

Who pays (SPEC 13), with `WhoPaysTerms` (the registry's pooling policy, its non-pooling pharmacies
and family links, and the accounts file, all read by the simulator, never asked of the gateway):
- per answer: fund + acct + cash == medfee, `psn_part_amt` == medfee − fund; without the flag
  nothing comes from an account; with it `acct_payer_psn_no` is the payer asked for (the patient by
  default), `acct_mulaid_pay` is acct_pay exactly when that is someone else; acct_pay ≤ max(0, B − L)
  and balc ≤ B − L − acct_pay, B the payer's balance at the start (the run's 1101 baseline, else
  the accounts file) and L the payer's account payments that stood through the request (the same
  rule as above); at a non-pooling pharmacy act_pay_dedc and rx_pay are 0; without a pooling policy
  act_pay_dedc is 0 and person_year_pool_remaining nil; with one, act_pay_dedc ≤ max(0, deductible
  − L_dedc), the pooled payment (rx_pay) ≤ max(0, cap − L_pool) and person_year_pool_remaining ≤
  max(0, cap − L_pool − rx_pay);
- a payer other than the patient without a family link valid that day is never answered 0, and one
  with a link (or the patient's own account) never MUTUAL_AID_NOT_AUTHORIZED;
- on the sums: per payer, the standing account payments ≤ B; per person and year, the standing
  deductible ≤ the policy's and the standing pooled payments ≤ its cap (no re-instatement runs);
- at the end (runner): each person's 1101 balance is B less the standing account payments, and
  what is left of the deductible and the cap is the start's less the standing sums.

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
    # Who pays (SPEC 13): the account payment and whose, the insutype and the deductible used.
    acct_pay: int = 0
    payer: str = ""
    insutype: str = ""
    act_pay_dedc: int = 0

    @property
    def year(self) -> str:
        """The Shanghai year of setl_time, YYYY."""
        return self.day[:4]

    @property
    def standing(self) -> bool:
        """Committed and no cancellation sent."""
        return self.cancel_sent_tick is None

    @classmethod
    def of(cls, institution: str, msgid: str, setlinfo: Mapping[str, Any], tick: int) -> Committed:
        """The settlement a committed answer describes."""
        return cls(institution, setlinfo["psn_no"], setlinfo["setl_id"], setlinfo["setl_time"],
                   setlinfo["medfee_sumamt"], setlinfo["fund_pay_sumamt"], setlinfo["psn_cash_pay"],
                   setlinfo["otc_pay"], setlinfo["rx_pay"], msgid, tick, acct_pay=setlinfo.get("acct_pay", 0),
                   payer=setlinfo.get("acct_payer_psn_no") or setlinfo["psn_no"],
                   insutype=setlinfo.get("insutype", ""), act_pay_dedc=setlinfo.get("act_pay_dedc", 0))
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


@dataclasses.dataclass(frozen=True)
class WhoPaysTerms:
    """What the oracle knows of SPEC 13's data, read from the region's files."""

    pooling: Mapping[str, tuple[int, int]]               # insutype -> (deductible_fen, annual_cap_fen)
    no_pooling: frozenset[str] = frozenset()             # pharmacies outside outpatient pooling
    links: Mapping[tuple[str, str], tuple[tuple[str, str], ...]] = dataclasses.field(default_factory=dict)
    opening_fen: Mapping[str, int] | None = None         # the accounts file; None: no accounts

    def linked(self, owner: str, member: str, day: str) -> bool:
        """A family link lets `owner` pay for `member` on `day` (YYYYMMDD)."""
        date = f"{day[:4]}-{day[4:6]}-{day[6:]}"
        return any(start <= date <= end for start, end in self.links.get((owner, member), ()))


@dataclasses.dataclass
class PersonStart:
    """A person's who-pays figures at the start of the run (its 1101 baseline)."""

    balance_fen: int | None
    deductible_left_fen: int | None
    pool_left_fen: int | None


class Oracle:
    """Checks committed answers; `violations` lists every broken invariant, one line each."""

    def __init__(self, allowance_fen: Mapping[str, int], monthly_cap_fen: Mapping[str, int],
                 *, who_pays: WhoPaysTerms | None = None, v2: V2Oracle | None = None) -> None:
        """`allowance_fen`: institution code -> daily OTC allowance (0 for clinics);
        `monthly_cap_fen`: institution code -> monthly fund cap; `who_pays`: SPEC 13's data (None:
        none, v1 answers); `v2`: SPEC 13's line and traceability checks (default: off), which
        report here."""
        self.allowance_fen = dict(allowance_fen)
        self.monthly_cap_fen = dict(monthly_cap_fen)
        self.who_pays = who_pays or WhoPaysTerms({})
        self.starts: dict[str, PersonStart] = {}
        self._by_payer: dict[str, list[Committed]] = collections.defaultdict(list)
        self._by_person_year: dict[tuple[str, str], list[Committed]] = collections.defaultdict(list)
        self.mutual_aid: collections.Counter[str] = collections.Counter()
        self._at_cap: set[str] = set()
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
        """fund + acct + cash == medfee == the bill's sum; no negative part."""
        medfee, fund, cash = setlinfo["medfee_sumamt"], setlinfo["fund_pay_sumamt"], setlinfo["psn_cash_pay"]
        acct = setlinfo.get("acct_pay", 0)
        if medfee != bill_fen or fund + acct + cash != medfee:
            self.violation(f"{where}: amounts do not add up: fund {fund} + acct {acct} + cash {cash}, "
                           f"medfee {medfee}, bill {bill_fen}")
        if setlinfo.get("psn_part_amt", medfee - fund) != medfee - fund:
            self.violation(f"{where}: psn_part_amt {setlinfo['psn_part_amt']} is not medfee − fund {medfee - fund}")
        if min(fund, cash, acct, setlinfo["otc_pay"], setlinfo["rx_pay"], setlinfo.get("act_pay_dedc", 0)) < 0:
            self.violation(f"{where}: negative amount in {dict(setlinfo)}")

    # -- who pays (SPEC 13) ----------------------------------------------------------------------

    def start_balance(self, psn_no: str) -> int | None:
        """The person's balance at the start: the 1101 baseline, else the accounts file's (0 without a row)."""
        start = self.starts.get(psn_no)
        if start is not None and start.balance_fen is not None:
            return start.balance_fen
        opening = self.who_pays.opening_fen
        return None if opening is None else opening.get(psn_no, 0)

    def on_payer_answer(self, where: str, patient: str, payer: str | None, day: str, answer: Mapping[str, Any]) -> None:
        """Any 2101/2102/2206/2207 answer of an intent paying from `payer`'s account (the rule of the
        checks' order: a missing link is refused, a present one never is)."""
        refused = answer["err_code"] == "MUTUAL_AID_NOT_AUTHORIZED"
        if payer is None or payer == patient or self.who_pays.linked(payer, patient, day):
            if refused:
                self.violation(f"{where}: MUTUAL_AID_NOT_AUTHORIZED for payer {payer} of {patient}, who may pay")
            return
        self.mutual_aid["refused" if refused else "refused otherwise"] += 1
        if answer["infcode"] == 0:
            self.violation(f"{where}: payer {payer} paid for {patient} without a family link")

    def _lower(self, rows: Any, sent_tick: int, received_tick: int, field: str) -> int:
        return sum(getattr(s, field) for s in rows if s.stood_through(sent_tick, received_tick))

    def check_who_pays(self, where: str, institution: str, setlinfo: Mapping[str, Any], paying: tuple[bool, str | None],
                       sent_tick: int, received_tick: int) -> None:
        """The per-answer who-pays bounds (see the module docstring)."""
        acct_used, payer = paying
        psn_no, acct = setlinfo["psn_no"], setlinfo.get("acct_pay", 0)
        if not acct_used:
            if acct or setlinfo.get("acct_payer_psn_no") is not None or setlinfo.get("balc") is not None:
                self.violation(f"{where}: no account asked for, answered acct_pay {acct}, "
                               f"payer {setlinfo.get('acct_payer_psn_no')}, balc {setlinfo.get('balc')}")
        else:
            self._check_account(where, setlinfo, payer or psn_no, sent_tick, received_tick)
        self._check_year(where, institution, setlinfo, sent_tick, received_tick)

    def _check_account(self, where: str, setlinfo: Mapping[str, Any], payer: str, sent_tick: int,
                       received_tick: int) -> None:
        psn_no, acct = setlinfo["psn_no"], setlinfo.get("acct_pay", 0)
        if setlinfo.get("acct_payer_psn_no") != payer:
            self.violation(f"{where}: acct_payer_psn_no {setlinfo.get('acct_payer_psn_no')}, asked {payer}")
        if setlinfo.get("acct_mulaid_pay") != (acct if payer != psn_no else 0):
            self.violation(f"{where}: acct_mulaid_pay {setlinfo.get('acct_mulaid_pay')} with acct_pay {acct}, "
                           f"payer {payer}, patient {psn_no}")
        start = self.start_balance(payer)
        if start is None:
            return
        before = start - self._lower(self._by_payer.get(payer, ()), sent_tick, received_tick, "acct_pay")
        balc = setlinfo.get("balc")
        if acct > max(0, before) or balc is None or balc > before - acct:
            self.violation(f"{where}: payer {payer} acct_pay {acct}, balc {balc}, but at most {before} "
                           f"stood in the account when it was sent")

    def _check_year(self, where: str, institution: str, setlinfo: Mapping[str, Any], sent_tick: int,
                    received_tick: int) -> None:
        dedc, pooled = setlinfo.get("act_pay_dedc", 0), setlinfo["rx_pay"]
        if institution in self.who_pays.no_pooling and (dedc or pooled):
            self.violation(f"{where}: a pharmacy outside outpatient pooling answered act_pay_dedc {dedc}, "
                           f"rx_pay {pooled}")
        policy = self.who_pays.pooling.get(setlinfo.get("insutype", ""))
        remaining = setlinfo.get("person_year_pool_remaining")
        if policy is None:
            if dedc or remaining is not None:
                self.violation(f"{where}: no pooling policy, yet act_pay_dedc {dedc}, remaining {remaining}")
            return
        rows = self._by_person_year.get((setlinfo["psn_no"], shanghai_day(setlinfo["setl_time"])[:4]), ())
        dedc_used = self._lower(rows, sent_tick, received_tick, "act_pay_dedc")
        pool_used = self._lower(rows, sent_tick, received_tick, "rx_pay")
        deductible, cap = policy
        if (dedc > max(0, deductible - dedc_used) or pooled > max(0, cap - pool_used)
                or remaining is None or remaining > max(0, cap - pool_used - pooled)):
            self.violation(f"{where}: person {setlinfo['psn_no']} act_pay_dedc {dedc}, pooled {pooled}, "
                           f"remaining {remaining}; standing before it was sent: deductible {dedc_used}, "
                           f"pooled {pool_used} of {policy}")

    def check_who_pays_sums(self, where: str, settled: Committed) -> None:
        """Standing account payments within the start balance; the year within the policy."""
        start = self.start_balance(settled.payer)
        if start is not None:
            spent = sum(s.acct_pay for s in self._by_payer.get(settled.payer, ()) if s.standing)
            if spent > max(0, start):
                self.violation(f"{where}: payer {settled.payer} standing account payments {spent} over {start}")
        policy = self.who_pays.pooling.get(settled.insutype)
        if policy is not None:
            rows = [s for s in self._by_person_year.get((settled.psn_no, settled.year), ()) if s.standing]
            dedc, pooled = sum(s.act_pay_dedc for s in rows), sum(s.rx_pay for s in rows)
            if dedc > policy[0] or pooled > policy[1]:
                self.violation(f"{where}: person {settled.psn_no} year {settled.year} standing deductible {dedc}, "
                               f"pooled {pooled}, policy {policy}")

    def on_person_start(self, psn_no: str, output: Mapping[str, Any]) -> None:
        """A 1101 answer taken before the traffic (the person's baseline)."""
        self.starts[psn_no] = PersonStart(output.get("acct_balance"), output.get("pool_deductible_remaining"),
                                          output.get("pool_year_remaining"))

    def people_at_cap(self) -> int:
        """Persons whose 1101 at the end of the run showed nothing left of the pooling cap."""
        return len(self._at_cap)

    def on_person_end(self, psn_no: str, output: Mapping[str, Any]) -> None:
        """A 1101 answer taken after the traffic: the baseline less what stands from this run."""
        if output.get("pool_year_remaining") == 0:
            self._at_cap.add(psn_no)
        start = self.starts.get(psn_no)
        if start is None:
            return
        paid = sum(s.acct_pay for s in self._by_payer.get(psn_no, ()) if not s.cancelled)
        if start.balance_fen is not None and output.get("acct_balance") != start.balance_fen - paid:
            self.violation(f"1101 {psn_no} at the end: acct_balance {output.get('acct_balance')}, expected "
                           f"{start.balance_fen} − {paid}")
        rows = [s for (p, _), group in self._by_person_year.items() if p == psn_no for s in group if not s.cancelled]
        for field, left, key in (("act_pay_dedc", start.deductible_left_fen, "pool_deductible_remaining"),
                                 ("rx_pay", start.pool_left_fen, "pool_year_remaining")):
            if left is not None and output.get(key) != max(0, left - sum(getattr(s, field) for s in rows)):
                self.violation(f"1101 {psn_no} at the end: {key} {output.get(key)}, expected {left} less "
                               f"this run's standing {field}")

    def _record_who_pays(self, settled: Committed) -> None:
        self._by_payer[settled.payer].append(settled)
        if settled.payer != settled.psn_no and settled.acct_pay:
            self.mutual_aid["paid"] += 1
        if settled.insutype in self.who_pays.pooling or settled.act_pay_dedc or settled.rx_pay:
            self._by_person_year[(settled.psn_no, settled.year)].append(settled)

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
                     sent_tick: int, received_tick: int, paying: tuple[bool, str | None] | None = None) -> None:
        """Check a 2101/2206 answer (it changes nothing); `paying`: (account asked for, payer)."""
        self.check_amounts(where, setlinfo, bill_fen)
        self.check_bounds(where, institution, setlinfo, sent_tick, received_tick)
        if paying is not None:
            self.check_who_pays(where, institution, setlinfo, paying, sent_tick, received_tick)

    def on_settle_sent(self, institution: str, msgid: str) -> None:
        """A 2102/2207 with `msgid` left this run (committed or not, 3202 may list it)."""
        self._settles_sent.add((institution, msgid))

    def on_settle(self, where: str, institution: str, msgid: str, setlinfo: Mapping[str, Any],
                  bill_fen: int, answer: bytes, sent_tick: int, received_tick: int,
                  paying: tuple[bool, str | None] | None = None) -> None:
        """Check and record a committed 2102/2207 answer; `paying`: (account asked for, payer)."""
        self.check_amounts(where, setlinfo, bill_fen)
        self.check_bounds(where, institution, setlinfo, sent_tick, received_tick)
        if paying is not None:
            self.check_who_pays(where, institution, setlinfo, paying, sent_tick, received_tick)
        self._answers[(institution, msgid)] = answer
        settled = Committed.of(institution, msgid, setlinfo, received_tick)
        self.settlements[(institution, settled.setl_id)] = settled
        self._record_who_pays(settled)
        self._institution_month[(institution, settled.day[:6])].append(settled)
        self._by_institution[institution].append(settled)
        if self.allowance_fen.get(institution, 0) > 0:
            self._person_day[(settled.psn_no, settled.day)].append(settled)
        self.check_sums(where, settled)
        self.check_who_pays_sums(where, settled)

    def on_unseen_settle(self, where: str, institution: str, msgid: str, setlinfo: Mapping[str, Any],
                         bill_fen: int, sent_tick: int, received_tick: int,
                         paying: tuple[bool, str | None] | None = None) -> None:
        """Check a 2102/2207 answer the POS never saw (timed out); it is to be reversed, so it
        never counts as standing."""
        self.check_amounts(where, setlinfo, bill_fen)
        self.check_bounds(where, institution, setlinfo, sent_tick, received_tick)
        if paying is not None:
            self.check_who_pays(where, institution, setlinfo, paying, sent_tick, received_tick)
        self._unseen[(institution, msgid)] = Committed.of(institution, msgid, setlinfo, received_tick)

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
        expected = (-settled.medfee_sumamt, -settled.fund_pay_sumamt, -settled.psn_cash_pay, -settled.acct_pay,
                    -settled.act_pay_dedc)
        got = (output.get("medfee_sumamt"), output.get("fund_pay_sumamt"), output.get("psn_cash_pay"),
               output.get("acct_pay", -settled.acct_pay), output.get("act_pay_dedc", -settled.act_pay_dedc))
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
