"""Outpatient pooling (门诊统筹, SPEC 13 "Who pays v2"): `pool(base)` and the person-year ledger.

A pooling policy of an insutype gives each person a deductible (起付线) and a cap of pooled payment
(年度限额) per Shanghai calendar year. The person-year ledger holds, per (psn_no, insutype, year),
the deductible used and the pooled payment made by the settlements that stand.

The ledger is a port as narrow as the day/month one (gateway/core/ledger.py): its only write is the
atomic `clamp_and_debit` ("grant up to X of each pot") and its inverse `credit`, so a distributed
store (one row per person-year) can implement it too.

Memory: a year is kept while it is the current one, and the previous one until
`PREVIOUS_YEAR_KEPT_MS` into the new year: that is the longest a 2601 can still find an original
(its idempotency record) to undo, and a cancellation never reaches back (only the current month's
settlements can be cancelled). Older years are compacted: dropped whole, reads answer 0 and writes
are ignored, as for closed days. So the ledger holds at most one year's person-years (plus the
previous one for 26 hours): bounded by the insured who settle in a year. A record is one dict
entry per person in a per-(year, insutype) table whose value packs both amounts in one int;
docs/benchmarks.md has the bytes per record.
"""

from __future__ import annotations

import datetime
from typing import Any, NamedTuple

from gateway.core.clock import MS_PER_DAY, SHANGHAI_OFFSET_MS, business_day, day_date
from gateway.core.idempotency import IDEMPOTENCY_RETENTION_MS
from gateway.core.registry import Pooling

__all__ = ["PREVIOUS_YEAR_KEPT_MS", "PersonYearLedger", "Pooled", "YearGrant", "YearUsage", "business_year",
           "pool", "year_start_ms"]

# A 2601 finds its original through the idempotency record, kept this long: after it, nothing can
# give back to (or re-take from) the previous year.
PREVIOUS_YEAR_KEPT_MS = IDEMPOTENCY_RETENTION_MS
# Both amounts of a record share one int: deductible used in the high bits, pooled paid in the low.
_POOL_BITS = 48
_POOL_MASK = (1 << _POOL_BITS) - 1


def business_year(now_ms: int) -> int:
    """The Shanghai calendar year of `now_ms`."""
    return day_date(business_day(now_ms)).year


def year_start_ms(year: int) -> int:
    """Unix ms of Shanghai midnight on 1 January of `year`."""
    return (datetime.date(year, 1, 1) - datetime.date(1970, 1, 1)).days * MS_PER_DAY - SHANGHAI_OFFSET_MS


class YearUsage(NamedTuple):
    """What a person has used of one year's pooling (by standing settlements)."""

    dedc_used_fen: int
    pool_paid_fen: int


class YearGrant(NamedTuple):
    """What a debit actually took from each pot."""

    dedc_fen: int
    pool_fen: int


class Pooled(NamedTuple):
    """`pool(base)` of SPEC 13: the deductible this bill uses and the pooled payment before the month cut."""

    act_pay_dedc: int
    pool_fen: int
    capped: bool          # raw > what is left of the annual cap (bound_by "person_year")


NOT_POOLED = Pooled(0, 0, False)


