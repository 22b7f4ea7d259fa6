"""Personal accounts (个人账户, SPEC 13 "Data" and "Who pays v2"): opening balances and their ledger.

The accounts file (CSV, UTF-8, header `psn_no,balance_fen`) gives opening balances; from then on
balances are ledgers of the gateway: journaled (each settlement, give-back and `account.credit`
is a record), snapshotted, never written back to the file. The reading of the file belongs to the
shell (gateway/accounts_file.py); `parse_accounts` here is pure: it takes the file's lines.

Memory: a county has ~500,000 insured and a city several million, nearly all with numeric psn_nos.
`OpeningBalances` keeps those as two sorted `array('q')` columns (key, balance): 16 bytes a person,
found by bisection. A psn_no written as a canonical decimal of up to 18 digits (no leading zero) is
its own key; any other psn_no goes to a plain dict. The opening balances never change,
so one loaded copy serves every core of the process (a rebuilt core shares it). `AccountLedger`
holds only the balances that differ from the opening ones. docs/benchmarks.md has the figures.

Errors: a bad file raises `AccountsError` whose str() is one line `FILE:LINE: FIELD: problem`
(the header is line 1).
"""

from __future__ import annotations

import array
import bisect
import csv
import itertools
import json
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from gateway.core.governance import FieldError
from gateway.core.registry import ID
from protocol import limits

__all__ = ["ACCOUNTS_HEADER", "ACCOUNTS_ROWS_MAX", "BALANCE_FEN_MAX", "AccountLedger", "AccountsError",
           "OpeningBalances", "check_credit", "parse_accounts"]

ACCOUNTS_HEADER = ("psn_no", "balance_fen")
# A large city's insured; the sorted columns of this many rows take 160 MB.
ACCOUNTS_ROWS_MAX = 10_000_000
# No personal account holds 100 million yuan: a balance beyond the wire's amount bound is a broken
# file (opening) or a refused credit, so every balance and every acct_pay fits an amount field.
BALANCE_FEN_MAX = limits.AMOUNT_FEN_MAX
_NUMERIC_DIGITS_MAX = 18
_BALANCE_DIGITS_MAX = len(str(BALANCE_FEN_MAX))
_PSN_NO = re.compile(ID)
_HEADER = ",".join(ACCOUNTS_HEADER).encode()
_BOM = "\ufeff".encode()
_QUOTE_CHARS_MAX = 40


class AccountsError(ValueError):
    """An accounts file that cannot be loaded; str() is one line `FILE:LINE: FIELD: problem`."""

    def __init__(self, file: str, line: int | None, field: str | None, problem: str) -> None:
        place = file if line is None else f"{file}:{line}"
        super().__init__(f"{place}: {problem}" if field is None else f"{place}: {field}: {problem}")
        self.file, self.line, self.field, self.problem = file, line, field, problem


def _numeric_key(psn_no: str) -> int | None:
    """The array key of a psn_no written as a canonical decimal of up to 18 digits, else None."""
    if (len(psn_no) <= _NUMERIC_DIGITS_MAX and psn_no.isascii() and psn_no.isdigit()
            and (psn_no[0] != "0" or psn_no == "0")):
        return int(psn_no)
    return None


class OpeningBalances:
    """The accounts file's balances, immutable once loaded: `get(psn_no)` is the balance or None."""

    __slots__ = ("_keys", "_balances", "_others")

    def __init__(self, keys: array.array, balances: array.array, others: dict[str, int]) -> None:
        """`keys` sorted and unique (numeric psn_nos as `_numeric_key`), `balances` alongside."""
        self._keys, self._balances, self._others = keys, balances, others

    def __len__(self) -> int:
        return len(self._keys) + len(self._others)

    def get(self, psn_no: str) -> int | None:
        """The opening balance of `psn_no`, or None when the file has no account for it."""
        key = _numeric_key(psn_no)
        if key is None:
            return self._others.get(psn_no)
        keys = self._keys
        index = bisect.bisect_left(keys, key)
        return self._balances[index] if index < len(keys) and keys[index] == key else None


# -- the file --------------------------------------------------------------------------------------

# A run of rows in the plain form (a canonical decimal psn_no, a balance of digits) is checked and
# converted in bulk, in C: a million rows load in about a second instead of several. Anything else
# (quotes, other psn_nos, blank lines, every error) goes row by row.
_CHUNK_BYTES = 1 << 20


_DIGITS_AND_CR = b"0123456789\r"
_ROW_SKELETON = b",\n"
_NUMERIC_KEY_LIMIT = 10**_NUMERIC_DIGITS_MAX


def _quote(text: str) -> str:
    return repr(text if len(text) <= _QUOTE_CHARS_MAX else text[:_QUOTE_CHARS_MAX] + "...")


