"""Canonical msgpack (SPEC section 2) against the SPEC's words, written out here independently.

Like every protocol test, each runs with the C fast paths and with the pure-Python ones (conftest).
"""

from __future__ import annotations

import enum
import hashlib
import random
from collections import OrderedDict
from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

import protocol
from protocol_builders import Pairs, envelope_dict, loose_packb, valid_input

INT64_MIN = -(2**63)


def spec_canonical(obj: Any) -> bytes:
    """Every map's keys sorted by their UTF-8 bytes, recursively; shortest encodings; bin type."""
    def rebuild(value: Any) -> Any:
        if isinstance(value, dict):
            keys = sorted(value, key=lambda key: key.encode("utf-8"))
            return {key: rebuild(value[key]) for key in keys}
        if isinstance(value, (list, tuple)):
            return [rebuild(item) for item in value]
        return value
    return msgpack.packb(rebuild(obj), use_bin_type=True)


class _Code(enum.IntEnum):
    TWO = 2


class _Word(str, enum.Enum):
    A = "a"


class _Key(str):
    """A str subclass as a map key: encodes as the str it is."""


ORDER_KEYS = st.one_of(
    st.sampled_from(["", "a", "ab", "b", "B", "_", "\x7f", "\x80", "\u00e9", "z", "\ue000", "\uffff", "\U00010000",
                     "\U0010ffff", "aa\x00", "a\x00"]),
    st.text(max_size=4))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(INT64_MIN, 2**64 - 1), st.floats(), st.text(max_size=4),
                    st.binary(max_size=4), st.sampled_from([0, 1, True, False, 0.0, 1.0, -0.0, _Code.TWO, _Word.A]))
TREES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.tuples(inner, inner), st.dictionaries(ORDER_KEYS, inner, max_size=5),
    st.dictionaries(ORDER_KEYS, inner, max_size=3).map(OrderedDict),
    st.dictionaries(ORDER_KEYS.map(_Key), inner, max_size=3)), max_leaves=25)


def _in_key_order(obj: Any) -> Any:
    if type(obj) is dict:
        return {key: _in_key_order(obj[key]) for key in sorted(obj)}
    if type(obj) in (list, tuple):
        return type(obj)(_in_key_order(value) for value in obj)
    return obj


@settings(max_examples=800, derandomize=True, deadline=None)
@given(TREES)
def test_canonical_packb_is_spec_canonical_for_every_tree(tree: Any) -> None:
    expected = spec_canonical(tree)
    assert protocol.canonical_packb(tree) == expected
    assert protocol.canonical_packb(_in_key_order(tree)) == expected
    # What decoding the canonical bytes gives back (plain types, key order) packs to the same bytes.
    assert protocol.canonical_packb(msgpack.unpackb(expected, raw=False)) == expected


def test_canonical_distinguishes_what_msgpack_distinguishes() -> None:
    # bool vs int, float vs int, str vs bin, int subclass vs int: SPEC keeps the msgpack type.
    for left, right in ((True, 1), (False, 0), (1.0, 1), (0.0, -0.0), ("a", b"a"), ([], {})):
        assert protocol.fingerprint("2102", {"k": left}) != protocol.fingerprint("2102", {"k": right})
    assert protocol.canonical_packb({"k": _Code.TWO}) == protocol.canonical_packb({"k": 2})
    assert protocol.canonical_packb({_Key("b"): 1, _Key("a"): 2}) == b"\x82\xa1a\x02\xa1b\x01"


class _Items(list[Any]):
    """A list subclass: an array like any other."""


def test_maps_inside_any_array_or_map_are_ordered() -> None:
    tree = _Items([{"b": 1, "a": OrderedDict(d=1, c=2)}, (msgpack.ExtType(1, b"x"),)])
    expected = [{"a": {"c": 2, "d": 1}, "b": 1}, [msgpack.ExtType(1, b"x")]]  # an ext stays an ext
    assert protocol.canonical_packb(tree) == msgpack.packb(expected, use_bin_type=True)
    # One map held in several places (as `[line] * 3` builds) is ordered wherever it is.
    shared = {"z": [1], "y": {"x": 0, "w": 0}}
    tree = {"s": [shared, 0, shared], "r": shared, "q": [shared]}
    assert protocol.canonical_packb(tree) == spec_canonical(tree)


def test_canonical_key_order_is_utf8_byte_order_across_planes() -> None:
    # U+E000..U+FFFF sort before U+10000 in UTF-8 (and by code point), after it in UTF-16.
    keys = ["\U00010000", "\uffff", "\ue000", "\u00e9", "z", "ab", "a", "B", ""]
    tree = {key: index for index, key in enumerate(keys)}
    expected = spec_canonical(tree)
    assert protocol.canonical_packb(tree) == expected
    assert protocol.canonical_packb(dict(reversed(list(tree.items())))) == expected
    decoded = msgpack.unpackb(expected, raw=False)
    assert list(decoded) == sorted(keys, key=lambda key: key.encode("utf-8"))
    assert protocol.canonical_packb(decoded) == expected


def test_fingerprint_is_sha256_of_the_spec_canonical_pair() -> None:
    input_ = {"b": [{"d": 2, "c": 1}], "a": 1}
    assert protocol.fingerprint("2102", input_) == hashlib.sha256(spec_canonical(["2102", input_])).digest()


def _decoded(pairs: list[tuple[str, Any]]) -> Any:
    return protocol.decode_request_envelope(loose_packb(envelope_dict(input_=Pairs(pairs)), random.Random(0))).input


def test_an_input_that_repeats_a_key_never_fingerprints_as_a_well_formed_one() -> None:
    # Refused at input validation, after the idempotency step (SPEC section 5): until then a retry
    # that repeats a key must not match the recorded request, whichever copy a reader keeps.
    valid = valid_input("2103")
    last_wins = _decoded([("psn_no", "OTHER"), *valid.items()])
    first_wins = _decoded([*valid.items(), ("psn_no", "OTHER")])
    prints = {protocol.fingerprint("2103", value) for value in (valid, {**valid, "psn_no": "OTHER"}, last_wins,
                                                                first_wins)}
    assert len(prints) == 4
    # Still a function of what was sent: the same pairs in another key order are the same request.
    reordered = _decoded([("psn_no", "OTHER"), *reversed(list(valid.items()))])
    assert protocol.fingerprint("2103", reordered) == protocol.fingerprint("2103", last_wins)


def test_response_fields_encode_as_the_spec_canonical_envelope() -> None:
    output = {"setlinfo": {"z": 1, "a": [{"y": 2, "b": True}]}, "detlcutinfo": []}
    for msgid, out in ((None, None), ("M" * 30, output), ("M" * 30, None), (None, output)):
        fields = {"infcode": -2, "err_code": "X", "err_msg": "\u9519", "inf_refmsgid": "R" * 30,
                  "respond_time": 2**40, "warnings": ["W"]}
        if msgid is not None:
            fields["msgid"] = msgid
        if out is not None:
            fields["output"] = out
        encoded = protocol.encode_response_fields(-2, "X", "\u9519", msgid, "R" * 30, 2**40, out, ("W",))
        assert encoded == spec_canonical(fields)
        env = protocol.ResponseEnvelope(-2, "X", "\u9519", msgid, "R" * 30, 2**40, out, ("W",))
        assert protocol.encode_response_envelope(env) == encoded
