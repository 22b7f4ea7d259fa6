"""SPEC 13 "Who pays v2", formula by formula: pool(base), the fund split around it, the account part,
and the person-year ledger (clamp-and-debit, give-back, compaction, the year's rollover)."""

from __future__ import annotations

import datetime

import pytest

from gateway.core.clock import business_day
from gateway.core.pooling import (
    PREVIOUS_YEAR_KEPT_MS, PersonYearLedger, Pooled, YearGrant, YearUsage, business_year, pool, year_start_ms,
)
from gateway.core.registry import Policy, Pooling
from gateway.core.settlement import LineRules, Usage, YearTerms, compute_bill
from gateway.core.whopays import account_part

P = Pooling(deductible_fen=20_000, annual_cap_fen=200_000)
SHANGHAI = datetime.timezone(datetime.timedelta(hours=8))


# -- pool(base) -----------------------------------------------------------------------------------

@pytest.mark.parametrize("base, policy, used, expected", [
    # no policy: v1 (floor of the coverage share)
    (10_001, None, YearUsage(0, 0), Pooled(0, 7000, False)),
    # the deductible takes the base first
    (15_000, P, YearUsage(0, 0), Pooled(15_000, 0, False)),
    (20_000, P, YearUsage(0, 0), Pooled(20_000, 0, False)),              # exactly the deductible
    (20_001, P, YearUsage(0, 0), Pooled(20_000, 0, False)),              # floor(1 × 0.7) = 0
    (30_000, P, YearUsage(0, 0), Pooled(20_000, 7000, False)),
    (30_000, P, YearUsage(5_000, 0), Pooled(15_000, 10_500, False)),     # deductible partly used
    (30_000, P, YearUsage(20_000, 0), Pooled(0, 21_000, False)),         # deductible used up
    (30_000, P, YearUsage(25_000, 0), Pooled(0, 21_000, False)),         # over it (a lowered policy)
    (0, P, YearUsage(0, 0), Pooled(0, 0, False)),
    # the annual cap
    (10_000, P, YearUsage(20_000, 193_000), Pooled(0, 7000, False)),     # exactly the room: not capped
    (10_002, P, YearUsage(20_000, 193_000), Pooled(0, 7000, True)),      # raw floor(7001.4) = 7001 > 7000
    (10_000, P, YearUsage(20_000, 193_001), Pooled(0, 6999, True)),
    (10_000, P, YearUsage(20_000, 200_000), Pooled(0, 0, True)),         # at the cap
    (10_000, P, YearUsage(20_000, 250_000), Pooled(0, 0, True)),         # over it (a lowered policy)
    (0, P, YearUsage(20_000, 200_000), Pooled(0, 0, False)),             # nothing wanted: not bound
])
def test_pool(base: int, policy: Pooling | None, used: YearUsage, expected: Pooled) -> None:
    assert pool(base, 700, policy, used) == expected


def test_pool_with_no_coverage_pays_nothing_but_still_takes_the_deductible() -> None:
    assert pool(30_000, 0, P, YearUsage(0, 0)) == Pooled(20_000, 0, False)


# -- the fund split around it ----------------------------------------------------------------------

POLICY = Policy(otc_allowance_fen={"A": 12_000, "B": 9000, "C": 6000, "D": 6000, "E": 6000},
                coverage_permille={"310": 700}, selfpay_prop_permille=100, warn_person_day_permille=800,
                warn_institution_month_permille=900)


class _Line:
    def __init__(self, sn: str, fee: int, otc: bool) -> None:
        self.feedetl_sn, self.med_list_codg, self.chrgitm_lv, self.otc = sn, "X" + sn, "01", otc
        self.rxno = None if otc else "RX"
        self.cnt, self.pric, self.det_item_fee_sumamt, self.bilg_dr_codg = 1, fee, fee, "OP1"
        self.hosp_appr_flag, self.drug_trac_codg = "0", ()


def _bill(lines: list[_Line], pharmacy: bool = True, year: YearTerms | None = None, room: int = 10**9,
          day_used: int = 0) -> object:
    rules = LineRules(pharmacy=pharmacy, catalogue_on=False, trace_required=False, selfpay_prop_permille=100,
                      doctor_suspended=lambda code: False)
    usage = Usage(12_000 if pharmacy else 0, day_used, room, 0)
    return compute_bill(lines, [None] * len(lines), sum(x.det_item_fee_sumamt for x in lines), "310", POLICY,
                        rules, usage, year or YearTerms(P, True, YearUsage(0, 0)))


