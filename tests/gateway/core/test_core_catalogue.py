"""The fund's catalogue: the CSV format's refusals, look-ups by code and day, upsert and retire."""

from __future__ import annotations

import datetime

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core import catalogue as catalogue_module
from gateway.core.catalogue import (
    CATALOGUE_HEADER, Catalogue, CatalogueError, Row, RowError, parse_catalogue, parse_row, row_as_change,
    row_from_change,
)
from gateway.core.clock import business_day, date_day

HEADER = ",".join(CATALOGUE_HEADER) + "\n"
GOOD = "XA01,阿莫西林胶囊,01,1,,,0,,"


def day(text: str) -> int:
    return date_day(datetime.date.fromisoformat(text))


def parse(*rows: str, header: str = HEADER):
    return parse_catalogue(header + "".join(row + "\n" for row in rows), "cat.csv")


def refusal(*rows: str, header: str = HEADER) -> CatalogueError:
    with pytest.raises(CatalogueError) as info:
        parse(*rows, header=header)
    return info.value


def row(code: str = "XA01", valid_from: str | None = None, valid_to: str | None = None, **fields) -> Row:
    base = {"med_list_codg": code, "name": "阿莫西林胶囊", "chrgitm_lv": "01", "otc": "1", "lmt_used": "0",
            "valid_from": valid_from, "valid_to": valid_to}
    return row_from_change({**base, **fields})


# -- parse: every refusal names the line (header = 1) and the field ------------------------------

@pytest.mark.parametrize("line, field, problem", [
    (",阿莫西林,01,1,,,0,,", "med_list_codg", "1..64 printable ASCII"),
    ("XA 01,阿莫西林,01,1,,,0,,", "med_list_codg", "without spaces"),
    ("X" * 65 + ",阿莫西林,01,1,,,0,,", "med_list_codg", "1..64"),
    ("药品01,阿莫西林,01,1,,,0,,", "med_list_codg", "ASCII"),
    ("XA01,,01,1,,,0,,", "name", "1..200 printable"),
    ("XA01,阿莫\t西林,01,1,,,0,,", "name", "printable"),
    ("XA01," + "药" * 201 + ",01,1,,,0,,", "name", "1..200"),
    ("XA01,阿莫西林,1,1,,,0,,", "chrgitm_lv", '"01", "02" or "03"'),
    ("XA01,阿莫西林,04,1,,,0,,", "chrgitm_lv", "got '04'"),
    ("XA01,阿莫西林,01,true,,,0,,", "otc", '"0" or "1"'),
    ("XA01,阿莫西林,01,,,,0,,", "otc", '"0" or "1"'),
    ("XA01,阿莫西林,02,1,1001,,0,,", "selfpay_prop_permille", "0..1000"),
    ("XA01,阿莫西林,02,1,-5,,0,,", "selfpay_prop_permille", "0..1000"),
    ("XA01,阿莫西林,02,1,10.5,,0,,", "selfpay_prop_permille", "0..1000"),
    ("XA01,阿莫西林,02,1,１０,,0,,", "selfpay_prop_permille", "0..1000"),
    ("XA01,阿莫西林,01,1,,-1,0,,", "pric_uplmt_fen", "0..10000000000"),
    ("XA01,阿莫西林,01,1,,10000000001,0,,", "pric_uplmt_fen", "0..10000000000"),
    ("XA01,阿莫西林,01,1,, 12,0,,", "pric_uplmt_fen", "got ' 12'"),
    ("XA01,阿莫西林,01,1,,,2,,", "lmt_used", '"0" or "1"'),
    ("XA01,阿莫西林,01,1,,,0,2024/01/01,", "valid_from", "YYYY-MM-DD"),
    ("XA01,阿莫西林,01,1,,,0,20240101,", "valid_from", "YYYY-MM-DD"),
    ("XA01,阿莫西林,01,1,,,0,2024-02-30,", "valid_from", "not a real date"),
    ("XA01,阿莫西林,01,1,,,0,,2024-13-01", "valid_to", "not a real date"),
    ("XA01,阿莫西林,01,1,,,0,2024-05-01,2024-04-30", "valid_to", "before valid_from"),
    ("XA01,阿莫西林,01,1,,,0,,,", "row", "has 10 fields, expected 9"),
    ("XA01,阿莫西林,01,1,,,0,", "row", "has 8 fields, expected 9"),
    ('"XA01,阿莫西林,01,1,,,0,,', "row", "not valid CSV"),
])
def test_a_bad_field_is_refused_naming_line_and_field(line: str, field: str, problem: str) -> None:
    error = refusal(GOOD.replace("XA01", "XA00"), line)
    assert (error.file, error.line, error.field) == ("cat.csv", 3, field)
    assert str(error).startswith(f"cat.csv:3: {field}: ") and problem in str(error)
    assert "\n" not in str(error)


