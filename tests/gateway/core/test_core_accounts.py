"""The accounts file (SPEC 13 "Data"): parsing, refusals naming file, line and field, look-ups, and
the balance ledger's rules (no overdraft but by a re-instatement)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from gateway.core.accounts import BALANCE_FEN_MAX, AccountLedger, AccountsError, parse_accounts
from gateway.core.governance import FieldError
from gateway.core.accounts import check_credit


def test_plain_and_other_rows_are_found() -> None:
    data = ("\ufeffpsn_no,balance_fen\r\n5101820000000002,300\r\n5101820000000001,200\r\n\r\n"
            '"0000001",7\nX-9:a,8\n0,9\n').encode()
    opening = parse_accounts(data, "a.csv")
    assert len(opening) == 5
    assert [opening.get(p) for p in ("5101820000000001", "5101820000000002", "0000001", "1", "X-9:a", "0", "Q")] \
        == [200, 300, 7, None, 8, 9, None]


def test_a_large_file_in_many_chunks_keeps_every_row() -> None:
    rows = [f"{n},{n % 1000}\n" for n in range(1, 120_001)]
    rows[50_000] = "ABC,5\n"            # one non-plain row in the middle chunk
    opening = parse_accounts(("psn_no,balance_fen\n" + "".join(reversed(rows))).encode(), "big.csv")
    assert len(opening) == 120_000
    assert opening.get("119999") == 999 and opening.get("ABC") == 5 and opening.get("50001") is None


@pytest.mark.parametrize("body, expected", [
    ("", "a.csv:1: header: missing: the file is empty"),
    ("psn_no,balance\n", "a.csv:1: header: must be psn_no,balance_fen, got 'psn_no,balance'"),
    ("psn_no,balance_fen\n1,2,3\n", "a.csv:2: row: has 3 fields, expected 2"),
    ("psn_no,balance_fen\n1,2\nA B,3\n", "a.csv:3: psn_no: must be 1..64 characters of [0-9A-Za-z_.:-], got 'A B'"),
    ("psn_no,balance_fen\n1,-2\n", "a.csv:2: balance_fen: must be an integer 0..10000000000, got '-2'"),
    ("psn_no,balance_fen\n1,2.5\n", "a.csv:2: balance_fen: must be an integer 0..10000000000, got '2.5'"),
    ("psn_no,balance_fen\n1,\n", "a.csv:2: balance_fen: must be an integer 0..10000000000, got ''"),
    ("psn_no,balance_fen\n1,10000000001\n", "a.csv:2: balance_fen: must be an integer 0..10000000000, got "
                                           "'10000000001'"),
    ("psn_no,balance_fen\n1,1.5\n", "a.csv:2: balance_fen: must be an integer 0..10000000000, got '1.5'"),
    ("psn_no,balance_fen\n1,1e5\n", "a.csv:2: balance_fen: must be an integer 0..10000000000, got '1e5'"),
    ("psn_no,balance_fen\n1,2\n3\n", "a.csv:3: row: has 1 fields, expected 2"),
    ("psn_no,balance_fen\n7,1\n8,2\n7,3\n", "a.csv:4: psn_no: 7 appears twice"),
    ("psn_no,balance_fen\n7,1\n7,3\n", "a.csv:3: psn_no: 7 appears twice"),
    ("psn_no,balance_fen\nA,1\nA,3\n", "a.csv:3: psn_no: A appears twice"),
    ('psn_no,balance_fen\n"1,2\n', "a.csv:2: row: not valid CSV: unexpected end of data"),
])
def test_a_bad_file_is_refused_in_one_line(body: str, expected: str) -> None:
    with pytest.raises(AccountsError) as caught:
        parse_accounts(body.encode(), "a.csv")
    assert str(caught.value) == expected


def test_bytes_that_are_not_utf8_name_their_line() -> None:
    with pytest.raises(AccountsError) as caught:
        parse_accounts(b"psn_no,balance_fen\n1,2\n\xff,3\n", "a.csv")
    assert str(caught.value) == "a.csv:3: row: not UTF-8 (byte 1 of the line)"


def test_the_ledger_remembers_only_what_differs_from_the_file() -> None:
    ledger = AccountLedger(parse_accounts(b"psn_no,balance_fen\n1,500\n", "a.csv"))
    assert (ledger.balance("1"), ledger.balance("2")) == (500, 0)
    ledger.debit("1", 500)
    assert ledger.balance("1") == 0 and ledger.snapshot() == [["1", 0]]
    with pytest.raises(AssertionError):
        ledger.debit("1", 1)                   # only a re-instatement may overdraw
    ledger.debit("1", 300, overdraft=True)
    assert ledger.balance("1") == -300 and ledger.overdrawn() == {"1": -300}
    ledger.credit("1", 800)
    assert ledger.snapshot() == [] and ledger.changed() == 0
    twin = AccountLedger(ledger.opening)
    ledger.credit("2", 5)
    twin.restore(ledger.snapshot())
    assert twin.balance("2") == 5 and twin.snapshot() == ledger.snapshot()


def test_account_credit_is_checked_field_by_field() -> None:
    ledger = AccountLedger(parse_accounts(b"psn_no,balance_fen\n1,500\n", "a.csv"))
    check_credit(ledger, {"kind": "account.credit", "psn_no": "1", "amount_fen": 5})()
    assert ledger.balance("1") == 505
    for change, field in (({"psn_no": "1", "amount_fen": 0}, "amount_fen"),
                          ({"psn_no": "1", "amount_fen": True}, "amount_fen"),
                          ({"psn_no": "1", "amount_fen": "5"}, "amount_fen"),
                          ({"psn_no": "1", "amount_fen": BALANCE_FEN_MAX}, "amount_fen"),
                          ({"psn_no": "", "amount_fen": 5}, "psn_no")):
        with pytest.raises(FieldError) as caught:
            check_credit(ledger, {"kind": "account.credit", **change})
        assert caught.value.field == field
    with pytest.raises(FieldError) as caught:
        check_credit(AccountLedger(None), {"kind": "account.credit", "psn_no": "1", "amount_fen": 5})
    assert caught.value.field == "kind"


psn_nos = st.one_of(st.integers(0, 10**19).map(str), st.from_regex(r"0[0-9]{1,17}", fullmatch=True),
                    st.from_regex(r"[0-9A-Za-z_.:\-]{1,20}", fullmatch=True))


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(psn_nos, st.integers(0, BALANCE_FEN_MAX), max_size=40), st.booleans(), st.integers(1, 64))
def test_parsed_balances_are_the_rows_whatever_the_chunking(rows: dict[str, int], crlf: bool, chunk: int) -> None:
    end = "\r\n" if crlf else "\n"
    data = ("psn_no,balance_fen" + end + "".join(f"{p},{b}{end}" for p, b in rows.items())).encode()
    import gateway.core.accounts as accounts
    original = accounts._CHUNK_BYTES
    accounts._CHUNK_BYTES = chunk          # tiny chunks: plain and row-by-row runs interleave
    try:
        opening = parse_accounts(data, "p.csv")
    finally:
        accounts._CHUNK_BYTES = original
    assert len(opening) == len(rows)
    assert all(opening.get(p) == b for p, b in rows.items())
