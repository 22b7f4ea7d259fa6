"""The fund's supervision figures (SPEC section 14), kept by the same commit that applies settlements.

`Supervision` holds, per Shanghai month of `setl_time`, one row of sums per institution, doctor
(`bilg_dr_codg`) and operator (envelope `opter`), and per Shanghai day what the daily alerts need.
The commit of a settlement adds it (`settled`); the commit of a cancellation or reversal takes it
away again (`unsettled`), field for field, and a 2601 that re-instates a cancellation adds it once
more. Every figure therefore counts exactly the settlements that stand now, and replaying the
journal rebuilds the same state, because only commits change it.

Distinct persons stay exact and bounded. While a month can still change, each row keeps a map
psn_no -> number of its standing settlements in that row (`Row.persons`), so a cancellation knows
whether the person still counts. A month can change only while an idempotency record of one of its
settlements or cancellations exists (a 2601 needs it; a 2103/2208 only runs in the settlement's own
month), and those records are forgotten IDEMPOTENCY_RETENTION_MS after they were made. So, once
that long has passed since the month ended, the month is *closed*: each row keeps only the count
(`Row.psn_closed`) and its map is dropped. Memory for persons is thus one map entry per distinct
(row, person) of the current month (and of the previous one for its first day), nothing for the
other MONTHS_KEPT - 1 months. The same holds for the per-day person maps behind
MULTI_INSTITUTION_DAY: a day's map is dropped when its month closes, keeping only the persons that
had settlements at two or more institutions that day.

Only a clock set backwards (the test clock) can bring a settlement or cancellation into a closed
month; the month then re-opens with an empty person map, so a person already counted before the
close may be counted again (never a crash, never a negative figure).

Bounds (each named below): MONTHS_KEPT months of rows; KEYS_PER_MONTH_MAX keys per dimension and
month (further keys count under OVERFLOW_KEY, so a till sending random doctor codes cannot grow
memory without limit); days of the last ALERT_MONTHS_KEPT months; LARGE_BILLS_PER_DAY_MAX large
bills and EVENT_ALERTS_PER_DAY_MAX refusal/overdraft alerts per day. See docs/supervision.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from gateway.core.clock import MS_PER_DAY, SHANGHAI_OFFSET_MS, business_day, first_day_of_month, month_of_day
from gateway.core.idempotency import IDEMPOTENCY_RETENTION_MS
from gateway.core.records import AlertRecord
from gateway.core.settlement import BOUND_INSTITUTION_MONTH, BOUND_PERSON_DAY, BOUND_PERSON_YEAR

__all__ = [
    "ACCOUNT_OVERDRAWN", "ALERT_CODES", "ALERT_MONTHS_KEPT", "AVG_BILL_OVER_LAST_YEAR", "BOUND_LIMITS", "BY_DIMENSIONS",
    "Day", "EVENT_ALERTS_PER_DAY_MAX", "KEYS_PER_MONTH_MAX", "LARGE_BILL", "LARGE_BILLS_PER_DAY_MAX",
    "MONTHS_KEPT", "MULTI_INSTITUTION_DAY", "MUTUAL_AID_REFUSED", "OVERFLOW_KEY", "REFUSAL_ALERTS", "Row",
    "Supervision", "TRACE_CODE_REUSE_ATTEMPT", "doctor_sums", "institution_counts", "month_index", "refusal_alert",
]

# Months of figures kept: the current one and 25 before it (SPEC: at least 25 months), so the
# report of any month of the last year still finds the same month of the year before.
MONTHS_KEPT = 26
# Days whose alerts are kept: those of the current month and of the two months before it.
ALERT_MONTHS_KEPT = 3
# Distinct keys per dimension and month; a settlement of a further key counts under OVERFLOW_KEY.
KEYS_PER_MONTH_MAX = 200_000
OVERFLOW_KEY = "~other"
# Standing large bills remembered per day (the first ones committed; the answer is bounded anyway).
LARGE_BILLS_PER_DAY_MAX = 10_000
# Alerts raised by refusals or overdrafts per day (the first ones; at most one per code and subject).
EVENT_ALERTS_PER_DAY_MAX = 10_000

BY_INSTITUTION, BY_DOCTOR, BY_OPERATOR = "institution", "doctor", "operator"
BY_DIMENSIONS = (BY_INSTITUTION, BY_DOCTOR, BY_OPERATOR)

MULTI_INSTITUTION_DAY = "MULTI_INSTITUTION_DAY"
LARGE_BILL = "LARGE_BILL"
AVG_BILL_OVER_LAST_YEAR = "AVG_BILL_OVER_LAST_YEAR"
TRACE_CODE_REUSE_ATTEMPT = "TRACE_CODE_REUSE_ATTEMPT"
MUTUAL_AID_REFUSED = "MUTUAL_AID_REFUSED"
ACCOUNT_OVERDRAWN = "ACCOUNT_OVERDRAWN"
# SPEC order, which is also the order of the alerts in an answer.
ALERT_CODES = (MULTI_INSTITUTION_DAY, LARGE_BILL, AVG_BILL_OVER_LAST_YEAR, TRACE_CODE_REUSE_ATTEMPT,
               MUTUAL_AID_REFUSED, ACCOUNT_OVERDRAWN)
# Refusals (err_code on the wire) that raise an alert, and what the alert's subject is.
REFUSAL_ALERTS = {"TRACE_CODE_REUSED": (TRACE_CODE_REUSE_ATTEMPT, "institution"),
                  "MUTUAL_AID_NOT_AUTHORIZED": (MUTUAL_AID_REFUSED, "payer")}
# The limits a report row counts (its `bound` map), in report order.
BOUND_LIMITS = (BOUND_PERSON_DAY, BOUND_INSTITUTION_MONTH, BOUND_PERSON_YEAR)
CERT_VOUCHER = "01"


def month_index(month: int) -> int:
    """Months since year 0 of a yyyymm month (so that month arithmetic is subtraction)."""
    return (month // 100) * 12 + month % 100 - 1


def _month_of_index(index: int) -> int:
    return (index // 12) * 100 + index % 12 + 1


def _month_start_ms(month: int) -> int:
    """The first millisecond of a Shanghai business month, as Unix ms."""
    return first_day_of_month(month) * MS_PER_DAY - SHANGHAI_OFFSET_MS


def _month_plus(month: int, months: int) -> int:
    return _month_of_index(month_index(month) + months)


def doctor_sums(items: Sequence[Any], cuts: Sequence[Any]) -> list[list[Any]]:
    """Per doctor of a bill: [[bilg_dr_codg, medfee_fen, ownpay_fen], ...] in order of first line.

    `items` are the bill lines (bilg_dr_codg, det_item_fee_sumamt), `cuts` their cuts in the same
    order; own-pay is fulamt_ownpay_amt + overlmt_amt + preselfpay_amt.
    """
    doctor = items[0].bilg_dr_codg
    medfee_fen = ownpay_fen = 0
    for item, cut in zip(items, cuts):
        if item.bilg_dr_codg != doctor:
            return _several_doctors(items, cuts)
        medfee_fen += item.det_item_fee_sumamt
        ownpay_fen += cut.fulamt_ownpay_amt + cut.overlmt_amt + cut.preselfpay_amt
    return [[doctor, medfee_fen, ownpay_fen]]    # nearly every bill: one doctor


def _several_doctors(items: Sequence[Any], cuts: Sequence[Any]) -> list[list[Any]]:
    sums: dict[str, list[Any]] = {}
    for item, cut in zip(items, cuts):
        ownpay_fen = cut.fulamt_ownpay_amt + cut.overlmt_amt + cut.preselfpay_amt
        entry = sums.get(item.bilg_dr_codg)
        if entry is None:
            sums[item.bilg_dr_codg] = [item.bilg_dr_codg, item.det_item_fee_sumamt, ownpay_fen]
        else:
            entry[1] += item.det_item_fee_sumamt
            entry[2] += ownpay_fen
    return list(sums.values())


class Row:
    """The sums of one key (institution, doctor or operator) in one month.

    Doctor rows use setl_cnt, medfee_fen, ownpay_fen and the persons only (SPEC: the other figures
    are nil for doctors). `persons` is None once the month is closed (see the module docstring).
    """

    __slots__ = ("setl_cnt", "medfee_fen", "fund_fen", "acct_fen", "cash_fen", "ownpay_fen", "voucher_cnt",
                 "bound_person_day", "bound_institution_month", "bound_person_year", "psn_closed", "persons")

    def __init__(self, persons: dict[str, int] | None) -> None:
        self.setl_cnt = self.medfee_fen = self.fund_fen = self.acct_fen = self.cash_fen = 0
        self.ownpay_fen = self.voucher_cnt = 0
        self.bound_person_day = self.bound_institution_month = self.bound_person_year = 0
        self.psn_closed = 0
        self.persons = persons

    @property
    def psn_cnt(self) -> int:
        """Distinct persons with a standing settlement in this row."""
        return self.psn_closed + (len(self.persons) if self.persons is not None else 0)

    def to_wire(self, key: str) -> list[Any]:
        """Msgpack-able form (see `from_wire`)."""
        return [key, self.setl_cnt, self.medfee_fen, self.fund_fen, self.acct_fen, self.cash_fen, self.ownpay_fen,
                self.voucher_cnt, self.bound_person_day, self.bound_institution_month, self.bound_person_year,
                self.psn_closed, self.persons]

    @classmethod
    def from_wire(cls, wire: Sequence[Any]) -> tuple[str, Row]:
        """The key and row of `to_wire` output."""
        row = cls(wire[12])
        (row.setl_cnt, row.medfee_fen, row.fund_fen, row.acct_fen, row.cash_fen, row.ownpay_fen, row.voucher_cnt,
         row.bound_person_day, row.bound_institution_month, row.bound_person_year, row.psn_closed) = wire[1:12]
        return wire[0], row


class _Month:
    """The rows of one month, by dimension (institution, doctor, operator)."""

    __slots__ = ("rows", "open")

    def __init__(self) -> None:
        self.rows: tuple[dict[str, Row], dict[str, Row], dict[str, Row]] = ({}, {}, {})
        self.open = True


class Day:
    """What one Shanghai day's alerts are computed from.

    institutions: code -> [setl_cnt, medfee_fen] of standing settlements (AVG_BILL_OVER_LAST_YEAR).
    persons: psn_no -> the institution code when the person has exactly one standing settlement that
        day, else its counts (`institution_counts`) as one flat tuple (code, settlements, code,
        settlements, ...): 64-80 bytes where a dict took 184, and nothing the garbage collector
        keeps scanning; None once the day's month is closed.
    multi: psn_no -> the same tuple, for persons at two or more institutions (kept after the day's
        month closes). Snapshots hold both as {institution: settlements} maps.
    large: setl_id -> (institution, psn_no, medfee_fen, setl_time) of standing large bills.
    events: code -> {subject: detail} of alerts raised by refusals and overdrafts.
    """

    __slots__ = ("institutions", "persons", "multi", "large", "events")

    def __init__(self) -> None:
        self.institutions: dict[str, list[int]] = {}
        self.persons: dict[str, str | tuple[Any, ...]] | None = {}
        self.multi: dict[str, tuple[Any, ...]] = {}
        self.large: dict[str, tuple[str, str, int, int]] = {}
        self.events: dict[str, dict[str, dict[str, Any]]] = {}

    def event_count(self) -> int:
        """Alerts raised by refusals and overdrafts on this day."""
        return sum(len(subjects) for subjects in self.events.values())


def _row(rows: dict[str, Row], key: str) -> Row:
    row = rows.get(key)
    if row is None:
        if len(rows) >= KEYS_PER_MONTH_MAX:
            key = OVERFLOW_KEY
            row = rows.get(key)
        if row is None:
            row = rows[key] = Row({})
    return row


def _count_person(persons: dict[str, int] | None, psn_no: str, sign: int) -> None:
    if persons is None:
        return
    count = persons.get(psn_no, 0) + sign
    if count > 0:
        persons[psn_no] = count
    elif count == 0:
        del persons[psn_no]
    # count < 0: a person first counted before the month closed (only after a clock set backwards).


class Supervision:
    """Monthly rows and daily alert state; changed only through the commit (see module docstring)."""

    def __init__(self) -> None:
        self.months: dict[int, _Month] = {}
        self.days: dict[int, Day] = {}
        # The earliest record time at which `expire` has something to do (None: nothing is held).
        self._due_ms: int | None = None

    # -- the commit side ---------------------------------------------------------------------

    def settled(self, settlement: Any, large_bill_fen: int) -> None:
        """A settlement now stands (2102/2207 applied, or a cancellation re-instated by 2601)."""
        self._count(settlement, 1)
        if settlement.medfee_sumamt >= large_bill_fen:
            large = self.days[settlement.day].large
            if len(large) < LARGE_BILLS_PER_DAY_MAX:
                large[settlement.setl_id] = (settlement.institution, settlement.psn_no, settlement.medfee_sumamt,
                                             settlement.setl_time)

    def unsettled(self, settlement: Any) -> None:
        """A standing settlement no longer stands (cancelled by 2103/2208 or reversed by 2601)."""
        self._count(settlement, -1)
        self.days[settlement.day].large.pop(settlement.setl_id, None)

    def _count(self, s: Any, sign: int) -> None:
        # The hot path of every settlement's commit: the row look-ups and the person counts are
        # written out here rather than called (_row, _count_person), which saves a fifth of it.
        month = self.months.get(s.month)
        if month is None or not month.open:
            month = self._open_month(s.month)
        institutions, doctors, operators = month.rows
        psn_no = s.psn_no
        medfee_fen, fund_fen, acct_fen, cash_fen = s.medfee_sumamt, s.fund_pay_sumamt, s.acct_pay, s.psn_cash_pay
        ownpay_fen = s.fulamt_ownpay_amt + s.overlmt_amt + s.preselfpay_amt
        if sign < 0:
            medfee_fen, fund_fen, acct_fen = -medfee_fen, -fund_fen, -acct_fen
            cash_fen, ownpay_fen = -cash_fen, -ownpay_fen
        voucher = sign if s.cert_type == CERT_VOUCHER else 0
        row = institutions.get(s.institution) or _row(institutions, s.institution)
        if s.opter:
            rows: tuple[Row, ...] = (row, operators.get(s.opter) or _row(operators, s.opter))
        else:
            rows = (row,)
        for row in rows:
            row.setl_cnt += sign
            row.medfee_fen += medfee_fen
            row.fund_fen += fund_fen
            row.acct_fen += acct_fen
            row.cash_fen += cash_fen
            row.ownpay_fen += ownpay_fen
            row.voucher_cnt += voucher
            persons = row.persons
            if persons is not None:
                count = persons.get(psn_no, 0) + sign
                if count > 0:
                    persons[psn_no] = count
                elif count == 0:
                    del persons[psn_no]
            for limit in s.bound_by:
                if limit == BOUND_PERSON_DAY:
                    row.bound_person_day += sign
                elif limit == BOUND_INSTITUTION_MONTH:
                    row.bound_institution_month += sign
                elif limit == BOUND_PERSON_YEAR:
                    row.bound_person_year += sign
        for doctor, doctor_medfee_fen, doctor_ownpay_fen in s.doctors:
            row = doctors.get(doctor) or _row(doctors, doctor)
            row.setl_cnt += sign
            row.medfee_fen += sign * doctor_medfee_fen
            row.ownpay_fen += sign * doctor_ownpay_fen
            _count_person(row.persons, psn_no, sign)
        day = self.days.get(s.day)
        if day is None or day.persons is None:
            day = self._open_day(s.day)
        sums = day.institutions.get(s.institution)
        if sums is None:
            sums = day.institutions[s.institution] = [0, 0]
        sums[0] += sign
        sums[1] += medfee_fen
        _count_day_person(day, psn_no, s.institution, sign)

    def _open_month(self, month: int) -> _Month:
        """The month's rows, made (or re-opened: only a clock set backwards re-opens one)."""
        found = self.months.get(month)
        if found is None:
            found = self.months[month] = _Month()
        else:
            found.open = True
            for rows in found.rows:
                for row in rows.values():
                    row.persons = {}
        self._due(_month_start_ms(_month_plus(month, 1)) + IDEMPOTENCY_RETENTION_MS)
        return found

    def _open_day(self, day: int) -> Day:
        found = self.days.get(day)
        if found is None:
            found = self.days[day] = Day()
            self._due(_month_start_ms(_month_plus(month_of_day(day), ALERT_MONTHS_KEPT)))
        elif found.persons is None:
            found.persons = {}
        self._due(_month_start_ms(_month_plus(month_of_day(day), 1)) + IDEMPOTENCY_RETENTION_MS)
        return found

    def _due(self, at_ms: int) -> None:
        if self._due_ms is None or at_ms < self._due_ms:
            self._due_ms = at_ms

    def note_event(self, now_ms: int, code: str, subject: str, detail: Mapping[str, Any]) -> None:
        """Raise an alert of a refusal or an overdraft on `now_ms`'s day (first one per code and subject)."""
        assert code in ALERT_CODES
        day_number = business_day(now_ms)
        day = self.days.get(day_number)
        if day is None:
            day = self._open_day(day_number)
        if self.has_event(now_ms, code, subject) or day.event_count() >= EVENT_ALERTS_PER_DAY_MAX:
            return
        day.events.setdefault(code, {})[subject] = dict(detail)

    def note_overdrawn(self, now_ms: int, psn_no: str, balance_fen: int, setl_id: str) -> None:
        """The hook of personal accounts: `psn_no`'s balance went below 0 (a re-instated settlement)."""
        self.note_event(now_ms, ACCOUNT_OVERDRAWN, psn_no,
                        {"balance_fen": balance_fen, "setl_id": setl_id, "time": now_ms})

    def has_event(self, now_ms: int, code: str, subject: str) -> bool:
        """True when `code` was already raised for `subject` on `now_ms`'s day, or the day's bound is reached."""
        day = self.days.get(business_day(now_ms))
        if day is None:
            return False
        return subject in day.events.get(code, ()) or day.event_count() >= EVENT_ALERTS_PER_DAY_MAX

    def expire(self, now_ms: int) -> None:
        """Close the months that can no longer change and drop what is past retention, as of `now_ms`."""
        if self._due_ms is None or now_ms < self._due_ms:
            return
        self._due_ms = None
        current = month_index(month_of_day(business_day(now_ms)))
        for month_number, month in list(self.months.items()):
            if month_index(month_number) <= current - MONTHS_KEPT:
                del self.months[month_number]
            elif month.open:
                if now_ms >= _month_start_ms(_month_plus(month_number, 1)) + IDEMPOTENCY_RETENTION_MS:
                    _close(month)
                else:
                    self._due(_month_start_ms(_month_plus(month_number, 1)) + IDEMPOTENCY_RETENTION_MS)
            if month_number in self.months:
                self._due(_month_start_ms(_month_plus(month_number, MONTHS_KEPT)))
        for day_number, day in list(self.days.items()):
            month_number = month_of_day(day_number)
            if month_index(month_number) <= current - ALERT_MONTHS_KEPT:
                del self.days[day_number]
                continue
            close_ms = _month_start_ms(_month_plus(month_number, 1)) + IDEMPOTENCY_RETENTION_MS
            if day.persons is not None:
                if now_ms >= close_ms:
                    day.persons = None
                else:
                    self._due(close_ms)
            self._due(_month_start_ms(_month_plus(month_number, ALERT_MONTHS_KEPT)))

    # -- reads -------------------------------------------------------------------------------

    def rows(self, month: int, by: str) -> dict[str, Row]:
        """The rows of `month` for dimension `by` (rows whose settlements were all undone included)."""
        found = self.months.get(month)
        return {} if found is None else found.rows[BY_DIMENSIONS.index(by)]

    def days_of(self, first_day: int, last_day: int) -> Iterator[tuple[int, Day]]:
        """The kept days from `first_day` through `last_day`."""
        for day_number in range(first_day, last_day + 1):
            day = self.days.get(day_number)
            if day is not None:
                yield day_number, day

    # -- snapshots ---------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Msgpack-able copy of the whole state."""
        months = [[number, month.open, *[[row.to_wire(key) for key, row in rows.items()] for rows in month.rows]]
                  for number, month in self.months.items()]
        days = [[number, [[code, *sums] for code, sums in day.institutions.items()], _counts_of(day.persons),
                 _counts_of(day.multi) if day.persons is None else None,
                 [[setl_id, *large] for setl_id, large in day.large.items()],
                 [[code, subject, detail] for code, subjects in day.events.items()
                  for subject, detail in subjects.items()]]
                for number, day in self.days.items()]
        return {"months": months, "days": days, "due_ms": self._due_ms}

    @classmethod
    def restore(cls, snap: Mapping[str, Any]) -> Supervision:
        """Rebuild from `snapshot()` output."""
        supervision = cls()
        for number, is_open, *dimensions in snap["months"]:
            month = supervision.months[number] = _Month()
            month.open = is_open
            for rows, wires in zip(month.rows, dimensions):
                rows.update(Row.from_wire(wire) for wire in wires)
        for number, institutions, persons, multi, large, events in snap["days"]:
            day = supervision.days[number] = Day()
            day.institutions = {code: [cnt, medfee_fen] for code, cnt, medfee_fen in institutions}
            day.persons = None if persons is None else {
                psn_no: value if type(value) is str else _flat(value) for psn_no, value in persons.items()}
            day.multi = {psn_no: _flat(counts) for psn_no, counts in multi.items()} if persons is None else {
                psn_no: value for psn_no, value in day.persons.items() if len(institution_counts(value)) >= 2}
            day.large = {setl_id: tuple(rest) for setl_id, *rest in large}  # type: ignore[misc]
            for code, subject, detail in events:
                day.events.setdefault(code, {})[subject] = detail
        supervision._due_ms = snap["due_ms"]
        return supervision

    @classmethod
    def rebuilt(cls, standing: Iterable[Any], large_bill_fen: int) -> Supervision:
        """Figures recomputed from the settlements that stand (for snapshots written before supervision)."""
        supervision = cls()
        for settlement in standing:
            supervision.settled(settlement, large_bill_fen)
        return supervision