@pytest.mark.parametrize("header, problem", [
    ("", "missing: the file is empty"),
    ("med_list_codg,name,chrgitm_lv,otc\n", "must be med_list_codg,name,"),
    (HEADER.replace("otc", "OTC"), "got 'med_list_codg,name,chrgitm_lv,OTC,"),
])
def test_a_bad_header_is_line_1(header: str, problem: str) -> None:
    with pytest.raises(CatalogueError) as info:
        parse_catalogue(header, "cat.csv")
    assert str(info.value).startswith("cat.csv:1: header: ") and problem in str(info.value)


def test_a_line_that_is_not_utf8_is_named() -> None:
    data = (HEADER + GOOD + "\n").encode() + "XA02,布洛芬,01,1,,,0,,\n".encode("gbk")
    with pytest.raises(CatalogueError) as info:
        parse_catalogue(data, "cat.csv")
    assert str(info.value) == "cat.csv:3: row: not UTF-8 (byte 6 of the line)"


def test_a_record_spanning_lines_is_named_by_its_first_line() -> None:
    error = refusal(GOOD, '"XA02",布洛芬,01,1,,,0,,2024-01-01', '"XA03","布洛\n芬",09,1,,,0,,')
    assert (error.line, error.field) == (4, "name")


def test_overlap_with_an_earlier_row_of_the_code_names_the_line_and_valid_from() -> None:
    error = refusal("XA01,阿莫西林,01,1,,,0,2024-01-01,2024-06-30", "XB01,布洛芬,01,1,,,0,,",
                    "XA01,阿莫西林,02,1,,,0,2024-06-30,")
    assert str(error) == ("cat.csv:4: valid_from: XA01 2024-06-30..open overlaps its row valid "
                          "2024-01-01..2024-06-30")


@pytest.mark.parametrize("first, second", [
    (",", ","),                                     # both open: every day
    ("2024-01-01,", ",2024-01-01"),                 # open ends meeting on one day
    ("2024-01-01,2024-12-31", "2024-01-01,2024-12-31"),  # the same span
    ("2024-01-01,2024-12-31", "2024-03-01,2024-03-01"),  # inside
    ("2024-03-01,2024-03-31", "2024-01-01,"),       # an open end covering a later start
])
def test_overlapping_spans_are_refused(first: str, second: str) -> None:
    error = refusal(f"XA01,阿莫西林,01,1,,,0,{first}", f"XA01,阿莫西林,01,1,,,0,{second}")
    assert (error.line, error.field) == (3, "valid_from")


def test_successive_and_gapped_rows_of_a_code_load() -> None:
    catalogue = parse("XA01,阿莫西林,01,1,,800,0,2025-01-01,", "XA01,阿莫西林,01,1,,900,0,,2024-06-30",
                      "XA01,阿莫西林,02,1,,,0,2024-07-02,2024-12-31")
    assert catalogue.rows_count == 3
    assert [r.valid_from for r in catalogue.rows_of("XA01")] == [None, day("2024-07-02"), day("2025-01-01")]


