"""The fund's catalogue (医保目录, SPEC section 13 "Data"): rows by `med_list_codg` and validity.

A catalogue file is CSV, UTF-8, with the header `CATALOGUE_HEADER`. Each row says what the fund
thinks of one code over a span of days: its class (`chrgitm_lv`), whether it is OTC, its own
self-pay-first share, its price cap (限价), whether its use is restricted (限定支付), and the days it
is valid (both ends inclusive, an empty end is open). A code may have several rows as long as their
spans do not overlap, so a price change is a new row after the old one's `valid_to`.

This module is pure: `parse_catalogue` takes the file's text (or its lines) and the name to report,
and the reading of the file belongs to the shell (gateway/catalogue_file.py). Days are the core's
day numbers (`clock.business_day`), so a look-up is two integer comparisons per row of the code.

Errors: a bad file raises `CatalogueError` whose str() is one line `FILE:LINE: FIELD: problem`
(the header is line 1). A bad row built from an admin change, an overlapping upsert or a retire
with no row in force raise `RowError`, a ValueError whose str() is `FIELD: problem`, as the
admin overlay's errors are.

Memory: a row is a NamedTuple of shared objects where values repeat (class strings, flags, day
numbers from one cache), and a code with one row (nearly all of them) is stored without a list
around it. docs/benchmarks.md has the bytes per row.
"""

from __future__ import annotations

import csv
import datetime
import functools
import io
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from gateway.core.clock import date_day, day_date
from gateway.core.governance import FieldError
from protocol import limits

__all__ = [
    "CATALOGUE_HEADER", "CATALOGUE_ROWS_MAX", "CODE_CHARS_MAX", "NAME_CHARS_MAX", "ROWS_PER_CODE_MAX",
    "Catalogue", "CatalogueError", "Row", "RowError", "parse_catalogue", "parse_row", "row_as_change",
    "row_from_change",
]

CATALOGUE_HEADER = ("med_list_codg", "name", "chrgitm_lv", "otc", "selfpay_prop_permille",
                    "pric_uplmt_fen", "lmt_used", "valid_from", "valid_to")
# The national drug and service code lists a county uses hold about 10^5 codes; three times that
# leaves room for a province's list while keeping a start's memory and time bounded.
CATALOGUE_ROWS_MAX = 300_000
# A code changes price or class a few times a year at most; more rows than this is a broken file.
ROWS_PER_CODE_MAX = 32
# A code is sent on every bill line, whose `med_list_codg` is a protocol identifier.
CODE_CHARS_MAX = limits.ID_CHARS_MAX
# National names with dosage form and specification stay well under this.
NAME_CHARS_MAX = 200
PERMILLE_MAX = 1000
CLASSES = ("01", "02", "03")
_FIELDS_COUNT = len(CATALOGUE_HEADER)
# Shared objects: every row of class "02" points at the same string, every flag at True/False.
_CLASS_OF_TEXT = {level: level for level in CLASSES}
_FLAG_OF_TEXT = {"0": False, "1": True}
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_AMOUNT_DIGITS_MAX = len(str(limits.AMOUNT_FEN_MAX))
# Values quoted in an error are cut, so that the message stays one short line.
_QUOTE_CHARS_MAX = 40
_BOM = "\ufeff"


class Row(NamedTuple):
    """One catalogue row; `valid_from`/`valid_to` are day numbers (inclusive), None when open."""

    med_list_codg: str
    name: str
    chrgitm_lv: str
    otc: bool
    selfpay_prop_permille: int | None
    pric_uplmt_fen: int | None
    lmt_used: bool
    valid_from: int | None
    valid_to: int | None


