"""The ledger port: person-day OTC usage and institution-month fund usage.

The port is deliberately narrow so that a distributed store (one row per person-day and per
institution-month, updated in one transaction) can implement it too: its only write is the atomic
`clamp_and_debit`, and its inverse `credit`. The in-memory implementation keeps only the periods that
can still matter (today and yesterday for persons; this month and last for institutions) and drops
closed ones through a time-ordered index, so its size is bounded by one day's and one month's traffic.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

from sortedcontainers import SortedDict

# Days of person usage kept behind the current one (yesterday stays readable for ops look-ups).
PERSON_DAYS_KEPT = 2
# Months of institution usage kept (the current one, and the previous one for reports).
INSTITUTION_MONTHS_KEPT = 2


# A NamedTuple: immutable like a frozen dataclass, but cheap to build (two per settlement).
class Grant(NamedTuple):
    """What a debit actually took: the person-day part and the institution-month total."""

    person_fen: int
    institution_fen: int


class LedgerPort(Protocol):
    """The ledger seam used by the core; see InMemoryLedger for the contract of each call."""

    def person_day_used(self, psn_no: str, day: int) -> int: ...

    def institution_month_used(self, institution: str, month: int) -> int: ...

    def clamp_and_debit(self, psn_no: str, day: int, want_person_fen: int, person_limit_fen: int | None,
                        institution: str, month: int, want_institution_fen: int,
                        institution_cap_fen: int | None) -> Grant: ...

    def credit(self, psn_no: str, day: int, person_fen: int, institution: str, month: int,
               institution_fen: int) -> None: ...


def clamp(want_person_fen: int, person_room_fen: int | None, want_institution_fen: int,
          institution_room_fen: int | None) -> Grant:
    """Clamp a wanted debit to the rooms left (None = unlimited).

    The person part is also part of the institution total; when the institution room binds, the
    non-person part (prescription drugs, SPEC section 7) is cut first, then the person part.
    """
    assert 0 <= want_person_fen <= want_institution_fen
    other_fen = want_institution_fen - want_person_fen
    person_fen = want_person_fen
    if person_room_fen is not None:
        person_fen = min(person_fen, max(0, person_room_fen))
    if institution_room_fen is None:
        return Grant(person_fen, person_fen + other_fen)
    room_fen = max(0, institution_room_fen)
    person_fen = min(person_fen, room_fen)
    return Grant(person_fen, person_fen + min(other_fen, room_fen - person_fen))


class InMemoryLedger:
    """Single-writer in-memory ledgers with bounded retention.

    Periods below the retention floor are closed: reads answer 0 and writes are ignored, which is
    what the business rules need (no settlement can land on a closed day or month).
    """

    def __init__(self) -> None:
        self._days: SortedDict = SortedDict()    # day -> {psn_no: used_fen}
        self._months: SortedDict = SortedDict()  # yyyymm -> {institution: used_fen}
        self.floor_day = 0
        self.floor_month = 0
        self._expired_as_of: tuple[int, int] | None = None   # the last (today, this_month) expired

    def person_day_used(self, psn_no: str, day: int) -> int:
        """OTC fund paid for `psn_no` on Shanghai `day` by standing settlements."""
        return self._days.get(day, {}).get(psn_no, 0)

    def institution_month_used(self, institution: str, month: int) -> int:
        """Fund paid to `institution` in business month `month` (yyyymm) by standing settlements."""
        return self._months.get(month, {}).get(institution, 0)

    def clamp_and_debit(self, psn_no: str, day: int, want_person_fen: int, person_limit_fen: int | None,
                        institution: str, month: int, want_institution_fen: int,
                        institution_cap_fen: int | None) -> Grant:
        """Atomically clamp the wanted amounts to the limits (None = no check) and debit them.

        Returns the granted amounts; see `clamp` for which part is cut first.
        """
        person_room = None if person_limit_fen is None else person_limit_fen - self.person_day_used(psn_no, day)
        month_room = (None if institution_cap_fen is None
                      else institution_cap_fen - self.institution_month_used(institution, month))
        grant = clamp(want_person_fen, person_room, want_institution_fen, month_room)
        self._add(self._days, day, self.floor_day, psn_no, grant.person_fen)
        self._add(self._months, month, self.floor_month, institution, grant.institution_fen)
        return grant

    def credit(self, psn_no: str, day: int, person_fen: int, institution: str, month: int,
               institution_fen: int) -> None:
        """Give back what a debit took (a cancellation or reversal)."""
        assert person_fen >= 0 and institution_fen >= 0
        self._add(self._days, day, self.floor_day, psn_no, -person_fen)
        self._add(self._months, month, self.floor_month, institution, -institution_fen)

    @staticmethod
    def _add(periods: SortedDict, period: int, floor: int, key: str, delta_fen: int) -> None:
        if period < floor or delta_fen == 0:
            return
        usage = periods.setdefault(period, {})
        used_fen = usage.get(key, 0) + delta_fen
        assert used_fen >= 0, "a credit larger than what was debited"
        if used_fen:
            usage[key] = used_fen
        else:
            # Zero entries are removed so that debit-then-credit leaves the state exactly as it was.
            del usage[key]
            if not usage:
                del periods[period]

    def expire(self, today: int, this_month: int) -> None:
        """Close the periods that fell out of retention as of `today` / `this_month`."""
        # Every commit calls this, nearly always for the same day as the previous one; the floors
        # only move when the day or month does, so the repeat call has nothing to do.
        if self._expired_as_of == (today, this_month):
            return
        self._expired_as_of = (today, this_month)
        self.floor_day = max(self.floor_day, today - PERSON_DAYS_KEPT + 1)
        self.floor_month = max(self.floor_month, _month_minus(this_month, INSTITUTION_MONTHS_KEPT - 1))
        while self._days and self._days.peekitem(0)[0] < self.floor_day:
            self._days.popitem(0)
        while self._months and self._months.peekitem(0)[0] < self.floor_month:
            self._months.popitem(0)

    def person_totals(self, day: int) -> dict[str, int]:
        """All person usage of `day` (for invariant checks and ops look-ups)."""
        return dict(self._days.get(day, {}))

    def institution_totals(self, month: int) -> dict[str, int]:
        """All institution usage of `month`."""
        return dict(self._months.get(month, {}))

    def snapshot(self) -> dict[str, Any]:
        """A msgpack-able copy of the state (string keys only; periods as sorted pairs)."""
        return {"floor_day": self.floor_day, "floor_month": self.floor_month,
                "days": [[d, dict(sorted(u.items()))] for d, u in self._days.items()],
                "months": [[m, dict(sorted(u.items()))] for m, u in self._months.items()]}

    @classmethod
    def restore(cls, state: dict[str, Any]) -> InMemoryLedger:
        """Rebuild a ledger from `snapshot()` output."""
        ledger = cls()
        ledger.floor_day = state["floor_day"]
        ledger.floor_month = state["floor_month"]
        ledger._days.update((d, dict(u)) for d, u in state["days"])
        ledger._months.update((m, dict(u)) for m, u in state["months"])
        return ledger


def _month_minus(month: int, count: int) -> int:
    index = (month // 100) * 12 + (month % 100 - 1) - count
    return (index // 12) * 100 + index % 12 + 1