def test_blank_lines_and_a_byte_order_mark_are_accepted() -> None:
    catalogue = parse_catalogue(("\ufeff" + HEADER + "\n" + GOOD + "\r\n\n").encode(), "cat.csv")
    assert catalogue.rows_count == 1 and catalogue.lookup("XA01", 0) is not None


def test_a_good_row_keeps_every_value() -> None:
    catalogue = parse('XC10,"阿托伐他汀钙片 20mg*7片, 薄膜衣",02,0,300,1250,1,2024-01-01,2024-12-31')
    assert catalogue.rows_of("XC10") == (Row("XC10", "阿托伐他汀钙片 20mg*7片, 薄膜衣", "02", False, 300, 1250, True,
                                             day("2024-01-01"), day("2024-12-31")),)


def test_the_row_bound_is_enforced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalogue_module, "CATALOGUE_ROWS_MAX", 2)
    error = refusal(GOOD, "XA02,布洛芬,01,1,,,0,,", "XA03,布洛芬,01,1,,,0,,")
    assert str(error).startswith("cat.csv:4: row: the catalogue already holds 2 rows (CATALOGUE_ROWS_MAX)")


def test_the_rows_per_code_bound_is_enforced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalogue_module, "ROWS_PER_CODE_MAX", 2)
    error = refusal("XA01,a,01,1,,,0,,2024-01-31", "XA01,a,01,1,,,0,2024-02-01,2024-02-28",
                    "XA01,a,01,1,,,0,2024-03-01,")
    assert (error.line, error.field) == (4, "med_list_codg") and "ROWS_PER_CODE_MAX" in str(error)


# -- look-ups -------------------------------------------------------------------------------------

LOOKUP_FILE = ("XA01,阿莫西林,01,1,,,0,2024-01-01,2024-01-31",   # closed span
               "XA01,阿莫西林,02,1,,,0,2024-03-01,",             # after a gap, open end
               "XB01,布洛芬,01,1,,,0,,2023-12-31",               # open start
               "XC01,维生素C,03,1,,,0,,")                        # always


@pytest.mark.parametrize("code, date, level", [
    ("XA01", "2023-12-31", None),       # the day before the first start
    ("XA01", "2024-01-01", "01"),       # valid_from is inclusive
    ("XA01", "2024-01-31", "01"),       # valid_to is inclusive
    ("XA01", "2024-02-01", None),       # the gap
    ("XA01", "2024-02-29", None),
    ("XA01", "2024-03-01", "02"),       # the next row's first day
    ("XA01", "2099-12-31", "02"),       # open end
    ("XB01", "1970-01-01", "01"),       # open start
    ("XB01", "2023-12-31", "01"),
    ("XB01", "2024-01-01", None),
    ("XC01", "2000-01-01", "03"),
    ("XD01", "2024-01-01", None),       # unknown code
    ("xa01", "2024-01-01", None),       # codes are case-sensitive
])
def test_lookup_by_code_and_day(code: str, date: str, level: str | None) -> None:
    found = parse(*LOOKUP_FILE).lookup(code, day(date))
    assert (found.chrgitm_lv if found else None) == level


def test_lookup_days_are_shanghai_business_days() -> None:
    catalogue = parse("XA01,阿莫西林,01,1,,,0,2024-03-01,")
    # 2024-02-29 16:00 UTC is 2024-03-01 00:00 in Shanghai.
    assert catalogue.lookup("XA01", business_day(1_709_222_400_000)) is not None
    assert catalogue.lookup("XA01", business_day(1_709_222_400_000 - 1)) is None


# -- upsert and retire ----------------------------------------------------------------------------

