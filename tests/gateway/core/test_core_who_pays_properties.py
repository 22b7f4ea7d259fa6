"""Hypothesis properties of SPEC 13's who-pays ledgers over random command sequences (settlements
with and without accounts and mutual aid, cancellations, reversals of both, retries, credits, time
across the year's end): no pot is overdrawn by a settlement, each ledger equals the sum over the
settlements that stand, cancellation and reversal restore exactly, replay and snapshots reproduce
the state."""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

from hypothesis import HealthCheck, given, settings, strategies as st

from core_world import T0_MS, World, card, line
from gateway.core.pooling import YearUsage, business_year, year_start_ms
from gateway.core.settlements import STATUS_SETTLED
from whopays_world import ANNUAL_CAP_FEN, BALANCES, DEDUCTIBLE_FEN, rx, who_pays_world

PATIENTS = ["H1", "H2", "MEM1", "PSN1"]
# (patient, acct_payer_psn_no): their own account (None or themselves), a linked owner's, an expired
# link's, no link at all.
WHO = [("H1", None), ("H2", None), ("PSN1", None), ("H1", "H1"), ("MEM1", "OWN1"), ("MEM1", "OWN1"),
       ("MEM1", "OWN2"), ("MEM1", "H1")]
DEVICES = {"T1": "2102", "T3": "2207", "T6": "2102"}
CANCEL = {"2102": "2103", "2207": "2208"}
ALLOWED_REFUSALS = {"MUTUAL_AID_NOT_AUTHORIZED", "CANCEL_WINDOW_CLOSED", "ALREADY_CANCELLED", "ORIGINAL_REVERSED",
                    "SETTLEMENT_NOT_FOUND", "STALE_REQUEST"}

settle_command = st.tuples(
    st.just("settle"), st.sampled_from(sorted(DEVICES)), st.sampled_from(WHO), st.sampled_from([True, True, False]),
    st.sampled_from([False, False, True]),
    st.lists(st.tuples(st.integers(1, 40_000), st.sampled_from(["rx", "rx", "otc", "own"])), min_size=1, max_size=3))
# Settlements are most of the traffic, as at a till; the rest undo, retry, credit and move time.
command = st.one_of(
    settle_command, settle_command, settle_command,
    st.tuples(st.just("cancel"), st.integers(0, 60)),
    st.tuples(st.just("reverse"), st.integers(0, 60)),
    st.tuples(st.just("reverse_cancel"), st.integers(0, 60)),
    st.tuples(st.just("retry"), st.integers(0, 60)),
    st.tuples(st.just("credit"), st.sampled_from(PATIENTS + ["OWN1"]), st.integers(1, 20_000)),
    st.tuples(st.just("advance"), st.sampled_from([1, 3_600_000, 86_400_000, 9 * 86_400_000])),
    st.tuples(st.just("new_year"), st.integers(0, 7_200_000)),
)


@dataclasses.dataclass
class Seen:
    """A settlement as its answer told it, and what undid or re-did it."""

    dev: str
    msgid: str
    setl_id: str
    psn_no: str
    insutype: str
    year: int
    dedc_fen: int
    pool_fen: int
    payer: str
    acct_fen: int
    items: list[dict[str, Any]]
    extra: dict[str, Any]
    answer: bytes
    setl_ms: int
    cancel_msgid: str | None = None
    status: str = STATUS_SETTLED


def _items(lines: list[tuple[int, str]]) -> list[dict[str, Any]]:
    return [rx(str(n), fee) if kind == "rx" else line(str(n), fee, lv="03" if kind == "own" else "01")
            for n, (fee, kind) in enumerate(lines)]


