"""Business calendar of Asia/Shanghai (UTC+8, no DST), computed from integer Unix milliseconds.

The core never reads a clock: every function here takes the instant as an argument.
"""

from __future__ import annotations

import datetime
import functools

MS_PER_DAY = 86_400_000
SHANGHAI_OFFSET_MS = 8 * 3_600_000
_EPOCH = datetime.date(1970, 1, 1)


def business_day(now_ms: int) -> int:
    """Return the Shanghai day number (days since 1970-01-01 in UTC+8) of `now_ms`."""
    return (now_ms + SHANGHAI_OFFSET_MS) // MS_PER_DAY


# The calendar helpers below are pure functions of one integer, called several times per request
# with the same few values (today, this month, this second); a small cache turns each repeated
# date construction into a dict look-up. Dates and strings are immutable, so sharing is safe.
@functools.lru_cache(maxsize=64)
def day_date(day: int) -> datetime.date:
    """Return the calendar date of a Shanghai day number."""
    return _EPOCH + datetime.timedelta(days=day)


def date_day(date: datetime.date) -> int:
    """Return the Shanghai day number of a calendar date."""
    return (date - _EPOCH).days


@functools.lru_cache(maxsize=64)
def month_of_day(day: int) -> int:
    """Return the business month of a day as the integer yyyymm (e.g. 202403)."""
    date = day_date(day)
    return date.year * 100 + date.month


def business_month(now_ms: int) -> int:
    """Return the Shanghai business month (yyyymm) of `now_ms`."""
    return month_of_day(business_day(now_ms))


def first_day_of_month(month: int) -> int:
    """Return the day number of the first day of business month `month` (yyyymm)."""
    return date_day(datetime.date(month // 100, month % 100, 1))


def local_stamp(now_ms: int) -> str:
    """Return the Shanghai local time of `now_ms` as yyyyMMddHHmmss."""
    return _local_stamp_of_second((now_ms + SHANGHAI_OFFSET_MS) // 1000)


@functools.lru_cache(maxsize=16)
def _local_stamp_of_second(local_s: int) -> str:
    stamp = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=local_s)
    return stamp.strftime("%Y%m%d%H%M%S")


def parse_stmt_date(text: str) -> int:
    """Parse a "YYYYMMDD" statement date into a day number; raises ValueError when not a real date."""
    if len(text) != 8 or not text.isdigit():
        raise ValueError(f"not a YYYYMMDD date: {text!r}")
    return date_day(datetime.date(int(text[:4]), int(text[4:6]), int(text[6:])))
