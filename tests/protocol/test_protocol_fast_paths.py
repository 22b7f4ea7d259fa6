"""The decoders' and encoders' fast paths answer exactly as the reference paths they shortcut.

Each fast path handles the expected shape in one pass and hands anything else to the reference
walk; these tests compare both on valid and on mutated values (derandomized hypothesis runs).
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import protocol
from protocol import ErrCode, ProtocolError, canonical, inputs
from protocol_builders import (bill_line, card_fields, envelope_dict, packed, reference_decode_frame,
                              valid_input)

SETTINGS = settings(max_examples=400, derandomize=True, deadline=None)

# Plain values and a few that are not (out of int64, nested containers), with str keys of every kind.
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False),
                    st.text(max_size=6), st.binary(max_size=6))
KEYS = st.text(max_size=4)
TREES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner),
                                                       st.dictionaries(KEYS, inner, max_size=4)), max_leaves=20)


def _reference_canonical(obj: Any) -> Any:
    """SPEC section 2 written out: every map rebuilt in UTF-8 key order, tuples as arrays."""
    if isinstance(obj, dict):
        return {key: _reference_canonical(obj[key]) for key in sorted(obj, key=lambda k: k.encode("utf-8"))}
    if isinstance(obj, (list, tuple)):
        return [_reference_canonical(value) for value in obj]
    return obj


def _in_key_order(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {key: _in_key_order(obj[key]) for key in sorted(obj)}
    if isinstance(obj, (list, tuple)):
        return [_in_key_order(value) for value in obj]
    return obj


@SETTINGS
@given(TREES)
def test_canonical_packb_equals_the_reference_in_any_key_order(tree: Any) -> None:
    expected = msgpack.packb(_reference_canonical(tree), use_bin_type=True)
    assert protocol.canonical_packb(tree) == expected
    ordered = _in_key_order(tree)
    assert canonical._in_canonical_order(ordered)       # the fast path is taken ...
    assert protocol.canonical_packb(ordered) == expected  # ... and gives the same bytes


def test_canonical_order_is_utf8_byte_order() -> None:
    assert canonical._in_canonical_order({"": 1, "z": 2, "é": 3, "\U0001f600": 4})
    assert not canonical._in_canonical_order({"é": 1, "z": 2})
    assert not canonical._in_canonical_order({"b": 1, "a": 2})
    assert not canonical._in_canonical_order({"a": {"b": [{"d": 1, "c": 2}]}})
    assert not canonical._in_canonical_order({1: 2})
    assert not canonical._in_canonical_order([msgpack.ExtType(1, b"x")])


def _outcome(call: Any) -> Any:
    try:
        return call()
    except ProtocolError as exc:
        return (exc.code, exc.msg)


TAG = b"\x00" * 32
FRAME_CASES = [
    [1, "mac", "S1", b"body", TAG],
    [1, "mac", 2**64 - 1, b"body", TAG],          # not plain: the walk's reason wins
    [1, "mac", "S1", {b"k": 1}, TAG],
    [2**63, "mac", "S1", b"body", TAG],
    [2, "mac", "S1", b"body", TAG],
    [True, "mac", "S1", b"body", TAG],
    [1, "xyz", "S1", b"body", TAG],
    [1, ["mac"], "S1", b"body", TAG],
    [1, "mac", "", b"body", TAG],
    [1, "mac", "k" * 65, b"body", TAG],
    [1, "mac", "S1", "body", TAG],
    [1, "mac", "S1", b"body", b"\x00" * 64],
    [1, "sig", "S1", b"body", b"\x00" * 64],
    [1, "mac", "S1", b"body"],
    {"a": 1},
]


@pytest.mark.parametrize("value", FRAME_CASES)
def test_decode_frame_answers_as_the_reference(value: Any) -> None:
    data = msgpack.packb(value, use_bin_type=True)
    assert _outcome(lambda: protocol.decode_frame(data)) == _outcome(lambda: reference_decode_frame(data))


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(("env", "proven"), [
    (envelope_dict(), True),
    (envelope_dict(extra=2**64 - 1), None),                                  # outer: MALFORMED_ENVELOPE
    (envelope_dict(extra=[{"k": [2**64 - 1]}]), None),
    (envelope_dict(input_={**valid_input("2102"), "extra": 2**64 - 1}), False),  # inner: left to parse_input
    (envelope_dict(input_={**valid_input("2102"), "extra": _nested(30)}), True),   # 32 deep: the bound
    (envelope_dict(input_={**valid_input("2102"), "extra": _nested(31)}), None),
])
def test_envelope_proof_of_plain_input(env: dict[str, Any], proven: bool | None) -> None:
    body = packed(env)
    outcome = _outcome(lambda: protocol.decode_request_envelope_proving_input(body))
    if proven is None:
        assert outcome[0] == ErrCode.MALFORMED_ENVELOPE
        assert _outcome(lambda: protocol.decode_request_envelope(body)) == outcome
        return
    decoded, flag = outcome
    assert flag is proven and decoded == protocol.decode_request_envelope(body)
    assert _outcome(lambda: protocol.parse_input(decoded.infno, decoded.input, input_proven_plain=flag)) == \
        _outcome(lambda: protocol.parse_input(decoded.infno, decoded.input))


LINE_VALUES = st.one_of(SCALARS, st.sampled_from(["", "01", "02", "03", "x\n", "k" * 64, "k" * 65, 0, 1, 10**6,
                                                   10**6 + 1, 10**10, 10**10 + 1, -1, None, True, False]))
LINE_FIELDS = ["feedetl_sn", "med_list_codg", "chrgitm_lv", "otc", "rxno", "cnt", "pric", "det_item_fee_sumamt",
               "bilg_dr_codg"]


@SETTINGS
@given(st.dictionaries(st.sampled_from(LINE_FIELDS), LINE_VALUES, max_size=3), st.sets(st.sampled_from(LINE_FIELDS)))
def test_bill_line_fast_path_answers_as_the_field_walk(changes: dict[str, Any], dropped: set[str]) -> None:
    raw = {**bill_line(rxno="RX1"), **changes}
    for field in dropped:
        raw.pop(field, None)
    assert _outcome(lambda: inputs._bill_line(raw, 4)) == _outcome(lambda: inputs._bill_line_checked(raw, "input.items[4]"))


CARD_FIELDS = ["mdtrt_cert_type", "mdtrt_cert_no", "card_sn", "psn_no", "insutype", "insuplc_admdvs", "card_mac"]
CARD_VALUES = st.one_of(SCALARS, st.sampled_from(["03", "01", "02", "510100", "5101000", "51010a", "x\n", "k" * 65,
                                                  b"\x00" * 16, b"\x00" * 15, None]))


@SETTINGS
@given(st.dictionaries(st.sampled_from(CARD_FIELDS), CARD_VALUES, max_size=3), st.sets(st.sampled_from(CARD_FIELDS)))
def test_card_fast_path_answers_as_the_field_walk(changes: dict[str, Any], dropped: set[str]) -> None:
    raw = {**card_fields(), **changes}
    for field in dropped:
        raw.pop(field, None)
    assert _outcome(lambda: inputs._credential(raw)) == _outcome(lambda: inputs._credential_checked(raw))


def test_fast_paths_are_taken_for_valid_values() -> None:
    line = bill_line(rxno="")
    assert inputs._bill_line(line, 0) == inputs._bill_line_checked(line, "input.items[0]")
    assert inputs._bill_line(line, 0).rxno is None
    assert isinstance(inputs._credential(card_fields()), protocol.CardCredential)