class Run:
    """One command sequence against a who-pays world, with the test's own book of what stands."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.now_ms = T0_MS
        self.terms = {dev: world.sign_in(dev, now_ms=T0_MS) for dev in DEVICES}
        self.seen: list[Seen] = []
        self.credits: collections.Counter[str] = collections.Counter()
        self.reinstated_years: set[tuple[str, str, int]] = set()
        self.reinstated_payers: set[str] = set()
        self.changes = 0

    def term(self, dev: str) -> Any:
        return self.terms[dev]      # sessions outlive the run (session_ttl_s below)

    def settle(self, dev: str, who: tuple[str, str | None], flag: bool, pre: bool,
               lines: list[tuple[int, str]]) -> None:
        psn, payer = who
        infno = DEVICES[dev] if not pre else {"2102": "2101", "2207": "2206"}[DEVICES[dev]]
        extra: dict[str, Any] = {"acct_used_flag": "1" if flag else "0"}
        if payer is not None:
            extra["acct_payer_psn_no"] = payer
        items = _items(lines)
        mid = self.world.next_msgid(self.term(dev).fixmedins_code, self.now_ms)
        result, env = self.world.settle(self.term(dev), items, who=card(psn), infno=infno, now_ms=self.now_ms,
                                        msgid_=mid, extra=extra)
        if env.infcode != 0:
            assert env.err_code in ALLOWED_REFUSALS, (env.err_code, env.err_msg)
            return
        info = env.output["setlinfo"]
        self._check_answer(info, psn)
        if not pre:
            self.seen.append(Seen(dev, mid, info["setl_id"], psn, "310", business_year(self.now_ms),
                                  info["act_pay_dedc"], info["rx_pay"], info["acct_payer_psn_no"] or psn,
                                  info["acct_pay"], items, extra, result.response, self.now_ms))

    def _check_answer(self, info: dict[str, Any], psn: str) -> None:
        """No pot is overdrawn by a settlement: within the deductible, the cap and the balance."""
        used = self.world.core.state.years.used(psn, "310", business_year(self.now_ms))
        assert info["act_pay_dedc"] <= DEDUCTIBLE_FEN and info["rx_pay"] <= ANNUAL_CAP_FEN
        assert info["person_year_pool_remaining"] == max(0, ANNUAL_CAP_FEN - used.pool_paid_fen) or \
            info.get("setl_id") is None
        assert info["acct_pay"] + info["psn_cash_pay"] + info["fund_pay_sumamt"] == info["medfee_sumamt"]
        assert min(info["acct_pay"], info["psn_cash_pay"], info["act_pay_dedc"]) >= 0
        if info["acct_pay"]:
            assert info["balc"] >= 0

    def undo(self, what: str, index: int) -> None:
        if not self.seen:
            return
        seen = self.seen[index % len(self.seen)]
        term = self.term(seen.dev)
        if what == "cancel":
            mid = self.world.next_msgid(term.fixmedins_code, self.now_ms)
            env = self.world.send(term, CANCEL[DEVICES[seen.dev]], {"setl_id": seen.setl_id, "psn_no": seen.psn_no},
                                  self.now_ms, mid)[1]
            if env.infcode == 0:
                seen.cancel_msgid = mid
                assert env.output["acct_pay"] == -seen.acct_fen and env.output["act_pay_dedc"] == -seen.dedc_fen
        elif what == "reverse":
            env = self.world.send(term, "2601", {"omsgid": seen.msgid, "oinfno": DEVICES[seen.dev]}, self.now_ms)[1]
        else:
            if seen.cancel_msgid is None:
                return
            before = self._status(seen)
            env = self.world.send(term, "2601", {"omsgid": seen.cancel_msgid, "oinfno": CANCEL[DEVICES[seen.dev]]},
                                  self.now_ms)[1]
            if env.infcode == 0 and before != STATUS_SETTLED and self._status(seen) == STATUS_SETTLED:
                self.reinstated_years.add((seen.psn_no, seen.insutype, seen.year))
                self.reinstated_payers.add(seen.payer)
        assert env.infcode == 0 or env.err_code in ALLOWED_REFUSALS, (env.err_code, env.err_msg)

    def retry(self, index: int) -> None:
        if not self.seen:
            return
        seen = self.seen[index % len(self.seen)]
        if self.now_ms - seen.setl_ms > 25 * 3_600_000:
            return
        before = self.world.core.snapshot()
        result, env = self.world.settle(self.term(seen.dev), seen.items, who=card(seen.psn_no),
                                        infno=DEVICES[seen.dev], now_ms=self.now_ms, msgid_=seen.msgid,
                                        extra=seen.extra)
        if env.err_code not in ("ORIGINAL_REVERSED", "STALE_REQUEST"):
            assert result.response == seen.answer
        assert self.world.core.snapshot()["person_years"] == before["person_years"]
        assert self.world.core.snapshot()["accounts"] == before["accounts"]

    def credit(self, psn: str, amount: int) -> None:
        core = self.world.core
        change = {"kind": "account.credit", "psn_no": psn, "amount_fen": amount}
        proposal = self.world.commit(core.propose_change(change, self.now_ms, actor="a", role="policy"))
        self.world.commit(core.approve_change(proposal.id, self.now_ms, actor="b", role="policy"))
        self.credits[psn] += amount

    def _status(self, seen: Seen) -> str:
        found = self.world.core.state.settlements.get(seen.setl_id)
        if found is not None:
            seen.status = found.status      # settlements past retention keep their last status
        return seen.status

    def check(self) -> None:
        """Each ledger equals the sum over the settlements that stand; no pot overdrawn but by a
        re-instatement."""
        state = self.world.core.state
        for seen in self.seen:
            self._status(seen)
        years: dict[tuple[str, str, int], list[int]] = collections.defaultdict(lambda: [0, 0])
        spent: collections.Counter[str] = collections.Counter()
        for seen in self.seen:
            if seen.status == STATUS_SETTLED:
                if seen.year >= state.years.floor_year:
                    years[(seen.psn_no, seen.insutype, seen.year)][0] += seen.dedc_fen
                    years[(seen.psn_no, seen.insutype, seen.year)][1] += seen.pool_fen
                spent[seen.payer] += seen.acct_fen
        for year in {state.years.floor_year, business_year(self.now_ms)}:
            expected = {(psn, insutype): YearUsage(*amounts) for (psn, insutype, y), amounts in years.items()
                        if y == year and any(amounts)}
            assert state.years.totals(year) == expected, year
        for key, (dedc, pooled) in years.items():
            if key not in self.reinstated_years:
                assert dedc <= DEDUCTIBLE_FEN and pooled <= ANNUAL_CAP_FEN, key
        for psn in set(BALANCES) | set(spent) | set(self.credits):
            balance = state.accounts.balance(psn)
            assert balance == BALANCES.get(psn, 0) + self.credits[psn] - spent[psn], psn
            if psn not in self.reinstated_payers:
                assert balance >= 0, psn


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(command, min_size=8, max_size=40))
def test_who_pays_ledgers_hold_over_random_sequences(tmp_path_factory, commands) -> None:
    world = who_pays_world(tmp_path_factory.mktemp("wp"), session_ttl_s=10**8)
    run = Run(world)
    for cmd in commands:
        if cmd[0] == "settle":
            run.settle(*cmd[1:])
        elif cmd[0] in ("cancel", "reverse", "reverse_cancel"):
            run.undo(cmd[0], cmd[1])
        elif cmd[0] == "retry":
            run.retry(cmd[1])
        elif cmd[0] == "credit":
            run.credit(cmd[1], cmd[2])
        elif cmd[0] == "advance":
            run.now_ms += cmd[1]
        elif cmd[0] == "new_year" and run.now_ms < year_start_ms(2025) - cmd[1]:
            run.now_ms = year_start_ms(2025) - cmd[1]
        run.check()
    world.assert_replay_and_restore()
