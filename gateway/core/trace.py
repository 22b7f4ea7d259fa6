"""Traceability codes held by standing settlements (药品追溯码, SPEC section 13 "Traceability").

A whole-package code (`trdn_flag` "0") may be sold once: a pharmacy's 2102 holds the codes of
all its lines, cancel and reversal release them, a 2601 that re-instates a cancellation holds them
again without checking. A held code stops counting once its settlement's `setl_time` is
`trace_retention_days` old; the memory of it is dropped soon after, by day.

Memory: a code maps to its holder, `(setl_id, setl_time_ms)`, one tuple per settlement shared by
all of its codes; a day index lists the codes held from each business day, and expiry drops
whole days. A released code is dropped from the map at once and from its day list when that day
expires (lists are only appended to). docs/benchmarks.md has the bytes per held code; the count is
bounded by TRACE_CODES_MAX (a settlement that would exceed it is refused OVERLOADED).

One approximation, on purpose: a code is held by at most one settlement. When a re-instatement
holds a code that a later settlement also holds (sold again while the first was cancelled), the
newest holder is remembered, and cancelling either releases the code.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sortedcontainers import SortedDict

from gateway.core.clock import business_day

__all__ = ["DAY_MS", "TRACE_CODES_MAX", "TraceCodes"]

DAY_MS = 86_400_000
# A county sells ~10^7 packages a year; a province's region several times that. At ~150 bytes a
# code, 60 million codes are ~9 GB: the cap keeps a misconfigured retention from exhausting memory.
TRACE_CODES_MAX = 60_000_000


class TraceCodes:
    """Codes held now: code -> (setl_id, setl_time_ms), with a by-day index for expiry."""

    __slots__ = ("codes_max", "_holder", "_by_day")

    def __init__(self, codes_max: int = TRACE_CODES_MAX) -> None:
        self.codes_max = codes_max
        self._holder: dict[str, tuple[str, int]] = {}
        self._by_day: SortedDict = SortedDict()       # business day -> [code, ...]

    def __len__(self) -> int:
        return len(self._holder)

    def has_room(self, count: int) -> bool:
        """False when holding `count` more codes would exceed the cap."""
        return len(self._holder) + count <= self.codes_max

    def held_by_other(self, codes: Iterable[str], now_ms: int, retention_days: int) -> str | None:
        """The first of `codes` a standing settlement holds within the retention, or None."""
        after_ms = now_ms - retention_days * DAY_MS
        holder = self._holder
        for code in codes:
            held = holder.get(code)
            if held is not None and held[1] > after_ms:
                return code
        return None

    def hold(self, codes: Iterable[str], setl_id: str, setl_time_ms: int) -> None:
        """Remember `codes` as sold by settlement `setl_id` (overwriting an older holder)."""
        holder = (setl_id, setl_time_ms)
        day_codes = self._by_day.setdefault(business_day(setl_time_ms), [])
        for code in codes:
            self._holder[code] = holder
            day_codes.append(code)

    def release(self, codes: Iterable[str], setl_id: str) -> None:
        """Forget the codes `setl_id` holds (a code another settlement holds now stays held)."""
        for code in codes:
            held = self._holder.get(code)
            if held is not None and held[0] == setl_id:
                del self._holder[code]

    def expire(self, now_ms: int, retention_days: int) -> None:
        """Drop the codes of business days wholly older than the retention."""
        by_day = self._by_day
        if not by_day:
            return
        keep_from_day = business_day(now_ms - retention_days * DAY_MS)
        while by_day and by_day.peekitem(0)[0] < keep_from_day:
            day, codes = by_day.popitem(0)
            for code in codes:
                held = self._holder.get(code)
                if held is not None and business_day(held[1]) == day:
                    del self._holder[code]

    def snapshot(self) -> list[list[Any]]:
        """Held codes as [code, setl_id, setl_time_ms] rows, each once, oldest day first."""
        rows: list[list[Any]] = []
        seen: set[str] = set()
        for day, codes in self._by_day.items():
            for code in codes:
                held = self._holder.get(code)
                if held is not None and code not in seen and business_day(held[1]) == day:
                    seen.add(code)
                    rows.append([code, *held])
        return rows

    def restore(self, rows: Iterable[list[Any]]) -> None:
        """Load `snapshot()` output into an empty memory."""
        assert not self._holder
        for code, setl_id, setl_time_ms in rows:
            self.hold((code,), setl_id, setl_time_ms)

