"""The bodies of SPEC section 14's reads: the monthly report, the day's alerts and the clearing.

Pure functions of the core's state (`State`): the admin API answers them as JSON and
`yibao-gateway report` prints them (JSON, or CSV through `csv_rows`) from a data directory, so both
show the same figures. A bad `month`, `date` or `by` raises FieldError naming the field.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Iterable
from typing import Any

from gateway.core.clock import date_day, day_date, first_day_of_month, month_of_day
from gateway.core.governance import FieldError
from gateway.core.supervision import (
    ALERT_CODES, AVG_BILL_OVER_LAST_YEAR, BOUND_LIMITS, BY_DIMENSIONS, BY_DOCTOR, LARGE_BILL, MULTI_INSTITUTION_DAY,
    Day, Row, institution_counts,
)

__all__ = [
    "ALERTS_PER_DAY_MAX", "ALERT_COLUMNS", "CLEARING_COLUMNS", "MONTHLY_COLUMNS", "alerts_body", "clearing_body",
    "csv_rows", "monthly_body", "parse_by", "parse_date", "parse_month",
]

# Alerts in one answer (the first ones in code order, then subject order).
ALERTS_PER_DAY_MAX = 10_000

MONTHLY_COLUMNS = ("key", "setl_cnt", "psn_cnt", "medfee_fen", "fund_fen", "acct_fen", "cash_fen", "ownpay_fen",
                   "avg_bill_fen", "selfpay_permille", "voucher_permille", "bound_person_day",
                   "bound_institution_month", "bound_person_year", "avg_bill_last_year_fen", "avg_bill_yoy_permille")
ALERT_COLUMNS = ("code", "subject", "detail")
CLEARING_COLUMNS = ("institution", "setl_cnt", "medfee_fen", "fund_fen", "acct_fen", "held")


def parse_month(text: str | None) -> int:
    """A "YYYYMM" month as the integer yyyymm; raises FieldError("month") when it is not one."""
    if text is None or not re.fullmatch(r"[0-9]{6}", text) or not 1 <= int(text[4:]) <= 12:
        raise FieldError("month", "must be YYYYMM (six digits, month 01-12)")
    return int(text)


def parse_date(text: str | None) -> int:
    """A "YYYYMMDD" real date as its Shanghai day number; raises FieldError("date") otherwise."""
    if text is None or not re.fullmatch(r"[0-9]{8}", text):
        raise FieldError("date", "must be YYYYMMDD")
    try:
        return date_day(datetime.date(int(text[:4]), int(text[4:6]), int(text[6:])))
    except ValueError:
        raise FieldError("date", f"not a real date {text!r}") from None


def parse_by(text: str | None) -> str:
    """The report's dimension; raises FieldError("by") unless institution, doctor or operator."""
    if text not in BY_DIMENSIONS:
        raise FieldError("by", "must be institution, doctor or operator")
    return text


def _avg(row: Row | None) -> int | None:
    return None if row is None or row.setl_cnt <= 0 else row.medfee_fen // row.setl_cnt


def _last_year(month: int) -> int:
    return month - 100


def _monthly_row(key: str, row: Row, last: Row | None, doctor: bool) -> dict[str, Any]:
    avg_fen = row.medfee_fen // row.setl_cnt
    last_avg_fen = _avg(last)
    return {
        "key": key, "setl_cnt": row.setl_cnt, "psn_cnt": row.psn_cnt, "medfee_fen": row.medfee_fen,
        "fund_fen": None if doctor else row.fund_fen, "acct_fen": None if doctor else row.acct_fen,
        "cash_fen": None if doctor else row.cash_fen, "ownpay_fen": row.ownpay_fen, "avg_bill_fen": avg_fen,
        "selfpay_permille": row.ownpay_fen * 1000 // row.medfee_fen if row.medfee_fen else 0,
        "voucher_permille": None if doctor else row.voucher_cnt * 1000 // row.setl_cnt,
        "bound": None if doctor else dict(zip(BOUND_LIMITS, (row.bound_person_day, row.bound_institution_month,
                                                              row.bound_person_year))),
        "avg_bill_last_year_fen": last_avg_fen,
        "avg_bill_yoy_permille": avg_fen * 1000 // last_avg_fen if last_avg_fen else None,
    }


def monthly_body(state: Any, month_text: str | None, by_text: str | None) -> dict[str, Any]:
    """GET /admin/v1/reports/monthly: one row per key with a standing settlement in the month."""
    month, by = parse_month(month_text), parse_by(by_text)
    supervision = state.supervision
    last_rows = supervision.rows(_last_year(month), by)
    rows = [_monthly_row(key, row, last_rows.get(key), by == BY_DOCTOR)
            for key, row in sorted(supervision.rows(month, by).items()) if row.setl_cnt > 0]
    return {"month": month_text, "by": by, "rows": rows}