class _Parse:
    """One pass over the data rows: canonical numeric psn_nos into columns, others into a dict."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.keys = array.array("q")
        self.balances = array.array("q")
        self.others: dict[str, int] = {}

    def fail(self, line: int, field: str, problem: str) -> AccountsError:
        return AccountsError(self.file, line, field, problem)

    def plain(self, chunk: bytes) -> bool:
        """Take the chunk's rows if all are plain (see above); False, taking nothing, if not.

        Plain: without digits and carriage returns the chunk is ",\\n" once per row, and as a JSON
        array (commas and line ends both separators) it is integers, none with a leading zero (JSON
        has none), a psn_no below 10^18 and a balance within BALANCE_FEN_MAX.
        """
        rows = chunk.count(b"\n") + (not chunk.endswith(b"\n"))
        skeleton = chunk.translate(None, _DIGITS_AND_CR)
        if skeleton != _ROW_SKELETON * rows and skeleton + b"\n" != _ROW_SKELETON * rows:
            return False
        try:
            values = json.loads(b"[" + chunk.rstrip(b"\r\n").replace(b"\n", b",") + b"]")
        except ValueError:
            return False
        psns, balances = values[0::2], values[1::2]
        if len(values) != 2 * rows or max(psns) >= _NUMERIC_KEY_LIMIT or max(balances) > BALANCE_FEN_MAX:
            return False
        self.keys.extend(array.array("q", psns))
        self.balances.extend(array.array("q", balances))
        return True

    def row(self, line: int, raw: bytes) -> None:
        """One row, field by field: quoted fields, non-numeric psn_nos and every error."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail(line, "row", f"not UTF-8 (byte {exc.start + 1} of the line)") from None
        try:
            fields = next(csv.reader([text], strict=True))
        except csv.Error as exc:
            raise self.fail(line, "row", f"not valid CSV: {exc}") from None
        if len(fields) != len(ACCOUNTS_HEADER):
            raise self.fail(line, "row", f"has {len(fields)} fields, expected {len(ACCOUNTS_HEADER)}")
        psn_no, balance_text = fields
        if not _PSN_NO.fullmatch(psn_no):
            raise self.fail(line, "psn_no", f"must be 1..64 characters of [0-9A-Za-z_.:-], got {_quote(psn_no)}")
        if (not (balance_text.isascii() and balance_text.isdigit()) or len(balance_text) > _BALANCE_DIGITS_MAX
                or int(balance_text) > BALANCE_FEN_MAX):
            raise self.fail(line, "balance_fen", f"must be an integer 0..{BALANCE_FEN_MAX}, got "
                                                 f"{_quote(balance_text)}")
        key = _numeric_key(psn_no)
        if key is not None:
            self.keys.append(key)
            self.balances.append(int(balance_text))
        elif psn_no in self.others:
            raise self.fail(line, "psn_no", f"{psn_no} appears twice")
        else:
            self.others[psn_no] = int(balance_text)

    def rows_in(self, chunk: bytes, first_line: int) -> None:
        if not self.plain(chunk):
            for line, raw in enumerate(chunk.split(b"\n"), start=first_line):
                raw = raw.rstrip(b"\r")
                if raw:
                    self.row(line, raw)
        if len(self.keys) + len(self.others) > ACCOUNTS_ROWS_MAX:
            raise self.fail(first_line, "row", f"more than {ACCOUNTS_ROWS_MAX} accounts (ACCOUNTS_ROWS_MAX)")

    def done(self, data: bytes) -> OpeningBalances:
        keys, balances = self.keys, self.balances
        if not all(map(operator.lt, keys, itertools.islice(keys, 1, None))):
            order = sorted(range(len(keys)), key=keys.__getitem__)
            keys = array.array("q", map(keys.__getitem__, order))
            balances = array.array("q", map(balances.__getitem__, order))
            del order
            for position, (low, high) in enumerate(zip(keys, itertools.islice(keys, 1, None))):
                if low == high:
                    raise self.fail(_line_of(data, low, 2), "psn_no", f"{low} appears twice")
        return OpeningBalances(keys, balances, self.others)


def _line_of(data: bytes, key: int, occurrence: int) -> int:
    """The line of the `occurrence`-th row whose psn_no is the decimal `key` (for error messages)."""
    found = 0
    for line, raw in enumerate(data.split(b"\n"), start=1):
        if line > 1 and raw.split(b",", 1)[0].strip(b'"') == str(key).encode():
            found += 1
            if found == occurrence:
                return line
    return 1


def _check_header(file: str, data: bytes) -> int:
    """Check the header line; returns where the data rows start."""
    end = data.find(b"\n")
    header = data if end < 0 else data[:end]
    if not data:
        raise AccountsError(file, 1, "header", "missing: the file is empty")
    header = header.rstrip(b"\r")
    if header.startswith(_BOM):
        header = header[len(_BOM):]   # spreadsheets save "CSV UTF-8" with a byte order mark
    if header != _HEADER:
        raise AccountsError(file, 1, "header", f"must be {_HEADER.decode()}, got "
                                               f"{_quote(header.decode('utf-8', 'replace'))}")
    return len(data) if end < 0 else end + 1


