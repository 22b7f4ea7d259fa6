"""Settlement arithmetic of SPEC sections 7 and 13: line cuts, fund split, limits, warnings. Integers only.

A line is cut by the first rule that applies (SPEC 13's order): a suspended doctor, a code the
catalogue (when on) has no row for on the business day, a prescription drug without rxno at a
pharmacy, restricted use without approval, a pharmacy line without a traceability code once they
are required. An uncut line is paid up to its price cap; what is over the cap is own-pay
(`overlmt_amt`), and the rest splits by the class the catalogue (or, without a row, the terminal)
gives it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

from gateway.core.ledger import clamp
from gateway.core.pooling import NOT_POOLED, Pooled, YearUsage, pool
from gateway.core.registry import Policy, Pooling

CUT_DOCTOR_SUSPENDED = "DOCTOR_SUSPENDED"
CUT_NOT_IN_CATALOGUE = "NOT_IN_CATALOGUE"
CUT_RX_REQUIRED = "RX_REQUIRED"
CUT_RESTRICTED_USE = "RESTRICTED_USE"
CUT_TRACE_CODE_MISSING = "TRACE_CODE_MISSING"
CUT_REASONS = (CUT_DOCTOR_SUSPENDED, CUT_NOT_IN_CATALOGUE, CUT_RX_REQUIRED, CUT_RESTRICTED_USE,
               CUT_TRACE_CODE_MISSING)
CATALOGUE_OVERRIDE = "CATALOGUE_OVERRIDE"
PERSON_DAY_NEAR_LIMIT = "PERSON_DAY_NEAR_LIMIT"
PERSON_DAY_LIMIT_REACHED = "PERSON_DAY_LIMIT_REACHED"
INSTITUTION_MONTH_NEAR_CAP = "INSTITUTION_MONTH_NEAR_CAP"
INSTITUTION_MONTH_CAP_REACHED = "INSTITUTION_MONTH_CAP_REACHED"
PERSON_YEAR_CAP_REACHED = "PERSON_YEAR_CAP_REACHED"
BOUND_PERSON_DAY = "person_day"
BOUND_INSTITUTION_MONTH = "institution_month"
BOUND_PERSON_YEAR = "person_year"          # SPEC 13 outpatient pooling's yearly cap


class Line(Protocol):
    """The bill-line fields the arithmetic reads (protocol's BillLine satisfies it)."""

    feedetl_sn: str
    med_list_codg: str
    chrgitm_lv: str | None                 # None: not sent (allowed when the catalogue decides)
    otc: bool | None
    rxno: str | None
    cnt: int
    pric: int
    det_item_fee_sumamt: int
    bilg_dr_codg: str
    hosp_appr_flag: str
    drug_trac_codg: tuple[str, ...]


class CatalogueRow(Protocol):
    """The catalogue row fields the cut reads (gateway.core.catalogue.Row satisfies it)."""

    chrgitm_lv: str
    otc: bool
    selfpay_prop_permille: int | None
    pric_uplmt_fen: int | None
    lmt_used: bool


class LineRules(NamedTuple):
    """What the cut needs to know besides the line: where, and which rules are on."""

    pharmacy: bool
    catalogue_on: bool
    trace_required: bool                 # pharmacy lines need a traceability code today
    selfpay_prop_permille: int           # the policy's, for rows without their own
    doctor_suspended: Callable[[str], bool]


# The value types below are NamedTuples rather than frozen dataclasses: just as immutable, but
# built by one tuple allocation, where a frozen dataclass sets every field through
# object.__setattr__ (they are created several times per settlement on the hot path).
class LineCut(NamedTuple):
    """One line of 明细分割: own-pay, self-pay-first and in-scope amounts, and why it was cut."""

    feedetl_sn: str
    fulamt_ownpay_amt: int
    preselfpay_amt: int
    inscp_scp_amt: int
    cut_reason: str
    otc: bool | None                    # the used OTC flag (the catalogue's, else the terminal's)
    has_rx: bool
    overlmt_amt: int = 0                # over the price cap (超限价自费)
    chrgitm_lv: str | None = None       # the used class
    overridden: bool = False            # the terminal sent a class or OTC flag the catalogue contradicts
    bilg_dr_codg: str = ""


class Usage(NamedTuple):
    """The limits and what is already used before this bill."""

    otc_allowance_fen: int
    person_day_used_fen: int
    monthly_cap_fen: int
    institution_month_used_fen: int


class YearTerms(NamedTuple):
    """Outpatient pooling for this bill (SPEC 13): the insutype's policy, the pharmacy's switch,
    and the person-year usage before this bill."""

    pooling: Pooling | None
    outpatient_pooling: bool             # False: a pharmacy whose rx lines outpatient pooling does not pay
    used: YearUsage


V1_YEAR = YearTerms(None, True, YearUsage(0, 0))


class Bill(NamedTuple):
    """The computed split of one bill, as the settlement output reports it."""

    lines: tuple[LineCut, ...]
    medfee_sumamt: int
    fulamt_ownpay_amt: int
    preselfpay_amt: int
    inscp_scp_amt: int
    overlmt_amt: int
    not_in_catalogue_fen: int           # Σ det of NOT_IN_CATALOGUE lines (an account never pays them)
    otc_pay: int
    rx_pay: int
    fund_pay_sumamt: int
    psn_cash_pay: int
    crt_payb_lmt_amt: int
    person_day_remaining: int
    institution_month_remaining: int
    bound_by: tuple[str, ...]
    warnings: tuple[str, ...]
    act_pay_dedc: int = 0               # deductible this bill uses (SPEC 13)
    year_pool_fen: int = 0              # what it adds to the person-year's pooled paid
    person_year_pool_remaining: int | None = None    # None without a pooling policy


def ceil_div(numerator: int, denominator: int) -> int:
    """Integer ceiling division for non-negative numerators."""
    return -(-numerator // denominator)


def _cut_reason(line: Line, row: CatalogueRow | None, otc: bool | None, rules: LineRules) -> str:
    """The first of SPEC 13's five cut rules that applies to the line, or ""."""
    if rules.doctor_suspended(line.bilg_dr_codg):
        return CUT_DOCTOR_SUSPENDED
    if rules.catalogue_on and row is None:
        return CUT_NOT_IN_CATALOGUE
    if rules.pharmacy and not otc and not line.rxno:
        return CUT_RX_REQUIRED
    if row is not None and row.lmt_used and line.hosp_appr_flag != "1":
        return CUT_RESTRICTED_USE
    if rules.pharmacy and rules.trace_required and not line.drug_trac_codg:
        return CUT_TRACE_CODE_MISSING
    return ""


def cut_line(line: Line, row: CatalogueRow | None, rules: LineRules) -> LineCut:
    """Cut one line into own-pay, over-cap, self-pay-first and in-scope parts (SPEC 7 and 13, 明细分割).

    `row` is the line's catalogue row valid on the business day (None: no row, or no catalogue).
    """
    det_fen = line.det_item_fee_sumamt
    has_rx = bool(line.rxno)
    if row is None:
        level, otc, overridden = line.chrgitm_lv, line.otc, False
    else:
        level, otc = row.chrgitm_lv, row.otc
        overridden = ((line.chrgitm_lv is not None and line.chrgitm_lv != level)
                      or (line.otc is not None and line.otc != otc))
    reason = _cut_reason(line, row, otc, rules)
    if reason:
        return LineCut(line.feedetl_sn, det_fen, 0, 0, reason, otc, has_rx, 0, level, overridden,
                       line.bilg_dr_codg)
    cap_fen = line.pric if row is None or row.pric_uplmt_fen is None else min(line.pric, row.pric_uplmt_fen)
    allowed_fen = line.cnt * cap_fen
    overlmt_fen = det_fen - allowed_fen
    if level == "03":
        return LineCut(line.feedetl_sn, allowed_fen, 0, 0, "", otc, has_rx, overlmt_fen, level, overridden,
                       line.bilg_dr_codg)
    preselfpay_fen = 0
    if level == "02":
        prop = rules.selfpay_prop_permille if row is None or row.selfpay_prop_permille is None \
            else row.selfpay_prop_permille
        preselfpay_fen = ceil_div(allowed_fen * prop, 1000)
    return LineCut(line.feedetl_sn, 0, preselfpay_fen, allowed_fen - preselfpay_fen, "", otc, has_rx,
                   overlmt_fen, level, overridden, line.bilg_dr_codg)


def _cut_warnings(cuts: Sequence[LineCut]) -> list[str]:
    """Each cut reason once, in the order lines first raise it, then CATALOGUE_OVERRIDE once."""
    codes: list[str] = []
    for cut in cuts:
        if cut.cut_reason and cut.cut_reason not in codes:
            codes.append(cut.cut_reason)
    if any(cut.overridden for cut in cuts):
        codes.append(CATALOGUE_OVERRIDE)
    return codes


def _level_warnings(used_fen: int, limit_fen: int, warn_permille: int, near: str, reached: str) -> list[str]:
    if used_fen >= limit_fen:
        return [reached]
    if used_fen * 1000 >= limit_fen * warn_permille:
        return [near]
    return []


class _CutTotals:
    """The sums over a bill's line cuts that the split needs, gathered in one pass."""

    __slots__ = ("fulamt_ownpay_fen", "preselfpay_fen", "inscp_fen", "otc_inscp_fen", "rx_inscp_fen",
                 "overlmt_fen", "not_in_catalogue_fen")

    def __init__(self, cuts: Sequence[LineCut]) -> None:
        self.fulamt_ownpay_fen = self.preselfpay_fen = self.inscp_fen = self.overlmt_fen = 0
        self.otc_inscp_fen = 0   # in-scope amount of OTC lines (paid from the person's daily allowance)
        self.rx_inscp_fen = 0    # in-scope amount of prescription lines that carry an rxno
        self.not_in_catalogue_fen = 0
        for cut in cuts:
            self.fulamt_ownpay_fen += cut.fulamt_ownpay_amt
            self.preselfpay_fen += cut.preselfpay_amt
            self.inscp_fen += cut.inscp_scp_amt
            self.overlmt_fen += cut.overlmt_amt
            if cut.cut_reason == CUT_NOT_IN_CATALOGUE:
                self.not_in_catalogue_fen += cut.fulamt_ownpay_amt
            if cut.otc:
                self.otc_inscp_fen += cut.inscp_scp_amt
            elif cut.has_rx:
                self.rx_inscp_fen += cut.inscp_scp_amt


def _pooled(totals: _CutTotals, pharmacy: bool, coverage_permille: int, year: YearTerms) -> Pooled:
    """pool(rx_inscp) at a pharmacy (nothing where outpatient pooling is off), pool(Σ inscp) at a clinic."""
    if pharmacy and not year.outpatient_pooling:
        return NOT_POOLED
    return pool(totals.rx_inscp_fen if pharmacy else totals.inscp_fen, coverage_permille, year.pooling, year.used)


def compute_bill(lines: Sequence[Line], rows: Sequence[CatalogueRow | None], medfee_sumamt: int, insutype: str,
                 policy: Policy, rules: LineRules, usage: Usage, year: YearTerms = V1_YEAR) -> Bill:
    """Split a bill into fund and cash for a pharmacy (2101/2102) or a clinic/hospital (2206/2207).

    `rows[i]` is line i's catalogue row valid on the business day (None: none, or no catalogue).
    `usage` and `year` hold the limits and the usage before this bill; the result's remainders and
    warnings are computed from the usage after it. Who pays the patient's part (account or cash)
    is decided after this (gateway/core/whopays.py).
    """
    pharmacy = rules.pharmacy
    cuts = tuple(cut_line(line, row, rules) for line, row in zip(lines, rows))
    totals = _CutTotals(cuts)
    coverage_permille = policy.coverage(insutype)
    room_fen = max(0, usage.monthly_cap_fen - usage.institution_month_used_fen)
    bound_by: list[str] = []
    crt_fen = want_otc_fen = 0
    if pharmacy:
        crt_fen = max(0, usage.otc_allowance_fen - usage.person_day_used_fen)
        want_otc_fen = min(totals.otc_inscp_fen, crt_fen)
        if totals.otc_inscp_fen > crt_fen:
            bound_by.append(BOUND_PERSON_DAY)
    pooled = _pooled(totals, pharmacy, coverage_permille, year)
    want_rx_fen = pooled.pool_fen
    if pooled.capped:
        bound_by.append(BOUND_PERSON_YEAR)
    if want_otc_fen + want_rx_fen > room_fen:
        bound_by.append(BOUND_INSTITUTION_MONTH)
    grant = clamp(want_otc_fen, None, want_otc_fen + want_rx_fen, room_fen)
    otc_fen, fund_fen = grant.person_fen, grant.institution_fen
    month_after_fen = usage.institution_month_used_fen + fund_fen
    warnings = _cut_warnings(cuts)
    person_remaining_fen = 0
    if pharmacy:
        day_after_fen = usage.person_day_used_fen + otc_fen
        person_remaining_fen = max(0, usage.otc_allowance_fen - day_after_fen)
        warnings += _level_warnings(day_after_fen, usage.otc_allowance_fen, policy.warn_person_day_permille,
                                    PERSON_DAY_NEAR_LIMIT, PERSON_DAY_LIMIT_REACHED)
    # What this bill adds to the person-year's pooled paid: rx_pay at a pharmacy, the fund at a
    # clinic (where otc_pay is 0, so it is rx_pay there too).
    year_pool_fen = fund_fen - otc_fen
    year_remaining_fen = None
    if year.pooling is not None:
        year_paid_fen = year.used.pool_paid_fen + year_pool_fen
        year_remaining_fen = max(0, year.pooling.annual_cap_fen - year_paid_fen)
        if year_paid_fen >= year.pooling.annual_cap_fen:
            warnings.append(PERSON_YEAR_CAP_REACHED)
    warnings += _level_warnings(month_after_fen, usage.monthly_cap_fen, policy.warn_institution_month_permille,
                                INSTITUTION_MONTH_NEAR_CAP, INSTITUTION_MONTH_CAP_REACHED)
    return Bill(
        lines=cuts, medfee_sumamt=medfee_sumamt,
        fulamt_ownpay_amt=totals.fulamt_ownpay_fen, preselfpay_amt=totals.preselfpay_fen,
        inscp_scp_amt=totals.inscp_fen, overlmt_amt=totals.overlmt_fen,
        not_in_catalogue_fen=totals.not_in_catalogue_fen,
        otc_pay=otc_fen, rx_pay=fund_fen - otc_fen, fund_pay_sumamt=fund_fen,
        psn_cash_pay=medfee_sumamt - fund_fen, crt_payb_lmt_amt=crt_fen,
        person_day_remaining=person_remaining_fen,
        institution_month_remaining=max(0, usage.monthly_cap_fen - month_after_fen),
        bound_by=tuple(bound_by), warnings=tuple(warnings),
        act_pay_dedc=pooled.act_pay_dedc, year_pool_fen=year_pool_fen,
        person_year_pool_remaining=year_remaining_fen,
    )