def _close(month: _Month) -> None:
    """Keep only the counts of distinct persons; drop the rows whose settlements were all undone."""
    month.open = False
    for rows in month.rows:
        for key, row in list(rows.items()):
            if row.setl_cnt == 0:
                del rows[key]
            else:
                row.psn_closed += len(row.persons or ())
                row.persons = None


def institution_counts(value: str | tuple[Any, ...]) -> dict[str, int]:
    """{institution: standing settlements} of a person's value in Day.persons or Day.multi."""
    return {value: 1} if type(value) is str else dict(zip(value[::2], value[1::2]))


def _flat(counts: Mapping[str, int]) -> str | tuple[Any, ...]:
    """The Day.persons value of `counts` (`institution_counts` inverted)."""
    if len(counts) == 1:
        ((only, count),) = counts.items()
        if count == 1:
            return only
    return tuple(item for pair in counts.items() for item in pair)


def _counts_of(persons: Mapping[str, str | tuple[Any, ...]] | None) -> dict[str, Any] | None:
    """Day.persons or Day.multi as snapshots hold them: a person's several settlements as a map."""
    if persons is None:
        return None
    return {psn_no: value if type(value) is str else institution_counts(value) for psn_no, value in persons.items()}


def _count_day_person(day: Day, psn_no: str, institution: str, sign: int) -> None:
    """Update the person's institutions of the day (see Day.persons) and the multi-institution set."""
    persons = day.persons
    assert persons is not None
    value = persons.get(psn_no)
    if value is None:
        if sign > 0:
            persons[psn_no] = institution
        return              # else: counted before its month closed (only after a clock set backwards)
    counts = institution_counts(value)
    count = counts.get(institution, 0) + sign
    if count < 0:
        return              # not counted here (only after a clock set backwards)
    if count:
        counts[institution] = count
    else:
        del counts[institution]
    if counts:
        value = persons[psn_no] = _flat(counts)
    else:
        del persons[psn_no]
    if len(counts) >= 2:
        day.multi[psn_no] = value   # type: ignore[assignment]
    else:
        day.multi.pop(psn_no, None)