@pytest.mark.parametrize("valid_from, valid_to, refused", [
    ("2024-02-01", "2024-02-29", False),   # fills the gap exactly
    ("2024-01-31", "2024-02-10", True),    # touches the first row's last day
    ("2024-02-10", "2024-03-01", True),    # touches the open row's first day
    ("2024-03-01", None, True),            # the same valid_from as a row of the code
    (None, "2023-12-31", False),           # open start before everything
    (None, "2024-01-01", True),
])
def test_upsert_refuses_an_overlap_naming_valid_from(valid_from, valid_to, refused: bool) -> None:
    catalogue = parse(*LOOKUP_FILE)
    new = row("XA01", valid_from, valid_to, chrgitm_lv="03")
    if refused:
        with pytest.raises(RowError) as info:
            catalogue.upsert(new)
        assert info.value.field == "valid_from" and str(info.value).startswith("valid_from: XA01 ")
        assert catalogue.rows_count == 4 and catalogue.snapshot() == []
    else:
        catalogue.upsert(new)
        assert catalogue.rows_count == 5 and catalogue.lookup("XA01", day(valid_to)) == new


def test_upsert_of_a_new_code_and_its_check_alone() -> None:
    catalogue = Catalogue()
    new = row("ZA04", "2024-01-01", pric_uplmt_fen=1500)
    catalogue.check_upsert(new)
    assert catalogue.rows_count == 0
    catalogue.upsert(new)
    assert catalogue.rows_count == 1 and catalogue.lookup("ZA04", day("2024-01-01")).pric_uplmt_fen == 1500


@pytest.mark.parametrize("code, date, refused", [
    ("XA01", "2024-01-15", False),   # inside the closed row: cut short
    ("XA01", "2024-01-31", False),   # its own last day: no change of span
    ("XA01", "2024-03-01", False),   # the open row on its first day
    ("XA01", "2024-02-15", True),    # the gap: nothing in force
    ("XB01", "2024-01-01", True),    # after its end
    ("XZ99", "2024-01-01", True),    # unknown code
])
def test_retire_sets_valid_to_of_the_row_in_force(code: str, date: str, refused: bool) -> None:
    catalogue = parse(*LOOKUP_FILE)
    if refused:
        with pytest.raises(RowError) as info:
            catalogue.retire(code, day(date))
        assert info.value.field == "valid_to" and str(info.value).startswith("valid_to: no row of ")
        return
    retired = catalogue.retire(code, day(date))
    assert retired.valid_to == day(date) and catalogue.lookup(code, day(date)) == retired
    assert catalogue.lookup(code, day(date) + 1) is None and catalogue.rows_count == 4


def test_retire_then_upsert_replaces_a_row_from_a_day_on() -> None:
    catalogue = parse("XA01,阿莫西林,01,1,,1000,0,,")
    catalogue.retire("XA01", day("2024-12-31"))
    catalogue.upsert(row("XA01", "2025-01-01", pric_uplmt_fen=900))
    caps = [catalogue.lookup("XA01", day(d)).pric_uplmt_fen for d in ("2024-12-31", "2025-01-01")]
    assert caps == [1000, 900] and catalogue.rows_count == 2


def test_snapshot_is_msgpack_and_restore_replays_onto_the_file() -> None:
    catalogue = parse(*LOOKUP_FILE)
    catalogue.retire("XC01", day("2024-06-30"))
    catalogue.upsert(row("XC01", "2024-07-01", chrgitm_lv="02", selfpay_prop_permille=150))
    catalogue.upsert(row("ZZ01"))
    packed = msgpack.packb(catalogue.snapshot(), use_bin_type=True)
    fresh = parse(*LOOKUP_FILE)
    fresh.restore(msgpack.unpackb(packed, raw=False))
    assert fresh.snapshot() == catalogue.snapshot() and fresh.rows_count == catalogue.rows_count == 6
    for code in ("XA01", "XB01", "XC01", "ZZ01"):
        assert fresh.rows_of(code) == catalogue.rows_of(code)


