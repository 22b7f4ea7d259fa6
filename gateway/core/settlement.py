"""Settlement arithmetic of SPEC section 7: line cuts, fund split, limits, warnings. Integers only."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

from gateway.core.ledger import clamp
from gateway.core.registry import Policy

CUT_DOCTOR_SUSPENDED = "DOCTOR_SUSPENDED"
CUT_RX_REQUIRED = "RX_REQUIRED"
PERSON_DAY_NEAR_LIMIT = "PERSON_DAY_NEAR_LIMIT"
PERSON_DAY_LIMIT_REACHED = "PERSON_DAY_LIMIT_REACHED"
INSTITUTION_MONTH_NEAR_CAP = "INSTITUTION_MONTH_NEAR_CAP"
INSTITUTION_MONTH_CAP_REACHED = "INSTITUTION_MONTH_CAP_REACHED"
BOUND_PERSON_DAY = "person_day"
BOUND_INSTITUTION_MONTH = "institution_month"


class Line(Protocol):
    """The bill-line fields the arithmetic reads (protocol's BillLine satisfies it)."""

    feedetl_sn: str
    chrgitm_lv: str
    otc: bool
    rxno: str | None
    det_item_fee_sumamt: int
    bilg_dr_codg: str


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
    otc: bool
    has_rx: bool


class Usage(NamedTuple):
    """The limits and what is already used before this bill."""

    otc_allowance_fen: int
    person_day_used_fen: int
    monthly_cap_fen: int
    institution_month_used_fen: int


class Bill(NamedTuple):
    """The computed split of one bill, as the settlement output reports it."""

    lines: tuple[LineCut, ...]
    medfee_sumamt: int
    fulamt_ownpay_amt: int
    preselfpay_amt: int
    inscp_scp_amt: int
    otc_pay: int
    rx_pay: int
    fund_pay_sumamt: int
    psn_cash_pay: int
    crt_payb_lmt_amt: int
    person_day_remaining: int
    institution_month_remaining: int
    bound_by: tuple[str, ...]
    warnings: tuple[str, ...]


def ceil_div(numerator: int, denominator: int) -> int:
    """Integer ceiling division for non-negative numerators."""
    return -(-numerator // denominator)


def cut_line(line: Line, selfpay_prop_permille: int, pharmacy: bool,
             doctor_suspended: Callable[[str], bool]) -> LineCut:
    """Cut one line into own-pay / self-pay-first / in-scope parts (SPEC section 7, 明细分割)."""
    det_fen = line.det_item_fee_sumamt
    has_rx = bool(line.rxno)
    reason = ""
    if doctor_suspended(line.bilg_dr_codg):
        reason = CUT_DOCTOR_SUSPENDED
    elif pharmacy and not line.otc and not has_rx:
        reason = CUT_RX_REQUIRED
    if reason or line.chrgitm_lv == "03":
        return LineCut(line.feedetl_sn, det_fen, 0, 0, reason, line.otc, has_rx)
    preselfpay_fen = 0
    if line.chrgitm_lv == "02":
        preselfpay_fen = ceil_div(det_fen * selfpay_prop_permille, 1000)
    return LineCut(line.feedetl_sn, 0, preselfpay_fen, det_fen - preselfpay_fen, "", line.otc, has_rx)


def _cut_warnings(cuts: Sequence[LineCut]) -> list[str]:
    codes: list[str] = []
    for cut in cuts:
        if cut.cut_reason and cut.cut_reason not in codes:
            codes.append(cut.cut_reason)
    return codes


def _level_warnings(used_fen: int, limit_fen: int, warn_permille: int, near: str, reached: str) -> list[str]:
    if used_fen >= limit_fen:
        return [reached]
    if used_fen * 1000 >= limit_fen * warn_permille:
        return [near]
    return []


class _CutTotals:
    """The sums over a bill's line cuts that the split needs, gathered in one pass."""

    __slots__ = ("fulamt_ownpay_fen", "preselfpay_fen", "inscp_fen", "otc_inscp_fen", "rx_inscp_fen")

    def __init__(self, cuts: Sequence[LineCut]) -> None:
        self.fulamt_ownpay_fen = self.preselfpay_fen = self.inscp_fen = 0
        self.otc_inscp_fen = 0   # in-scope amount of OTC lines (paid from the person's daily allowance)
        self.rx_inscp_fen = 0    # in-scope amount of prescription lines that carry an rxno
        for cut in cuts:
            self.fulamt_ownpay_fen += cut.fulamt_ownpay_amt
            self.preselfpay_fen += cut.preselfpay_amt
            self.inscp_fen += cut.inscp_scp_amt
            if cut.otc:
                self.otc_inscp_fen += cut.inscp_scp_amt
            elif cut.has_rx:
                self.rx_inscp_fen += cut.inscp_scp_amt


def compute_bill(lines: Sequence[Line], medfee_sumamt: int, insutype: str, policy: Policy, pharmacy: bool,
                 usage: Usage, doctor_suspended: Callable[[str], bool]) -> Bill:
    """Split a bill into fund and cash for a pharmacy (2101/2102) or a clinic/hospital (2206/2207).

    `usage` holds the limits and the usage before this bill; the result's remainders and warnings
    are computed from the usage after it.
    """
    cuts = tuple(cut_line(line, policy.selfpay_prop_permille, pharmacy, doctor_suspended) for line in lines)
    totals = _CutTotals(cuts)
    coverage_permille = policy.coverage(insutype)
    room_fen = max(0, usage.monthly_cap_fen - usage.institution_month_used_fen)
    bound_by: list[str] = []
    if pharmacy:
        crt_fen = max(0, usage.otc_allowance_fen - usage.person_day_used_fen)
        want_otc_fen = min(totals.otc_inscp_fen, crt_fen)
        want_rx_fen = totals.rx_inscp_fen * coverage_permille // 1000
        if totals.otc_inscp_fen > crt_fen:
            bound_by.append(BOUND_PERSON_DAY)
    else:
        crt_fen = 0
        want_otc_fen = 0
        want_rx_fen = totals.inscp_fen * coverage_permille // 1000
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
    warnings += _level_warnings(month_after_fen, usage.monthly_cap_fen, policy.warn_institution_month_permille,
                                INSTITUTION_MONTH_NEAR_CAP, INSTITUTION_MONTH_CAP_REACHED)
    return Bill(
        lines=cuts, medfee_sumamt=medfee_sumamt,
        fulamt_ownpay_amt=totals.fulamt_ownpay_fen, preselfpay_amt=totals.preselfpay_fen,
        inscp_scp_amt=totals.inscp_fen,
        otc_pay=otc_fen, rx_pay=fund_fen - otc_fen, fund_pay_sumamt=fund_fen,
        psn_cash_pay=medfee_sumamt - fund_fen, crt_payb_lmt_amt=crt_fen,
        person_day_remaining=person_remaining_fen,
        institution_month_remaining=max(0, usage.monthly_cap_fen - month_after_fen),
        bound_by=tuple(bound_by), warnings=tuple(warnings),
    )