def clearing_body(state: Any, month_text: str | None) -> dict[str, Any]:
    """GET /admin/v1/clearing: what the fund owes each institution for the month, and its hold."""
    month = parse_month(month_text)
    institutions = state.overlay.institutions
    rows = {key: row for key, row in state.supervision.rows(month, "institution").items() if row.setl_cnt > 0}
    held = {code for code, institution in institutions.items() if institution.held}
    body_rows = []
    for code in sorted(rows.keys() | held):
        row = rows.get(code)
        body_rows.append({"institution": code, "setl_cnt": row.setl_cnt if row else 0,
                          "medfee_fen": row.medfee_fen if row else 0, "fund_fen": row.fund_fen if row else 0,
                          "acct_fen": row.acct_fen if row else 0, "held": code in held})
    return {"month": month_text, "rows": body_rows}


def alerts_body(state: Any, date_text: str | None) -> dict[str, Any]:
    """GET /admin/v1/alerts: the day's alerts, at most one per (code, subject), in code then subject order."""
    day_number = parse_date(date_text)
    policy = state.overlay.policy
    day = state.supervision.days.get(day_number)
    found: dict[str, list[tuple[str, dict[str, Any]]]] = {code: [] for code in ALERT_CODES}
    if day is not None:
        found[MULTI_INSTITUTION_DAY] = _multi_institution(day, policy.alert_institutions_per_day)
        found[LARGE_BILL] = _large_bills(day, policy.large_bill_fen)
        for code, subjects in day.events.items():
            found[code] = list(subjects.items())
    found[AVG_BILL_OVER_LAST_YEAR] = _avg_bill_over_last_year(state.supervision, day_number,
                                                              policy.avg_bill_yoy_max_permille)
    alerts = [{"code": code, "subject": subject, "detail": detail}
              for code in ALERT_CODES for subject, detail in sorted(found[code], key=lambda item: item[0])]
    return {"date": date_text, "alerts": alerts[:ALERTS_PER_DAY_MAX]}


def _multi_institution(day: Day, threshold: int) -> list[tuple[str, dict[str, Any]]]:
    every = ((psn_no, institution_counts(value)) for psn_no, value in day.multi.items())
    return [(psn_no, {"institution_cnt": len(counts), "threshold": threshold,
                      "setl_cnt": sum(counts.values()),
                      "institutions": [{"institution": code, "setl_cnt": count}
                                       for code, count in sorted(counts.items())]})
            for psn_no, counts in every if len(counts) >= threshold]


def _large_bills(day: Day, threshold_fen: int) -> list[tuple[str, dict[str, Any]]]:
    return [(setl_id, {"setl_id": setl_id, "institution": institution, "psn_no": psn_no, "medfee_fen": medfee_fen,
                       "setl_time": setl_time, "threshold_fen": threshold_fen})
            for setl_id, (institution, psn_no, medfee_fen, setl_time) in day.large.items()
            if medfee_fen >= threshold_fen]


def _avg_bill_over_last_year(supervision: Any, day_number: int, max_permille: int
                             ) -> list[tuple[str, dict[str, Any]]]:
    """Institutions whose average bill from the 1st through the date exceeds last year's month's."""
    month = month_of_day(day_number)
    last_rows = supervision.rows(_last_year(month), "institution")
    if not last_rows:
        return []
    first_day = first_day_of_month(month)
    sums: dict[str, list[int]] = {}
    for _, day in supervision.days_of(first_day, day_number):
        for code, (cnt, medfee_fen) in day.institutions.items():
            total = sums.setdefault(code, [0, 0])
            total[0] += cnt
            total[1] += medfee_fen
    alerts = []
    for code, (cnt, medfee_fen) in sums.items():
        last_avg_fen = _avg(last_rows.get(code))
        if cnt <= 0 or last_avg_fen is None:
            continue
        avg_fen = medfee_fen // cnt
        if avg_fen * 1000 > last_avg_fen * max_permille:
            alerts.append((code, {
                "from": day_date(first_day).strftime("%Y%m%d"), "through": day_date(day_number).strftime("%Y%m%d"),
                "setl_cnt": cnt, "medfee_fen": medfee_fen, "avg_bill_fen": avg_fen,
                "last_year_month": f"{_last_year(month):06d}", "avg_bill_last_year_fen": last_avg_fen,
                "avg_bill_yoy_permille": avg_fen * 1000 // last_avg_fen if last_avg_fen else None,
                "max_permille": max_permille}))
    return alerts


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=False)
    return str(value)


def csv_rows(body: dict[str, Any]) -> Iterable[list[str]]:
    """The CSV rows of a report body: a header of the row keys, then one row each (nil as empty).

    Monthly rows flatten `bound` into bound_person_day, bound_institution_month and
    bound_person_year; an alert's `detail` is one field holding its JSON.
    """
    if "alerts" in body:
        columns, rows = ALERT_COLUMNS, body["alerts"]
    elif "by" in body:
        columns, rows = MONTHLY_COLUMNS, [_flat_bound(row) for row in body["rows"]]
    else:
        columns, rows = CLEARING_COLUMNS, body["rows"]
    yield list(columns)
    for row in rows:
        yield [_csv_value(row[column]) for column in columns]


def _flat_bound(row: dict[str, Any]) -> dict[str, Any]:
    bound = row["bound"] or {}
    flat = {key: value for key, value in row.items() if key != "bound"}
    for limit in BOUND_LIMITS:
        flat[f"bound_{limit}"] = bound.get(limit)
    return flat