def test_restore_refuses_a_change_that_no_longer_applies() -> None:
    catalogue = Catalogue()
    catalogue.upsert(row("XA01"))
    with pytest.raises(RowError) as info:
        parse(GOOD).restore(catalogue.snapshot())
    assert info.value.field == "valid_from"


# -- rows from admin changes (typed JSON values) --------------------------------------------------

@pytest.mark.parametrize("fields, field", [
    ({"med_list_codg": None}, "med_list_codg"),
    ({"name": 5}, "name"),
    ({"otc": True}, "otc"),
    ({"chrgitm_lv": 1}, "chrgitm_lv"),
    ({"selfpay_prop_permille": "100"}, "selfpay_prop_permille"),
    ({"selfpay_prop_permille": True}, "selfpay_prop_permille"),
    ({"pric_uplmt_fen": -1}, "pric_uplmt_fen"),
    ({"pric_uplmt_fen": 1.5}, "pric_uplmt_fen"),
    ({"lmt_used": None}, "lmt_used"),
    ({"valid_from": "2024-1-1"}, "valid_from"),
    ({"valid_from": "2024-02-01", "valid_to": "2024-01-31"}, "valid_to"),
])
def test_row_from_change_names_the_bad_field(fields: dict, field: str) -> None:
    with pytest.raises(RowError) as info:
        row(**fields)
    assert info.value.field == field and str(info.value).startswith(f"{field}: ")


def test_row_as_change_is_the_inverse_of_row_from_change() -> None:
    for text in ("XA01,阿莫西林,02,0,150,1200,1,2024-01-01,2024-12-31", GOOD):
        parsed = parse_row(text.split(","))
        assert row_from_change(row_as_change(parsed)) == parsed
    assert row_as_change(parse_row(GOOD.split(",")))["valid_from"] is None


def test_a_copy_is_independent_of_its_original() -> None:
    original = parse(*LOOKUP_FILE)
    twin = original.copy()
    twin.retire("XA01", day("2024-03-05"))
    twin.upsert(row("ZZ01"))
    assert original.lookup("XA01", day("2024-03-06")) is not None and original.rows_of("ZZ01") == ()
    assert original.rows_count == 4 and original.snapshot() == [] and len(twin.snapshot()) == 2


# -- the index against a plain scan ---------------------------------------------------------------

SPANS = st.lists(st.tuples(st.sampled_from(["A", "B"]), st.none() | st.integers(0, 30), st.none() | st.integers(0, 30)),
                 max_size=12)


def days(row: Row) -> set[int]:
    """The row's days within the test's calendar -1..31 (open ends reach its edges)."""
    low = -1 if row.valid_from is None else row.valid_from
    return set(range(low, (31 if row.valid_to is None else row.valid_to) + 1))


def naive_overlap(rows: list[Row], new: Row) -> bool:
    return any(r.med_list_codg == new.med_list_codg and days(r) & days(new) for r in rows)


@settings(max_examples=200, deadline=None)
@given(SPANS)
def test_upserts_and_lookups_agree_with_a_plain_scan(spans: list[tuple[str, int | None, int | None]]) -> None:
    catalogue, kept = Catalogue(), []
    for code, low, high in spans:
        if low is not None and high is not None and high < low:
            low, high = high, low
        new = Row(code, "x", "01", True, None, None, False, low, high)
        if naive_overlap(kept, new):
            with pytest.raises(RowError):
                catalogue.upsert(new)
        else:
            catalogue.upsert(new)
            kept.append(new)
    assert catalogue.rows_count == len(kept)
    for code in ("A", "B"):
        for when in range(-1, 32):
            expected = [r for r in kept if r.med_list_codg == code
                        and (r.valid_from is None or r.valid_from <= when)
                        and (r.valid_to is None or when <= r.valid_to)]
            assert catalogue.lookup(code, when) == (expected[0] if expected else None)
