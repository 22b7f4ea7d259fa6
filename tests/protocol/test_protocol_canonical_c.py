"""The C encoder of canonical msgpack (pack_canonical in protocol/_msgpack_c.c): msgpack-python's bytes at every
length and width boundary, a decline (None) for anything it does not know, and built wherever the
install had a C compiler. Its agreement with the SPEC on arbitrary trees is in
test_protocol_canonical.py, which runs every test with it and without it.
"""

from __future__ import annotations

import enum
import shutil
import sys
from collections import OrderedDict
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import protocol.canonical as canonical_module
from protocol._msgpack import RepeatedKeys

pack_in_c = canonical_module._pack_in_c
needs_c = pytest.mark.skipif(pack_in_c is None, reason="the C encoder is not built here (no C compiler at install)")

INTS_AT_WIDTH_EDGES = [-(2**63), -(2**31) - 1, -(2**31), -32769, -32768, -129, -128, -33, -32, -1, 0, 1, 127, 128,
                       255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1]
LENGTHS_AT_EDGES = [0, 1, 15, 16, 31, 32, 33, 255, 256, 65535, 65536]


def _msgpack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


class _Code(enum.IntEnum):
    TWO = 2


class _Word(str, enum.Enum):
    A = "a"


def test_the_c_encoder_is_built_wherever_a_c_compiler_is() -> None:
    # An install that silently fell back would pass every other test here and lose the speed.
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler on this machine: the pure-Python path is the one that runs")
    assert pack_in_c is not None, "a C compiler is present but protocol/_msgpack_c.c was not built"


@needs_c
@pytest.mark.parametrize("value", INTS_AT_WIDTH_EDGES)
def test_every_int_takes_msgpacks_shortest_form(value: int) -> None:
    assert pack_in_c(value) == _msgpack(value)
    assert pack_in_c([value, -value if -value >= -(2**63) else 0]) == _msgpack([value, -value if -value >= -(2**63)
                                                                                 else 0])


@needs_c
@pytest.mark.parametrize("length", LENGTHS_AT_EDGES)
def test_every_length_takes_msgpacks_shortest_header(length: int) -> None:
    for value in ("a" * length, "\u00e9" * length, b"\x00" * length, [None] * length, tuple([True] * length),
                  {f"k{index:06d}": index for index in range(length)}):
        assert pack_in_c(value) == _msgpack(value), (type(value), length)


@needs_c
def test_scalars_encode_as_msgpack_does() -> None:
    for value in (None, True, False, 0.0, -0.0, 1.5, float("inf"), float("-inf"), 1e308, "", "\U0010ffff",
                  "\u9519\u8bef", b"", b"\xff"):
        assert pack_in_c(value) == _msgpack(value), value
    assert pack_in_c(float("nan"))[:1] == b"\xcb"


@needs_c
def test_map_keys_come_out_in_utf8_byte_order_however_they_went_in() -> None:
    keys = ["\U00010000", "\uffff", "\ue000", "\u00e9", "z", "ab", "a", "B", "", "a\x00"]
    ordered = {key: index for index, key in enumerate(sorted(keys, key=lambda key: key.encode("utf-8")))}
    assert pack_in_c(dict(reversed(list(ordered.items())))) == _msgpack(ordered)
    # More keys than the stack holds (32): the heap array, same order.
    many = {f"{index:03d}": index for index in range(100)}
    assert pack_in_c(dict(reversed(list(many.items())))) == _msgpack(many)


@needs_c
@pytest.mark.parametrize("value", [
    _Code.TWO, _Word.A, OrderedDict(a=1), RepeatedKeys([("a", 1), ("a", 2)]), bytearray(b"x"), memoryview(b"x"),
    2**64, -(2**63) - 1, "\ud800", msgpack.ExtType(1, b"x"), {1: "int key"}, {_Word.A: 1}, object(), 1 + 2j,
    {"nested": [{"deep": [_Code.TWO]}]},
], ids=lambda value: type(value).__name__)
def test_anything_but_the_exact_plain_types_is_declined(value: Any) -> None:
    # Declined, never packed differently nor raised: canonical_packb then takes the Python path.
    assert pack_in_c(value) is None


@needs_c
def test_a_tree_deeper_than_64_is_declined_and_one_within_is_packed() -> None:
    def nested(depth: int) -> Any:
        value: Any = 0
        for _ in range(depth):
            value = [value]
        return value
    assert pack_in_c(nested(64)) == _msgpack(nested(64))
    assert pack_in_c(nested(65)) is None
    assert pack_in_c(nested(sys.getrecursionlimit() * 2)) is None


PLAIN = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False),
              st.text(max_size=40), st.binary(max_size=40)),
    lambda inner: st.one_of(st.lists(inner, max_size=20), st.tuples(inner, inner),
                            st.dictionaries(st.text(max_size=6), inner, max_size=20)),
    max_leaves=60)


@needs_c
@settings(max_examples=500, derandomize=True, deadline=None)
@given(PLAIN)
def test_the_c_path_gives_the_python_paths_bytes_for_every_plain_tree(tree: Any) -> None:
    assert pack_in_c(tree) == _msgpack(canonical_module._ordered(tree))
