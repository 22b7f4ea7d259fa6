"""Read-only look-ups for ops: institutions with their month ledger, persons with their day ledger.

They read the core's live state between awaits (single writer, so the view is consistent) and
answer JSON-able dicts; amounts are integer fen.
"""

from __future__ import annotations

from typing import Any

from gateway.admin.bodies import ApiError
from gateway.core.clock import business_day, business_month, day_date
from gateway.core.ledger import PERSON_DAYS_KEPT
from gateway.core.overlay import link_view

__all__ = ["institution_view", "person_view", "terminal_view", "operator_view"]


def institution_view(core: Any, code: str, now_ms: int) -> dict[str, Any]:
    """GET /admin/v1/institutions/{code}: kind, grade, status, cap, this month's use and room."""
    overlay = core.state.overlay
    inst = overlay.institutions.get(code)
    if inst is None:
        raise ApiError(404, f"no institution {code!r}", "code")
    month = business_month(now_ms)
    used_fen = core.state.ledger.institution_month_used(code, month)
    allowance_fen = overlay.policy.otc_allowance_fen.get(inst.grade, 0) if inst.kind == "pharmacy" else 0
    return {"code": inst.code, "name": inst.name, "kind": inst.kind, "admdvs": inst.admdvs,
            "grade": inst.grade, "status": inst.status, "held": inst.held, "monthly_cap_fen": inst.monthly_cap_fen,
            "month": f"{month:06d}", "month_used_fen": used_fen,
            "month_room_fen": max(0, inst.monthly_cap_fen - used_fen),
            "otc_allowance_day_fen": allowance_fen,
            "terminals": sorted(t.dev_no for t in overlay.terminals.values() if t.institution == code)}


def person_view(core: Any, psn_no: str, now_ms: int) -> dict[str, Any]:
    """GET /admin/v1/persons/{psn_no}: OTC fund used per kept day, blocked flag, filings."""
    overlay = core.state.overlay
    today = business_day(now_ms)
    days = [{"date": day_date(day).isoformat(), "otc_used_fen": core.state.ledger.person_day_used(psn_no, day)}
            for day in range(today - PERSON_DAYS_KEPT + 1, today + 1)]
    filings = [{"admdvs": f.admdvs, "valid_from": f.valid_from.isoformat(), "valid_to": f.valid_to.isoformat()}
               for f in overlay.filings.get(psn_no, ())]
    return {"psn_no": psn_no, "blocked": psn_no in overlay.blocked_persons, "days": days, "filings": filings,
            **_who_pays_view(core, psn_no, business_month(now_ms) // 100)}


def _who_pays_view(core: Any, psn_no: str, this_year: int) -> dict[str, Any]:
    """SPEC 13: the person-year ledger (kept years), the account and the family links."""
    state = core.state
    years = [{"year": year, "insutype": insutype, "deductible_used_fen": used.dedc_used_fen,
              "pool_paid_fen": used.pool_paid_fen, **_year_room(state.overlay.policy.pooling.get(insutype), used)}
             for year, insutype, used in state.years.years_of(psn_no)]
    accounts = state.accounts
    balance_fen = accounts.balance(psn_no)
    account = {"enabled": accounts.enabled, "opening_fen": accounts.opening_balance(psn_no),
               "balance_fen": balance_fen if accounts.enabled else None, "overdrawn": balance_fen < 0}
    links = core.state.overlay.links_of(psn_no)
    return {"year": this_year, "person_years": years, "account": account,
            "family_links": {"pays_for": [link_view(x) for x in links if x.owner == psn_no],
                             "paid_by": [link_view(x) for x in links if x.member == psn_no]}}


def _year_room(pooling: Any, used: Any) -> dict[str, Any]:
    if pooling is None:
        return {"deductible_fen": None, "annual_cap_fen": None, "deductible_remaining_fen": None,
                "pool_remaining_fen": None}
    return {"deductible_fen": pooling.deductible_fen, "annual_cap_fen": pooling.annual_cap_fen,
            "deductible_remaining_fen": max(0, pooling.deductible_fen - used.dedc_used_fen),
            "pool_remaining_fen": max(0, pooling.annual_cap_fen - used.pool_paid_fen)}


def terminal_view(core: Any, dev_no: str) -> dict[str, Any]:
    """GET /admin/v1/terminals/{dev_no}: institution and status."""
    terminal = core.state.overlay.terminals.get(dev_no)
    if terminal is None:
        raise ApiError(404, f"no terminal {dev_no!r}", "dev_no")
    return {"dev_no": terminal.dev_no, "institution": terminal.institution, "status": terminal.status}


def operator_view(core: Any, code: str) -> dict[str, Any]:
    """GET /admin/v1/operators/{code}: institution and status."""
    operator = core.state.overlay.operators.get(code)
    if operator is None:
        raise ApiError(404, f"no operator {code!r}", "code")
    return {"code": operator.code, "institution": operator.institution, "status": operator.status}