def _evidence(evidence: Mapping[str, Any] | None) -> dict[str, Any]:
    """The plain (JSON- and msgpack-able) values of a refusal's evidence."""
    if not evidence:
        return {}
    return {str(key): value for key, value in evidence.items()
            if value is None or isinstance(value, (str, int, bool))
            or (isinstance(value, list) and all(isinstance(v, (str, int)) for v in value))}


def refusal_alert(supervision: Supervision, err_code: str, now_ms: int, env: Any, institution: Any,
                  evidence: Mapping[str, Any] | None) -> AlertRecord | None:
    """The record that raises the alert of a refusal (TRACE_CODE_REUSED, MUTUAL_AID_NOT_AUTHORIZED), or None.

    Called by `Core.decide` for every refusal. A refusal journals nothing of its own, so an alert
    it raises travels in an "alert" record, journaled like any other; only the first refusal of a
    code and subject on a day makes one. `evidence` is what the refusing rule knows (e.g.
    {"feedetl_sn", "drug_trac_codg"} or {"payer", "patient"}); the subject is the institution, or
    the payer (`evidence["payer"]`, else the request's `acct_payer_psn_no`).
    """
    found = REFUSAL_ALERTS.get(err_code)
    if found is None or env is None or institution is None:
        return None
    code, subject_kind = found
    plain = _evidence(evidence)
    if subject_kind == "institution":
        subject = institution.code
    else:
        raw = env.input.get("acct_payer_psn_no") if isinstance(env.input, Mapping) else None
        subject = plain.get("payer", raw)
    if not isinstance(subject, str) or not subject or supervision.has_event(now_ms, code, subject):
        return None
    detail = {"err_code": err_code, "msgid": env.msgid, "infno": env.infno, "institution": institution.code,
              "opter": env.opter, "dev_no": env.dev_no, "time": now_ms, **plain}
    return AlertRecord(now_ms=now_ms, code=code, subject=subject, detail=detail)
