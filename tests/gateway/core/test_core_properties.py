"""Hypothesis properties over random command sequences: limits, ledgers, undo, replay, idempotency."""

from __future__ import annotations

import collections

from hypothesis import HealthCheck, given, settings, strategies as st

from core_world import P1, P2, T0_MS, World, card, line
from gateway.core.clock import business_day, business_month
from gateway.core.settlements import STATUS_SETTLED

PERSONS = ["H1", "H2", "H3"]
ALLOWANCE = {P1: 12000, P2: 6000}
CAP = {P1: 1_000_000, P2: 20_000}
IDEMPOTENCY_KEPT_MS = 25 * 3_600_000   # SPEC section 6: records are kept at least 25 h

command = st.one_of(
    st.tuples(st.just("settle"), st.sampled_from(["T1", "T2"]), st.sampled_from(PERSONS),
              st.lists(st.tuples(st.integers(1, 8000), st.booleans(), st.sampled_from(["01", "02", "03"])),
                       min_size=1, max_size=3), st.booleans()),
    st.tuples(st.just("cancel"), st.integers(0, 50)),
    st.tuples(st.just("reverse"), st.integers(0, 50)),
    st.tuples(st.just("retry"), st.integers(0, 50)),
    st.tuples(st.just("advance"), st.sampled_from([1, 3_600_000, 8 * 3_600_000, 86_400_000, 20 * 86_400_000])),
)


def _check_ledgers(world: World, now_ms: int) -> None:
    state = world.core.state
    day, month = business_day(now_ms), business_month(now_ms)
    person_day: collections.Counter = collections.Counter()
    institution_month: collections.Counter = collections.Counter()
    for s in state.settlements.standing():
        if s.day == day:
            person_day[s.psn_no] += s.otc_pay
        if s.month == month:
            institution_month[s.institution] += s.fund_pay_sumamt
    assert state.ledger.person_totals(day) == {k: v for k, v in person_day.items() if v}
    assert state.ledger.institution_totals(month) == {k: v for k, v in institution_month.items() if v}
    # A person's day may span pharmacies of different grades: each settlement is held to its own
    # pharmacy's allowance minus what was used before, so the day total stays within the largest.
    largest: dict[str, int] = collections.defaultdict(int)
    for s in state.settlements.standing():
        if s.day == day:
            largest[s.psn_no] = max(largest[s.psn_no], ALLOWANCE[s.institution])
    for psn_no, used in person_day.items():
        assert used <= largest[psn_no]
    for institution, used in institution_month.items():
        assert used <= CAP[institution]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(command, min_size=1, max_size=25))
def test_random_sequences_keep_invariants_and_replay(tmp_path_factory, commands) -> None:
    world = World(tmp_path_factory.mktemp("p"), session_ttl_s=10**7)
    now_ms = T0_MS
    terms = {"T1": world.sign_in("T1", now_ms=now_ms), "T2": world.sign_in("T2", now_ms=now_ms)}
    done: list[tuple] = []   # (term, infno, msgid, input-builder result, response bytes)
    settled: list[tuple] = []
    for cmd in commands:
        if cmd[0] == "settle":
            _, dev, psn, lines, pre = cmd
            items = [line(str(n), fee, lv=lv, otc=otc, rxno=None if otc else "R")
                     for n, (fee, otc, lv) in enumerate(lines)]
            mid = world.next_msgid(terms[dev].fixmedins_code, now_ms)
            result, env = world.settle(terms[dev], items, who=card(psn), infno="2101" if pre else "2102",
                                       now_ms=now_ms, msgid_=mid)
            assert env.infcode == 0
            if not pre:
                settled.append((dev, mid, env.output["setlinfo"]))
                assert env.output["setlinfo"]["otc_pay"] <= env.output["setlinfo"]["crt_payb_lmt_amt"]
                done.append((dev, mid, now_ms, result.response, items, psn))
        elif cmd[0] in ("cancel", "reverse") and settled:
            dev, mid, info = settled[cmd[1] % len(settled)]
            if cmd[0] == "cancel":
                world.send(terms[dev], "2103", {"setl_id": info["setl_id"], "psn_no": info["psn_no"]}, now_ms)
            else:
                world.send(terms[dev], "2601", {"omsgid": mid, "oinfno": "2102"}, now_ms)
        elif cmd[0] == "retry" and done:
            dev, mid, settled_ms, response, items, psn = done[cmd[1] % len(done)]
            if now_ms - settled_ms > IDEMPOTENCY_KEPT_MS:
                continue  # past the retention promise: a retry may be evaluated afresh
            before = world.core.snapshot()
            result, env = world.settle(terms[dev], items, who=card(psn), now_ms=now_ms, msgid_=mid)
            if env.err_code not in ("ORIGINAL_REVERSED", "STALE_REQUEST"):
                assert result.response == response
            assert world.core.snapshot() == before
        elif cmd[0] == "advance":
            now_ms += cmd[1]
        _check_ledgers(world, now_ms)
    world.assert_replay_and_restore()
    assert all(s.status == STATUS_SETTLED for s in world.core.state.settlements.standing())
