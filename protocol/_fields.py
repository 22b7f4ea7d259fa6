"""Small field checks shared by the envelope and input validators."""

from __future__ import annotations

import datetime

from protocol import limits

def is_digits(text: str, count: int) -> bool:
    """True when `text` is exactly `count` ASCII digits (str.isdigit alone would accept other scripts)."""
    # Among ASCII characters only 0-9 are digits, so isascii() and isdigit() (both in C) say
    # "ASCII digits only"; an empty text has no non-digit, hence the `not text` case.
    return len(text) == count and (not text or (text.isascii() and text.isdigit()))


def is_int(value: object) -> bool:
    """True for an int that is not a bool (a bool is never an integer on this wire)."""
    return type(value) is int


def is_real_datetime(digits14: str) -> bool:
    """True when `digits14` is yyyyMMddHHmmss naming a real calendar date-time."""
    if not is_digits(digits14, limits.MSGID_TIME_DIGITS):
        return False
    try:
        datetime.datetime(
            int(digits14[0:4]), int(digits14[4:6]), int(digits14[6:8]),
            int(digits14[8:10]), int(digits14[10:12]), int(digits14[12:14]),
        )
    except ValueError:
        return False
    return True


def is_real_date(digits8: object) -> bool:
    """True when `digits8` is a str YYYYMMDD naming a real calendar date."""
    if not isinstance(digits8, str) or not is_digits(digits8, 8):
        return False
    try:
        datetime.date(int(digits8[0:4]), int(digits8[4:6]), int(digits8[6:8]))
    except ValueError:
        return False
    return True


def msgid_layout_ok(msgid: object) -> bool:
    """True when `msgid` is 12 chars + a real yyyyMMddHHmmss + 4 digits (30 chars in all)."""
    if not isinstance(msgid, str) or len(msgid) != limits.MSGID_CHARS:
        return False
    time_end = limits.INSTITUTION_CODE_CHARS + limits.MSGID_TIME_DIGITS
    return is_real_datetime(msgid[limits.INSTITUTION_CODE_CHARS:time_end]) and is_digits(
        msgid[time_end:], limits.MSGID_SERIAL_DIGITS
    )
