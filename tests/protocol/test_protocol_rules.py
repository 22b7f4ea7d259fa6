"""Readers compiled from field tables: order, absence, optional fields, positions, messages."""

from __future__ import annotations

from typing import Any

import pytest

from protocol import ErrCode, ProtocolError
from protocol._rules import ID, INTEGER, Field, Rule, Table, compile_reader, integer, one_of, text

PAIR = compile_reader(Table(name="pair", code=ErrCode.MALFORMED_INPUT, message="{path}.{name}: {why}", fields=(
    Field("kind", (one_of({"a", "b"}, "not 'a' or 'b'"),)),
    Field("count", integer(1, 9)),
    Field("note", (text(0, 4),), optional="True", empty_is_none=True),
    Field("label", (ID,), optional="kind == 'b'"),
)))
KEYED = compile_reader(Table(name="keyed", code=ErrCode.MALFORMED_ENVELOPE, message="{name}: {why}",
                             nil_is_missing=False, fields=(Field("n", (INTEGER,)),)))
ARRAY = compile_reader(Table(name="array", code=ErrCode.MALFORMED_FRAME, message="{path}: {why}", positional=True,
                             make=lambda *values: list(values), fields=(
    Field("size", (INTEGER,)),
    Field("blob", (Rule("isinstance(v, bytes) and len(v) == size", "blob is not bin({size})"),)),
)))


def _outcome(read: Any, raw: Any, path: str = "input") -> Any:
    try:
        return read(raw, path)
    except ProtocolError as exc:
        return (exc.code, exc.msg)


@pytest.mark.parametrize(("raw", "expected"), [
    ({"kind": "a", "count": 3, "label": "L"}, ("a", 3, None, "L")),
    ({"kind": "b", "count": 9, "note": "", "label": None}, ("b", 9, None, None)),   # label optional when kind b
    ({"kind": "b", "count": 1, "note": "abcd"}, ("b", 1, "abcd", None)),
    ({"count": 0}, (ErrCode.MALFORMED_INPUT, "input.kind: missing")),                 # the first field answers
    ({"kind": None, "count": 0}, (ErrCode.MALFORMED_INPUT, "input.kind: missing")),   # nil is absent here
    ({"kind": "c"}, (ErrCode.MALFORMED_INPUT, "input.kind: not 'a' or 'b'")),
    ({"kind": "a", "count": True}, (ErrCode.MALFORMED_INPUT, "input.count: not an integer")),
    ({"kind": "a", "count": 10}, (ErrCode.MALFORMED_INPUT, "input.count: outside 1..9")),
    ({"kind": "a", "count": 1, "note": "abcde"}, (ErrCode.MALFORMED_INPUT, "input.note: not a string of 0..4 chars")),
    ({"kind": "a", "count": 1}, (ErrCode.MALFORMED_INPUT, "input.label: missing")),
    ({"kind": "a", "count": 1, "label": ""}, (ErrCode.MALFORMED_INPUT, "input.label: not a string of 1..64 chars")),
])
def test_a_reader_checks_fields_in_table_order(raw: dict[str, Any], expected: Any) -> None:
    assert _outcome(PAIR, raw) == expected


def test_where_nil_is_a_value_only_an_absent_key_is_missing() -> None:
    assert _outcome(KEYED, {}) == (ErrCode.MALFORMED_ENVELOPE, "n: missing")
    assert _outcome(KEYED, {"n": None}) == (ErrCode.MALFORMED_ENVELOPE, "n: not an integer")
    assert KEYED({"n": 5}, "") == (5,)


def test_positional_fields_and_reasons_that_show_earlier_fields() -> None:
    assert ARRAY([2, b"ab"], "frame") == [2, b"ab"]
    assert _outcome(ARRAY, [3, b"ab"], "frame") == (ErrCode.MALFORMED_FRAME, "frame: blob is not bin(3)")
    assert _outcome(ARRAY, ["3", b"ab"], "frame") == (ErrCode.MALFORMED_FRAME, "frame: not an integer")


def test_the_reader_is_the_table_written_out() -> None:
    source = PAIR.source
    assert source.index("'kind'") < source.index("'count'") < source.index("'note'") < source.index("'label'")
    assert "for " not in source and "while " not in source, "straight-line: no loop over fields"


def test_field_names_must_name_locals() -> None:
    for name in ("not-an-identifier", "class"):
        with pytest.raises(AssertionError):
            compile_reader(Table(name="bad", code=ErrCode.MALFORMED_INPUT, message="{name}", fields=(Field(name, ()),)))