def pool(base_fen: int, coverage_permille: int, policy: Pooling | None, used: YearUsage) -> Pooled:
    """SPEC 13's pool(base): with a policy, the deductible first, then coverage up to the annual cap;
    without one, v1's coverage alone."""
    if policy is None:
        return Pooled(0, base_fen * coverage_permille // 1000, False)
    dedc_fen = min(base_fen, max(0, policy.deductible_fen - used.dedc_used_fen))
    raw_fen = (base_fen - dedc_fen) * coverage_permille // 1000
    room_fen = max(0, policy.annual_cap_fen - used.pool_paid_fen)
    return Pooled(dedc_fen, min(raw_fen, room_fen), raw_fen > room_fen)


def _room(limit_fen: int | None, used_fen: int) -> int | None:
    return None if limit_fen is None else max(0, limit_fen - used_fen)


class PersonYearLedger:
    """Deductible used and pooled paid per (psn_no, insutype, Shanghai year); single writer."""

    __slots__ = ("_years", "floor_year")

    def __init__(self) -> None:
        self._years: dict[int, dict[str, dict[str, int]]] = {}   # year -> insutype -> psn_no -> packed
        self.floor_year = 0

    def used(self, psn_no: str, insutype: str, year: int) -> YearUsage:
        """The person's usage of `year` (0 for an unknown or compacted year)."""
        packed = self._years.get(year, {}).get(insutype, {}).get(psn_no, 0)
        return YearUsage(packed >> _POOL_BITS, packed & _POOL_MASK)

    def clamp_and_debit(self, psn_no: str, insutype: str, year: int, want_dedc_fen: int,
                        dedc_limit_fen: int | None, want_pool_fen: int, pool_limit_fen: int | None) -> YearGrant:
        """Atomically grant up to the wanted amounts within the limits (None = no check) and debit them."""
        assert want_dedc_fen >= 0 and want_pool_fen >= 0
        used = self.used(psn_no, insutype, year)
        dedc_room, pool_room = _room(dedc_limit_fen, used.dedc_used_fen), _room(pool_limit_fen, used.pool_paid_fen)
        grant = YearGrant(want_dedc_fen if dedc_room is None else min(want_dedc_fen, dedc_room),
                          want_pool_fen if pool_room is None else min(want_pool_fen, pool_room))
        self._set(psn_no, insutype, year, used.dedc_used_fen + grant.dedc_fen, used.pool_paid_fen + grant.pool_fen)
        return grant

    def credit(self, psn_no: str, insutype: str, year: int, dedc_fen: int, pool_fen: int) -> None:
        """Give back what a debit took (a cancellation or reversal)."""
        assert dedc_fen >= 0 and pool_fen >= 0
        used = self.used(psn_no, insutype, year)
        self._set(psn_no, insutype, year, used.dedc_used_fen - dedc_fen, used.pool_paid_fen - pool_fen)

    def _set(self, psn_no: str, insutype: str, year: int, dedc_fen: int, pool_fen: int) -> None:
        if year < self.floor_year:
            return     # a compacted year: nothing can land there (see the module docstring)
        assert dedc_fen >= 0 and pool_fen >= 0, "a credit larger than what was debited"
        assert pool_fen <= _POOL_MASK and dedc_fen <= _POOL_MASK
        if dedc_fen or pool_fen:
            self._years.setdefault(year, {}).setdefault(insutype, {})[psn_no] = (dedc_fen << _POOL_BITS) | pool_fen
            return
        # Zero records are removed, so that debit-then-credit leaves the state exactly as it was.
        by_type = self._years.get(year, {})
        people = by_type.get(insutype, {})
        if people.pop(psn_no, None) is not None and not people:
            del by_type[insutype]
            if not by_type:
                del self._years[year]

    def expire(self, now_ms: int) -> None:
        """Compact the years no settlement can reach any more as of `now_ms`."""
        year = business_year(now_ms)
        # The floor moves at most twice a year; the repeat call (every commit) has nothing to do.
        keep_previous = now_ms < year_start_ms(year) + PREVIOUS_YEAR_KEPT_MS
        floor = year - 1 if keep_previous else year
        if floor <= self.floor_year:
            return
        self.floor_year = floor
        for old in [y for y in self._years if y < floor]:
            del self._years[old]

    def records(self) -> int:
        """Person-year records held now."""
        return sum(len(people) for by_type in self._years.values() for people in by_type.values())

    def totals(self, year: int) -> dict[tuple[str, str], YearUsage]:
        """Every record of `year` by (psn_no, insutype) (for invariant checks and ops look-ups)."""
        return {(psn_no, insutype): YearUsage(packed >> _POOL_BITS, packed & _POOL_MASK)
                for insutype, people in self._years.get(year, {}).items() for psn_no, packed in people.items()}

    def years_of(self, psn_no: str) -> list[tuple[int, str, YearUsage]]:
        """The person's records, (year, insutype, usage), oldest first."""
        found = []
        for year in sorted(self._years):
            for insutype, people in sorted(self._years[year].items()):
                if psn_no in people:
                    found.append((year, insutype, self.used(psn_no, insutype, year)))
        return found

    def snapshot(self) -> dict[str, Any]:
        """Msgpack-able: the floor and [year, insutype, psn_no, dedc_used_fen, pool_paid_fen] rows, sorted."""
        rows = [[year, insutype, psn_no, packed >> _POOL_BITS, packed & _POOL_MASK]
                for year, by_type in sorted(self._years.items()) for insutype, people in sorted(by_type.items())
                for psn_no, packed in sorted(people.items())]
        return {"floor_year": self.floor_year, "rows": rows}

    @classmethod
    def restore(cls, snap: dict[str, Any]) -> PersonYearLedger:
        """Rebuild from `snapshot()` output."""
        ledger = cls()
        for year, insutype, psn_no, dedc_fen, pool_fen in snap["rows"]:
            ledger._set(psn_no, insutype, year, dedc_fen, pool_fen)
        ledger.floor_year = snap["floor_year"]
        return ledger