def test_pharmacy_rx_lines_pass_the_deductible_then_the_coverage() -> None:
    bill = _bill([_Line("1", 30_000, otc=False), _Line("2", 1000, otc=True)])
    assert (bill.act_pay_dedc, bill.rx_pay, bill.otc_pay, bill.fund_pay_sumamt) == (20_000, 7000, 1000, 8000)
    assert (bill.year_pool_fen, bill.person_year_pool_remaining, bill.bound_by) == (7000, 193_000, ())


def test_pharmacy_without_outpatient_pooling_pays_no_rx_and_takes_no_deductible() -> None:
    bill = _bill([_Line("1", 30_000, otc=False), _Line("2", 1000, otc=True)],
                 year=YearTerms(P, False, YearUsage(0, 199_999)))
    assert (bill.act_pay_dedc, bill.rx_pay, bill.otc_pay) == (0, 0, 1000)
    # Not computed with P: never bound by person_year there; the remainder still shows the year.
    assert bill.bound_by == () and bill.person_year_pool_remaining == 1


def test_clinic_pools_every_in_scope_line() -> None:
    bill = _bill([_Line("1", 30_000, otc=False), _Line("2", 10_000, otc=True)], pharmacy=False)
    assert (bill.act_pay_dedc, bill.fund_pay_sumamt, bill.rx_pay, bill.otc_pay) == (20_000, 14_000, 14_000, 0)


def test_the_month_cut_comes_after_pooling_and_keeps_the_deductible() -> None:
    bill = _bill([_Line("1", 30_000, otc=False)], room=5000)
    assert (bill.act_pay_dedc, bill.rx_pay, bill.year_pool_fen) == (20_000, 5000, 5000)
    assert bill.bound_by == ("institution_month",)
    assert bill.person_year_pool_remaining == 195_000


def test_bound_by_order_is_day_year_month() -> None:
    bill = _bill([_Line("1", 30_000, otc=False), _Line("2", 13_000, otc=True)], room=100,
                 year=YearTerms(P, True, YearUsage(20_000, 195_000)))
    assert bill.bound_by == ("person_day", "person_year", "institution_month")


@pytest.mark.parametrize("paid_before, fee, reached", [
    (193_000, 10_000, True),      # exactly reaches the cap with this bill
    (193_001, 10_000, True),      # capped by it
    (192_999, 10_000, False),     # one fen short
    (200_000, 0, True),           # already there: warned even though the bill adds nothing
])
def test_person_year_cap_reached_warning(paid_before: int, fee: int, reached: bool) -> None:
    lines = [_Line("1", fee, otc=False)] if fee else [_Line("1", 500, otc=True)]
    bill = _bill(lines, year=YearTerms(P, True, YearUsage(20_000, paid_before)))
    assert ("PERSON_YEAR_CAP_REACHED" in bill.warnings) is reached
    assert bill.person_year_pool_remaining == max(0, 200_000 - paid_before - bill.rx_pay)


def test_no_policy_means_no_year_warning_and_a_nil_remainder() -> None:
    bill = _bill([_Line("1", 30_000, otc=False)], year=YearTerms(None, True, YearUsage(0, 10**9)))
    assert (bill.act_pay_dedc, bill.rx_pay, bill.person_year_pool_remaining) == (0, 21_000, None)
    assert "PERSON_YEAR_CAP_REACHED" not in bill.warnings


# -- the account part ------------------------------------------------------------------------------

def _fund_bill(medfee: int, fund: int, not_in_catalogue: int = 0) -> object:
    return _bill([_Line("1", medfee, otc=False)])._replace(
        medfee_sumamt=medfee, fund_pay_sumamt=fund, not_in_catalogue_fen=not_in_catalogue)


@pytest.mark.parametrize("payer, balance, expected", [
    (None, 50_000, (3000, 3000, 0, 0, 3000, None, None, False)),               # flag "0"
    ("PSN1", 50_000, (3000, 3000, 3000, 0, 0, "PSN1", 47_000, False)),          # the balance covers it
    ("PSN1", 3000, (3000, 3000, 3000, 0, 0, "PSN1", 0, False)),                 # exactly the balance
    ("PSN1", 2999, (3000, 3000, 2999, 0, 1, "PSN1", 0, True)),                  # one fen short
    ("PSN1", 0, (3000, 3000, 0, 0, 3000, "PSN1", 0, True)),                     # no account
    ("PSN1", -500, (3000, 3000, 0, 0, 3000, "PSN1", -500, True)),               # overdrawn: max(0, balance)
    ("OWN1", 50_000, (3000, 3000, 3000, 3000, 0, "OWN1", 47_000, False)),       # mutual aid
])
def test_account_part(payer: str | None, balance: int, expected: tuple) -> None:
    assert tuple(account_part(_fund_bill(10_000, 7000), payer, "PSN1", balance)) == expected