class RowError(FieldError):
    """A row or a change that cannot be applied; str() is one line `FIELD: problem`."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(field, problem)
        self.problem = problem


class CatalogueError(ValueError):
    """A catalogue file that cannot be loaded; str() is one line `FILE:LINE: FIELD: problem`.

    `line` is None for a problem of the whole file (unreadable, too large); `field` is None when
    no field is to blame (e.g. the file cannot be read at all).
    """

    def __init__(self, file: str, line: int | None, field: str | None, problem: str) -> None:
        place = file if line is None else f"{file}:{line}"
        super().__init__(f"{place}: {problem}" if field is None else f"{place}: {field}: {problem}")
        self.file = file
        self.line = line
        self.field = field
        self.problem = problem


def _quote(text: str) -> str:
    """repr() of a value, cut: repr escapes line breaks, so the error stays one line."""
    return repr(text if len(text) <= _QUOTE_CHARS_MAX else text[:_QUOTE_CHARS_MAX] + "...")


# -- one row ---------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=8192)
def _day_of_text(text: str) -> int:
    """The day number of "YYYY-MM-DD"; cached, so rows with the same date share one int object."""
    if not _DATE.fullmatch(text):
        raise ValueError("must be YYYY-MM-DD or empty")
    try:
        return date_day(datetime.date(int(text[:4]), int(text[5:7]), int(text[8:])))
    except ValueError:
        raise ValueError("is not a real date") from None


def _day(field: str, text: str) -> int | None:
    if not text:
        return None
    try:
        return _day_of_text(text)
    except ValueError as exc:
        raise RowError(field, f"{exc}, got {_quote(text)}") from None


def _whole(field: str, text: str, high: int, digits_max: int) -> int | None:
    """An optional integer 0..high written in ASCII digits only (no sign, no spaces)."""
    if not text:
        return None
    if len(text) > digits_max or not (text.isascii() and text.isdigit()) or int(text) > high:
        raise RowError(field, f"must be empty or an integer 0..{high}, got {_quote(text)}")
    return int(text)


def _flag(field: str, text: str) -> bool:
    flag = _FLAG_OF_TEXT.get(text)
    if flag is None:
        raise RowError(field, f'must be "0" or "1", got {_quote(text)}')
    return flag


def _code(text: str) -> str:
    # Printable ASCII without spaces, as the national codes are; the length is the wire's bound.
    if not 0 < len(text) <= CODE_CHARS_MAX or not (text.isascii() and text.isprintable()) or " " in text:
        raise RowError("med_list_codg", f"must be 1..{CODE_CHARS_MAX} printable ASCII characters "
                                        f"without spaces, got {_quote(text)}")
    return text


def _name(text: str) -> str:
    if not 0 < len(text) <= NAME_CHARS_MAX or not text.isprintable():
        raise RowError("name", f"must be 1..{NAME_CHARS_MAX} printable characters, got {_quote(text)}")
    return text


def _class(text: str) -> str:
    level = _CLASS_OF_TEXT.get(text)
    if level is None:
        raise RowError("chrgitm_lv", f'must be "01", "02" or "03", got {_quote(text)}')
    return level


def parse_row(fields: Sequence[str]) -> Row:
    """Validate the nine text fields of one row, in `CATALOGUE_HEADER` order.

    Args:
        fields: the values as the CSV holds them (empty string = empty field).
    Returns:
        the Row, days as day numbers.
    Raises:
        RowError: naming the first field that is wrong (or "row" for a wrong field count).
    """
    if len(fields) != _FIELDS_COUNT:
        raise RowError("row", f"has {len(fields)} fields, expected {_FIELDS_COUNT}")
    code, name, level, otc, prop, cap, lmt_used, valid_from, valid_to = fields
    row = Row(_code(code), _name(name), _class(level), _flag("otc", otc),
              _whole("selfpay_prop_permille", prop, PERMILLE_MAX, 4),
              _whole("pric_uplmt_fen", cap, limits.AMOUNT_FEN_MAX, _AMOUNT_DIGITS_MAX),
              _flag("lmt_used", lmt_used), _day("valid_from", valid_from), _day("valid_to", valid_to))
    if row.valid_from is not None and row.valid_to is not None and row.valid_to < row.valid_from:
        raise RowError("valid_to", f"{valid_to} is before valid_from {valid_from}")
    return row


# Admin changes carry typed JSON (SPEC 13: codes, flags and dates as strings, amounts as integers,
# an optional field omitted or null for empty); they are turned into the file's text and checked
# by the same rules, so a row means the same whichever way it came in.
_INT_FIELDS = ("selfpay_prop_permille", "pric_uplmt_fen")
_OPTIONAL_FIELDS = frozenset(_INT_FIELDS + ("valid_from", "valid_to"))


def _change_text(change: Mapping[str, Any], field: str) -> str:
    value = change.get(field)
    if value is None:
        if field in _OPTIONAL_FIELDS:
            return ""
        raise RowError(field, "is required")
    if field in _INT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise RowError(field, "must be null or an integer >= 0")
        return str(value)
    if not isinstance(value, str):
        raise RowError(field, f"must be a string, got {type(value).__name__}")
    return value


def row_from_change(change: Mapping[str, Any]) -> Row:
    """Validate a `catalogue.upsert` change's row fields (typed JSON values); other keys are ignored.

    Raises:
        RowError: naming the first field that is missing or wrong.
    """
    return parse_row([_change_text(change, field) for field in CATALOGUE_HEADER])


def _date_text(day: int | None) -> str | None:
    return None if day is None else day_date(day).isoformat()


def row_as_change(row: Row) -> dict[str, Any]:
    """The row as typed JSON values (the inverse of `row_from_change`), for views and the audit."""
    return {
        "med_list_codg": row.med_list_codg, "name": row.name, "chrgitm_lv": row.chrgitm_lv,
        "otc": "1" if row.otc else "0", "selfpay_prop_permille": row.selfpay_prop_permille,
        "pric_uplmt_fen": row.pric_uplmt_fen, "lmt_used": "1" if row.lmt_used else "0",
        "valid_from": _date_text(row.valid_from), "valid_to": _date_text(row.valid_to),
    }


def _span_text(row: Row) -> str:
    return f"{_date_text(row.valid_from) or 'open'}..{_date_text(row.valid_to) or 'open'}"


def _in_force(row: Row, day: int) -> bool:
    return ((row.valid_from is None or row.valid_from <= day)
            and (row.valid_to is None or day <= row.valid_to))


def _overlap(a: Row, b: Row) -> bool:
    """Whether two inclusive spans share a day (None ends are open)."""
    a_starts_late = a.valid_from is not None and b.valid_to is not None and a.valid_from > b.valid_to
    b_starts_late = b.valid_from is not None and a.valid_to is not None and b.valid_from > a.valid_to
    return not (a_starts_late or b_starts_late)


def _start(row: Row) -> int | float:
    return float("-inf") if row.valid_from is None else row.valid_from


# -- the index -------------------------------------------------------------------------------------

class Catalogue:
    """Rows indexed by code; mutated in place by `upsert` and `retire` (one writer: the core).

    The changes applied since the file was loaded are kept in order: `snapshot()` returns them and
    `restore()` replays them onto a catalogue freshly loaded from the same file, as the admin
    overlay does for the registry. The file itself is never rewritten.
    """

    __slots__ = ("_by_code", "_rows_count", "_changes")

    def __init__(self) -> None:
        """An empty catalogue (every code unknown)."""
        # A code with one row maps to the Row itself; one with several to a list sorted by start.
        self._by_code: dict[str, Row | list[Row]] = {}
        self._rows_count = 0
        self._changes: list[list[Any]] = []

    @property
    def rows_count(self) -> int:
        """Rows held now, upserts included (the `yb_catalogue_rows` gauge)."""
        return self._rows_count

    def rows_of(self, code: str) -> tuple[Row, ...]:
        """Every row of `code`, earliest `valid_from` first (empty when the code is unknown)."""
        entry = self._by_code.get(code)
        if entry is None:
            return ()
        return (entry,) if type(entry) is Row else tuple(entry)

    def lookup(self, code: str, day: int) -> Row | None:
        """The row of `code` valid on `day` (a `clock.business_day` number), or None."""
        entry = self._by_code.get(code)
        if entry is None:
            return None
        if type(entry) is Row:
            # The span test is written out rather than called: this runs for every bill line.
            low, high = entry.valid_from, entry.valid_to
            return entry if (low is None or low <= day) and (high is None or day <= high) else None
        for row in entry:
            if _in_force(row, day):
                return row
        return None

    def copy(self) -> Catalogue:
        """An independent catalogue with the same rows and changes (what a rebuilt core starts
        from: the file is loaded once, and each core mutates its own copy). Rows are immutable
        and shared; only the index is copied (about 20 ms for 100,000 rows)."""
        twin = Catalogue()
        twin._by_code = {code: entry if type(entry) is Row else list(entry)
                         for code, entry in self._by_code.items()}
        twin._rows_count = self._rows_count
        twin._changes = [list(change) for change in self._changes]
        return twin

    def check_upsert(self, row: Row) -> None:
        """Raise RowError if `upsert(row)` would be refused; changes nothing.

        Raises:
            RowError: `valid_from` when the row overlaps a row of its code (the same start
                included: retire the old row first); `med_list_codg` when the code already has
                ROWS_PER_CODE_MAX rows or the catalogue holds CATALOGUE_ROWS_MAX rows.
        """
        rows = self.rows_of(row.med_list_codg)
        for other in rows:
            if _overlap(row, other):
                raise RowError("valid_from", f"{row.med_list_codg} {_span_text(row)} overlaps its row "
                                             f"valid {_span_text(other)}")
        if len(rows) >= ROWS_PER_CODE_MAX:
            raise RowError("med_list_codg", f"{row.med_list_codg} already has {ROWS_PER_CODE_MAX} rows "
                                            "(ROWS_PER_CODE_MAX)")
        if self._rows_count >= CATALOGUE_ROWS_MAX:
            raise RowError("row", f"the catalogue already holds {CATALOGUE_ROWS_MAX} rows "
                                            "(CATALOGUE_ROWS_MAX)")

    def upsert(self, row: Row) -> None:
        """Add `row` in place (a journaled `catalogue.upsert`'s commit); raises as `check_upsert`."""
        self._add(row)
        self._changes.append(["upsert", *row])

    def check_retire(self, code: str, valid_to_day: int) -> Row:
        """The row `retire(code, valid_to_day)` would end; changes nothing.

        Raises:
            RowError: `valid_to` when no row of `code` is in force on that day.
        """
        row = self.lookup(code, valid_to_day)
        if row is None:
            raise RowError("valid_to", f"no row of {_quote(code)} is in force on "
                                       f"{_date_text(valid_to_day)}")
        return row

    def retire(self, code: str, valid_to_day: int) -> Row:
        """Set, in place, `valid_to` of the row in force on `valid_to_day` to that day.

        Returns:
            the row as it is now. Raises as `check_retire`.
        """
        old = self.check_retire(code, valid_to_day)
        new = old._replace(valid_to=valid_to_day)
        entry = self._by_code[code]
        if type(entry) is Row:
            self._by_code[code] = new
        else:
            entry[entry.index(old)] = new
        self._changes.append(["retire", code, valid_to_day])
        return new

    def snapshot(self) -> list[list[Any]]:
        """The changes applied since the file was loaded, in order, as msgpack-able lists."""
        return [list(change) for change in self._changes]

    def restore(self, changes: Iterable[Sequence[Any]]) -> None:
        """Replay `snapshot()`'s changes onto this catalogue, freshly loaded from the same file.

        Raises:
            RowError: a change that no longer applies (the file was edited under the journal).
        """
        assert not self._changes, "restore onto a catalogue that already has changes"
        for change in changes:
            if change[0] == "upsert" and len(change) == 1 + _FIELDS_COUNT:
                self.upsert(Row(*change[1:]))
            elif change[0] == "retire" and len(change) == 3:
                self.retire(change[1], change[2])
            else:
                raise RowError("change", f"unknown catalogue change {_quote(str(change[0]))}")

    def _add(self, row: Row) -> None:
        self.check_upsert(row)
        code = row.med_list_codg
        entry = self._by_code.get(code)
        if entry is None:
            self._by_code[code] = row
        else:
            rows = [entry] if type(entry) is Row else entry
            rows.append(row)
            rows.sort(key=_start)
            self._by_code[code] = rows
        self._rows_count += 1


# -- the file --------------------------------------------------------------------------------------

def _records(lines: Iterable[str], file: str) -> Iterable[tuple[int, list[str]]]:
    """(first line number, fields) of each CSV record; csv errors become CatalogueError."""
    reader = csv.reader(lines, strict=True)
    line = 1
    try:
        for fields in reader:
            yield line, fields
            line = reader.line_num + 1
    except csv.Error as exc:
        raise CatalogueError(file, line, "row", f"not valid CSV: {exc}") from None


def _check_header(file: str, fields: list[str] | None) -> None:
    if fields is None:
        raise CatalogueError(file, 1, "header", "missing: the file is empty")
    if fields and fields[0].startswith(_BOM):
        fields[0] = fields[0][len(_BOM):]  # spreadsheets save "CSV UTF-8" with a byte order mark
    if tuple(fields) != CATALOGUE_HEADER:
        raise CatalogueError(file, 1, "header", f"must be {','.join(CATALOGUE_HEADER)}, "
                                                f"got {_quote(','.join(fields))}")


def _decoded_lines(data: bytes, file: str) -> Iterator[str]:
    """The lines of `data` decoded one by one, so that bytes that are not UTF-8 get their line."""
    for number, raw in enumerate(io.BytesIO(data), start=1):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CatalogueError(file, number, "row", f"not UTF-8 (byte {exc.start + 1} of the line)") from None


def parse_catalogue(source: bytes | str | Iterable[str], file: str) -> Catalogue:
    """Parse a catalogue file's content into a Catalogue with no changes.

    Args:
        source: the file's bytes, its whole text, or its lines with their line ends.
        file: the name errors report.
    Returns:
        the Catalogue. Blank lines are skipped; a leading byte order mark is ignored.
    Raises:
        CatalogueError: one line `FILE:LINE: FIELD: problem` for the first problem found.
    """
    if isinstance(source, bytes):
        lines: Iterable[str] = _decoded_lines(source, file)
    else:
        lines = source.splitlines(keepends=True) if isinstance(source, str) else source
    records = iter(_records(lines, file))
    first = next(records, None)
    _check_header(file, None if first is None else first[1])
    catalogue = Catalogue()
    # One string per distinct name: a generic name recurs for every maker and pack of a drug.
    names: dict[str, str] = {}
    for line, fields in records:
        if not fields:
            continue
        if len(fields) > 1:
            fields[1] = names.setdefault(fields[1], fields[1])
        try:
            catalogue._add(parse_row(fields))
        except RowError as exc:
            raise CatalogueError(file, line, exc.field, exc.problem) from None
    return catalogue
