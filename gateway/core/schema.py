"""Strict field checks for TOML tables: every problem becomes one line naming file, entry and field."""

from __future__ import annotations

import base64
import binascii
import datetime
import re
from collections.abc import Iterable, Mapping
from typing import Any


class RegistryError(ValueError):
    """A registry or secrets file that cannot be loaded; the message is one line naming file, entry, field."""


class Entry:
    """One TOML table (an entry of an array of tables, or a top-level table) under validation."""

    def __init__(self, file: str, where: str, table: Any) -> None:
        self.file = file
        self.where = where
        if not isinstance(table, Mapping):
            raise self.error(None, "must be a table")
        self.table = table

    def error(self, field: str | None, problem: str) -> RegistryError:
        """Build the one-line error for `field` (None = the entry itself)."""
        place = self.where if field is None else f"{self.where}.{field}"
        return RegistryError(f"{self.file}: {place}: {problem}")

    def only(self, allowed: Iterable[str]) -> None:
        """Refuse keys outside `allowed`."""
        allowed_set = set(allowed)
        for key in self.table:
            if key not in allowed_set:
                raise self.error(str(key), "unknown key")

    def raw(self, field: str, default: Any = ...) -> Any:
        """Return the value of `field`; a missing field without default is an error."""
        if field not in self.table:
            if default is ...:
                raise self.error(field, "missing")
            return default
        return self.table[field]

    def text(self, field: str, pattern: str | None = None, default: Any = ...) -> str:
        """Return a string field, optionally checked against a full-match regex."""
        value = self.raw(field, default)
        if value is default and default is not ...:
            return value
        if not isinstance(value, str):
            raise self.error(field, f"must be a string, not {type(value).__name__}")
        if pattern is not None and not re.fullmatch(pattern, value):
            raise self.error(field, f"bad value {value!r}")
        return value

    def choice(self, field: str, options: Iterable[str]) -> str:
        """Return a string field that must be one of `options`."""
        value = self.text(field)
        options_list = list(options)
        if value not in options_list:
            raise self.error(field, f"must be one of {options_list}, not {value!r}")
        return value

    def integer(self, field: str, low: int, high: int, default: Any = ...) -> int:
        """Return an integer field (bools refused) within [low, high]; `default` when absent (if given)."""
        if default is not ... and field not in self.table:
            return default
        value = self.raw(field)
        return check_int(self, field, value, low, high)

    def date(self, field: str, default: Any = ...) -> datetime.date:
        """Return a "YYYY-MM-DD" string field as a date; `default` when absent (if given)."""
        if default is not ... and field not in self.table:
            return default
        value = self.text(field, r"\d{4}-\d{2}-\d{2}")
        try:
            return datetime.date.fromisoformat(value)
        except ValueError:
            raise self.error(field, f"not a real date {value!r}") from None

    def key32(self, field: str) -> bytes:
        """Return a standard-base64 field that must decode to exactly 32 bytes."""
        return decode_key32(self, field, self.text(field))


def check_int(entry: Entry, field: str, value: Any, low: int, high: int) -> int:
    """Check that `value` is an int (not a bool) in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise entry.error(field, f"must be an integer, not {type(value).__name__}")
    if not low <= value <= high:
        raise entry.error(field, f"must be within [{low}, {high}], not {value}")
    return value


def decode_key32(entry: Entry, field: str, text: str) -> bytes:
    """Decode standard base64 of exactly 32 raw bytes."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise entry.error(field, "not standard base64") from None
    if len(raw) != 32:
        raise entry.error(field, f"must decode to 32 bytes, not {len(raw)}")
    return raw


def entries(file: str, data: Mapping[str, Any], name: str) -> list[Entry]:
    """Return the entries of the array of tables `name` (absent = empty)."""
    items = data.get(name, [])
    if not isinstance(items, list):
        raise RegistryError(f"{file}: {name}: must be an array of tables")
    return [Entry(file, f"{name}[{index}]", item) for index, item in enumerate(items)]


def unique(entry: Entry, field: str, value: Any, seen: dict[Any, str]) -> None:
    """Refuse a value of `field` already used by an earlier entry."""
    if value in seen:
        raise entry.error(field, f"duplicate {value!r} (first at {seen[value]})")
    seen[value] = entry.where