def test_an_account_never_pays_for_goods_outside_the_catalogue() -> None:
    part = account_part(_fund_bill(10_000, 4000, not_in_catalogue=2500), "PSN1", "PSN1", 50_000)
    assert (part.psn_part_amt, part.payable, part.acct_pay, part.psn_cash_pay) == (6000, 3500, 3500, 2500)
    assert not part.bound
    part = account_part(_fund_bill(10_000, 4000, not_in_catalogue=2500), "PSN1", "PSN1", 3499)
    assert (part.acct_pay, part.psn_cash_pay, part.bound) == (3499, 2501, True)


# -- the person-year ledger ------------------------------------------------------------------------

def test_clamp_and_debit_grants_up_to_each_pot_and_credit_restores_exactly() -> None:
    ledger = PersonYearLedger()
    assert ledger.clamp_and_debit("A", "310", 2024, 15_000, 20_000, 500, 1000) == YearGrant(15_000, 500)
    assert ledger.clamp_and_debit("A", "310", 2024, 15_000, 20_000, 800, 1000) == YearGrant(5000, 500)
    assert ledger.used("A", "310", 2024) == YearUsage(20_000, 1000)
    assert ledger.clamp_and_debit("A", "310", 2024, 7, None, 9, None) == YearGrant(7, 9)   # unchecked
    assert ledger.used("A", "390", 2024) == YearUsage(0, 0) and ledger.used("A", "310", 2023) == YearUsage(0, 0)
    ledger.credit("A", "310", 2024, 20_007, 1009)
    assert ledger.records() == 0 and ledger.snapshot() == PersonYearLedger().snapshot()
    with pytest.raises(AssertionError):
        ledger.credit("A", "310", 2024, 1, 0)


def _ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, ms: int = 0) -> int:
    at = datetime.datetime(year, month, day, hour, minute, second, tzinfo=SHANGHAI)
    return int(at.timestamp()) * 1000 + ms


def test_the_year_turns_at_shanghai_midnight_on_1_january() -> None:
    last_ms = _ms(2024, 12, 31, 23, 59, 59, 999)
    assert business_year(last_ms) == 2024 and business_year(last_ms + 1) == 2025
    assert year_start_ms(2025) == last_ms + 1
    # 16:00 UTC on 31 December is already the new year in Shanghai.
    utc = int(datetime.datetime(2024, 12, 31, 16, tzinfo=datetime.timezone.utc).timestamp() * 1000)
    assert business_year(utc) == 2025 and business_year(utc - 1) == 2024
    assert business_day(utc) == business_day(last_ms) + 1


def test_the_previous_year_is_kept_for_undo_then_compacted() -> None:
    ledger = PersonYearLedger()
    ledger.expire(_ms(2024, 12, 31, 23))
    ledger.clamp_and_debit("A", "310", 2024, 100, None, 50, None)
    ledger.clamp_and_debit("A", "310", 2025, 1, None, 2, None)
    start = year_start_ms(2025)
    ledger.expire(start + PREVIOUS_YEAR_KEPT_MS - 1)
    assert ledger.used("A", "310", 2024) == YearUsage(100, 50) and ledger.records() == 2
    ledger.credit("A", "310", 2024, 100, 50)     # a 2601 in time gives back to the old year
    ledger.clamp_and_debit("A", "310", 2024, 100, None, 50, None)
    ledger.expire(start + PREVIOUS_YEAR_KEPT_MS)
    assert ledger.floor_year == 2025 and ledger.records() == 1
    assert ledger.used("A", "310", 2024) == YearUsage(0, 0)
    ledger.clamp_and_debit("A", "310", 2024, 100, None, 50, None)   # a closed year takes nothing
    assert ledger.records() == 1 and ledger.totals(2025) == {("A", "310"): YearUsage(1, 2)}


def test_snapshot_round_trip() -> None:
    ledger = PersonYearLedger()
    ledger.expire(_ms(2025, 1, 1, 1))
    ledger.clamp_and_debit("B", "390", 2024, 0, None, 9, None)
    ledger.clamp_and_debit("A", "310", 2025, 2**40, None, 2**45, None)
    snap = ledger.snapshot()
    assert snap == {"floor_year": 2024, "rows": [[2024, "390", "B", 0, 9], [2025, "310", "A", 2**40, 2**45]]}
    assert PersonYearLedger.restore(snap).snapshot() == snap