def parse_accounts(data: bytes, file: str) -> OpeningBalances:
    """Parse an accounts file.

    Args:
        data: the file's bytes.
        file: the name errors report.
    Returns:
        the OpeningBalances. Blank lines are skipped; a leading byte order mark is ignored.
    Raises:
        AccountsError: one line `FILE:LINE: FIELD: problem` for the first problem found.
    """
    position = _check_header(file, data)
    parse = _Parse(file)
    line = 2
    while position < len(data):
        end = data.find(b"\n", position + _CHUNK_BYTES)
        end = len(data) if end < 0 else end + 1
        chunk = data[position:end]
        parse.rows_in(chunk, line)
        line += chunk.count(b"\n")
        position = end
    return parse.done(data)


# -- the ledger ------------------------------------------------------------------------------------

class AccountLedger:
    """Balances now: the opening ones, and those changed since (single writer: the core).

    A person without an account has balance 0. A balance goes below 0 only through `debit` with
    `overdraft=True` (a 2601 re-instating a cancellation, SPEC 13); every other debit asserts it
    stays at or above 0.
    """

    __slots__ = ("opening", "_changed")

    def __init__(self, opening: OpeningBalances | None) -> None:
        """`opening`: the loaded accounts file (shared, never changed); None when accounts are off."""
        self.opening = opening
        self._changed: dict[str, int] = {}

    @property
    def enabled(self) -> bool:
        """Whether accounts are on (`[paths] accounts` is set)."""
        return self.opening is not None

    def opening_balance(self, psn_no: str) -> int | None:
        """The file's balance of `psn_no` (None: no account in the file, or accounts off)."""
        return None if self.opening is None else self.opening.get(psn_no)

    def balance(self, psn_no: str) -> int:
        """The balance now (0 for a person without an account)."""
        changed = self._changed.get(psn_no)
        if changed is not None:
            return changed
        return self.opening_balance(psn_no) or 0

    def debit(self, psn_no: str, amount_fen: int, overdraft: bool = False) -> int:
        """Take `amount_fen` and return the balance after; only an `overdraft` (a re-instatement) may
        leave it below 0."""
        assert amount_fen >= 0
        after_fen = self.balance(psn_no) - amount_fen
        if amount_fen:
            assert overdraft or after_fen >= 0, f"account {psn_no} would be overdrawn outside a re-instatement"
            self._set(psn_no, after_fen)
        return after_fen

    def credit(self, psn_no: str, amount_fen: int) -> None:
        """Give back (a cancellation or reversal) or credit (`account.credit`) `amount_fen`."""
        assert amount_fen >= 0
        if amount_fen:
            self._set(psn_no, self.balance(psn_no) + amount_fen)

    def _set(self, psn_no: str, balance_fen: int) -> None:
        # A balance back at its opening value is forgotten, so that a debit and its give-back
        # leave the state exactly as it was.
        if balance_fen == (self.opening_balance(psn_no) or 0):
            self._changed.pop(psn_no, None)
        else:
            self._changed[psn_no] = balance_fen

    def changed(self) -> int:
        """How many balances differ from the file's (what the snapshot carries)."""
        return len(self._changed)

    def overdrawn(self) -> dict[str, int]:
        """Balances below 0 (only re-instatements make them)."""
        return {psn_no: fen for psn_no, fen in self._changed.items() if fen < 0}

    def snapshot(self) -> list[list[Any]]:
        """The changed balances as [psn_no, balance_fen], sorted (msgpack-able)."""
        return [[psn_no, fen] for psn_no, fen in sorted(self._changed.items())]

    def restore(self, rows: Iterable[list[Any]]) -> None:
        """Load `snapshot()` output onto a ledger over the same opening balances."""
        assert not self._changed
        for psn_no, fen in rows:
            self._set(psn_no, fen)


def check_credit(ledger: AccountLedger, change: Mapping[str, Any]) -> Callable[[], None]:
    """Validate an `account.credit` change {psn_no, amount_fen > 0}; returns the action applying it.

    Raises:
        FieldError: accounts off (`kind`), a bad `psn_no`, an amount not an integer 1..10^10, or a
            balance that would exceed BALANCE_FEN_MAX (`amount_fen`).
    """
    if not ledger.enabled:
        raise FieldError("kind", "accounts are off ([paths] accounts is not set)")
    psn_no, amount_fen = change.get("psn_no"), change.get("amount_fen")
    if not isinstance(psn_no, str) or not _PSN_NO.fullmatch(psn_no):
        raise FieldError("psn_no", f"bad value {psn_no!r}")
    if isinstance(amount_fen, bool) or not isinstance(amount_fen, int) or not 0 < amount_fen <= BALANCE_FEN_MAX:
        raise FieldError("amount_fen", f"must be an integer within [1, {BALANCE_FEN_MAX}]")
    if ledger.balance(psn_no) + amount_fen > BALANCE_FEN_MAX:
        raise FieldError("amount_fen", f"the balance would exceed {BALANCE_FEN_MAX} fen")
    return lambda: ledger.credit(psn_no, amount_fen)
