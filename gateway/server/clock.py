"""The gateway's wall clock, passed to the core as `now_ms` on every call.

The real clock reads `time.time_ns()`. With `--test-clock` the clock can be set through the admin
API; it then runs on from the value set, at the real clock's pace.
"""

from __future__ import annotations

import time
from typing import Callable

__all__ = ["SettableClock", "WallClock", "system_now_ms"]


def system_now_ms() -> int:
    """Unix time in integer milliseconds."""
    return time.time_ns() // 1_000_000


class WallClock:
    """The real clock; cannot be set."""

    settable = False

    def __init__(self, source_ms: Callable[[], int] = system_now_ms) -> None:
        self._source_ms = source_ms

    def now_ms(self) -> int:
        """The current Unix time in ms."""
        return self._source_ms()


class SettableClock(WallClock):
    """A clock that can be moved (tests only) and keeps running from where it was set."""

    settable = True

    def __init__(self, source_ms: Callable[[], int] = system_now_ms) -> None:
        super().__init__(source_ms)
        self._offset_ms = 0

    def now_ms(self) -> int:
        """The set time plus the real time elapsed since it was set."""
        return self._source_ms() + self._offset_ms

    def set(self, now_ms: int) -> None:
        """Make `now_ms()` answer `now_ms` at this instant."""
        self._offset_ms = now_ms - self._source_ms()
