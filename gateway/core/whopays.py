"""Who pays (SPEC 13 "Who pays v2"): the payer's checks, the account part of a bill, and what a
settlement takes from (and gives back to) the person-year ledger and the payer's account.

The fund's part comes first (settlement.compute_bill: the line cut, pooling, the month cut); the
patient's part `psn_part_amt = medfee_sumamt − fund_pay_sumamt` is then paid from the payer's
account up to its balance, except what is for goods outside the catalogue, and the rest in cash.
"""

from __future__ import annotations

import datetime
from typing import NamedTuple

from gateway.core.accounts import AccountLedger
from gateway.core.config import Rejection
from gateway.core.overlay import Overlay
from gateway.core.pooling import PersonYearLedger, YearGrant
from gateway.core.settlement import Bill
from gateway.core.settlements import Settlement
from protocol import ErrCode

__all__ = ["AccountPart", "BOUND_ACCOUNT_BALANCE", "account_part", "check_payer", "give_back", "take", "take_year"]

BOUND_ACCOUNT_BALANCE = "account_balance"


def check_payer(overlay: Overlay, acct_used_flag: str, acct_payer_psn_no: str | None, patient_psn_no: str,
                date: datetime.date) -> str | None:
    """The account owner who pays (None: the account is not used), after SPEC 13's mutual-aid rules.

    Raises:
        Rejection: PERSON_INELIGIBLE for a blocked payer other than the patient, then
            MUTUAL_AID_NOT_AUTHORIZED when no family link (owner = payer, member = patient) is
            valid on `date`.
    """
    if acct_used_flag != "1":
        return None
    payer = acct_payer_psn_no or patient_psn_no
    if payer == patient_psn_no:
        return payer
    if payer in overlay.blocked_persons:
        raise Rejection(ErrCode.PERSON_INELIGIBLE, "input.acct_payer_psn_no: the paying person is not eligible")
    if not overlay.linked(payer, patient_psn_no, date):
        # The evidence names the payer, the subject of the MUTUAL_AID_REFUSED alert (SPEC 14).
        raise Rejection(ErrCode.MUTUAL_AID_NOT_AUTHORIZED,
                        f"input.acct_payer_psn_no: no family link lets {payer} pay for this patient today",
                        evidence={"payer": payer, "patient": patient_psn_no})
    return payer


class AccountPart(NamedTuple):
    """The patient's part of a bill and who pays it: the account (`acct_pay`) and cash."""

    psn_part_amt: int
    payable: int                  # what the account may pay: the part less non-catalogue goods
    acct_pay: int
    acct_mulaid_pay: int          # acct_pay when the payer is not the patient (家庭共济)
    psn_cash_pay: int
    payer: str | None             # acct_payer_psn_no (None: the account is not used)
    balc: int | None              # the payer's balance after this bill (None: not used)
    bound: bool                   # the balance did not cover `payable`


def account_part(bill: Bill, payer: str | None, patient_psn_no: str, balance_fen: int) -> AccountPart:
    """Split the patient's part between the payer's account (`balance_fen` now) and cash."""
    psn_part_fen = bill.medfee_sumamt - bill.fund_pay_sumamt
    payable_fen = psn_part_fen - bill.not_in_catalogue_fen
    assert payable_fen >= 0, (psn_part_fen, bill.not_in_catalogue_fen)
    if payer is None:
        return AccountPart(psn_part_fen, payable_fen, 0, 0, psn_part_fen, None, None, False)
    usable_fen = max(0, balance_fen)
    acct_fen = min(payable_fen, usable_fen)
    return AccountPart(psn_part_fen, payable_fen, acct_fen, acct_fen if payer != patient_psn_no else 0,
                       psn_part_fen - acct_fen, payer, balance_fen - acct_fen, payable_fen > usable_fen)


def _year_pool_fen(settlement: Settlement) -> int:
    # A pharmacy's pooled payment is its rx_pay; a clinic's whole fund, which is its rx_pay too.
    return settlement.rx_pay


def take(years: PersonYearLedger, accounts: AccountLedger, settlement: Settlement,
         pooling_fen: list[int] | tuple[int, int] | None, reinstating: bool = False) -> tuple[str, int] | None:
    """Debit a settlement's deductible, pooled payment and account payment.

    `pooling_fen`: [deductible_fen, annual_cap_fen] the split was cut by (None: unchecked, as a
    re-instatement is). Only a re-instatement may overdraw the payer's account (SPEC 13).
    Returns (payer, balance_fen after) when this payment left the payer's balance below 0 (the
    commit raises ACCOUNT_OVERDRAWN, SPEC 14), else None.
    """
    take_year(years, settlement, pooling_fen)
    payer = settlement.acct_payer_psn_no or settlement.psn_no
    after_fen = accounts.debit(payer, settlement.acct_pay, overdraft=reinstating)
    return (payer, after_fen) if settlement.acct_pay and after_fen < 0 else None


def take_year(years: PersonYearLedger, settlement: Settlement, pooling_fen: list[int] | tuple[int, int] | None) -> None:
    """Debit the settlement's deductible and pooled payment, within `pooling_fen` limits if given."""
    limits = (None, None) if pooling_fen is None else tuple(pooling_fen)
    want = YearGrant(settlement.act_pay_dedc, _year_pool_fen(settlement))
    grant = years.clamp_and_debit(settlement.psn_no, settlement.insutype, settlement.month // 100,
                                  want.dedc_fen, limits[0], want.pool_fen, limits[1])
    # The single writer computed the split from the same ledger a moment ago (see state._debit).
    assert grant == want, (grant, want)


def give_back(years: PersonYearLedger, accounts: AccountLedger, settlement: Settlement) -> None:
    """Credit back exactly what `take` debited (a cancellation or reversal), links or not."""
    years.credit(settlement.psn_no, settlement.insutype, settlement.month // 100, settlement.act_pay_dedc,
                 _year_pool_fen(settlement))
    accounts.credit(settlement.acct_payer_psn_no or settlement.psn_no, settlement.acct_pay)
