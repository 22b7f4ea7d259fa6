"""The C decoder of plain documents (protocol/_msgpack_c.c): it returns exactly what the Python
path decodes, and only for documents in which the Python path finds no fault; anything else it
declines (None) and the Python path answers as it always has. The decoders' own tests (envelope,
frames, fuzz ...) run with it and without it (conftest)."""

from __future__ import annotations

import shutil
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import protocol._msgpack as msgpack_module
from protocol import limits
from protocol.errors import ErrCode, ProtocolError

unpack_in_c = msgpack_module._unpack_plain_in_c
needs_c = pytest.mark.skipif(unpack_in_c is None, reason="the C decoder is not built here (no C compiler at install)")
LEN_MAX, DEPTH_MAX = limits.MSGPACK_LEN_MAX, limits.NESTING_DEPTH_MAX


def c_value(data: bytes) -> Any:
    return unpack_in_c(data, LEN_MAX, DEPTH_MAX)


def python_value(data: bytes) -> tuple[Any, str | None]:
    """What the Python path makes of `data`: (value, its first fault), or (None, the refusal)."""
    try:
        value = msgpack_module.unpack(data, ErrCode.MALFORMED_ENVELOPE, "doc")
    except ProtocolError as exc:
        return None, exc.msg
    return value, msgpack_module.first_fault(value)


def same_tree(left: Any, right: Any) -> bool:
    """Equal, with the same types all the way down and the same key order in every map."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return list(left) == list(right) and all(same_tree(left[key], right[key]) for key in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(same_tree(a, b) for a, b in zip(left, right))
    return left == right or (left != left and right != right)   # NaN is itself


def test_the_c_decoder_is_built_wherever_a_c_compiler_is() -> None:
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler on this machine: the pure-Python path is the one that runs")
    assert unpack_in_c is not None, "a C compiler is present but protocol/_msgpack_c.c was not built"


PLAIN = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(limits.INT64_MIN, limits.INT64_MAX), st.floats(),
              st.text(max_size=40), st.binary(max_size=40)),
    lambda inner: st.one_of(st.lists(inner, max_size=20), st.dictionaries(st.text(max_size=6), inner, max_size=20)),
    max_leaves=60)


@needs_c
@settings(max_examples=300, derandomize=True, deadline=None)
@given(PLAIN, st.booleans())
def test_a_plain_document_decodes_to_the_python_paths_value(tree: Any, single_floats: bool) -> None:
    try:
        data = msgpack.packb(tree, use_bin_type=True, use_single_float=single_floats)
    except OverflowError:
        assume(False)   # a float beyond float32's range packed as float32
    python, fault = python_value(data)
    assert fault is None
    decoded = c_value(data)
    if tree is None:
        assert decoded is None   # nil itself is declined: None means "take the Python path"
    else:
        assert same_tree(decoded, python)


@needs_c
@settings(max_examples=1500, derandomize=True, deadline=None)
@given(st.one_of(
    st.binary(max_size=64),
    # Plain documents with a few bytes changed, cut short or extended: near misses of every kind.
    st.tuples(PLAIN.map(lambda tree: msgpack.packb(tree, use_bin_type=True)),
              st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=3),
              st.integers(-3, 3)).map(lambda args: _mutated(*args)),
))
def test_the_c_decoder_never_accepts_what_the_python_path_refuses_or_faults(data: bytes) -> None:
    decoded = c_value(data)
    if decoded is None:
        return
    python, fault = python_value(data)
    assert fault is None, fault
    assert same_tree(decoded, python)


def _mutated(data: bytes, changes: list[tuple[int, int]], cut: int) -> bytes:
    out = bytearray(data)
    for index, byte in changes:
        if out:
            out[index % len(out)] = byte
    return bytes(out[:len(out) + cut]) if cut < 0 else bytes(out) + b"\x00" * cut


def _deep(depth: int, container: bytes = b"\x91") -> bytes:
    """`depth` nested one-element arrays (or, with b"\x81\xa1k", one-key maps) around a 0."""
    return container * depth + b"\x00"


@needs_c
@pytest.mark.parametrize("data", [
    b"\x82\xa1a\x01\xa1a\x02",                                # a key named twice
    b"\x81\x01\x02",                                          # an int key
    b"\x81\xc4\x01a\x02",                                     # a bin key
    b"\xcf" + struct.pack(">Q", 2**63),                       # beyond int64
    b"\xd4\x01\x00", b"\xc7\x01\x05x", b"\xd6\xff\x00\x00\x00\x00",   # ext, timestamp
    b"\xc1",                                                  # never used
    b"\xa2\xff\xfe",                                          # not UTF-8
    b"\xa3\xed\xa0\x80",                                      # a UTF-8 encoded surrogate
    b"\x01\x02",                                              # trailing bytes
    b"\x92\x01",                                              # cut short
    b"\xdd\xff\xff\xff\xff",                                  # an array longer than the body
    b"\xdb" + struct.pack(">I", LEN_MAX + 1) + b"x" * (LEN_MAX + 1),   # a str over the limit
    _deep(DEPTH_MAX + 5),                                     # nested too deeply
    b"\xc0",                                                  # nil itself
    b"",
], ids=repr)
def test_what_is_not_plain_is_declined(data: bytes) -> None:
    assert c_value(data) is None


@needs_c
@pytest.mark.parametrize("container", [b"\x91", b"\x81\xa1k"], ids=["arrays", "maps"])
def test_the_deepest_plain_nesting_decodes_and_one_more_is_declined(container: bytes) -> None:
    # DEPTH_MAX containers: the innermost holds a scalar at depth DEPTH_MAX, still plain.
    deepest, deeper = _deep(DEPTH_MAX, container), _deep(DEPTH_MAX + 1, container)
    assert python_value(deepest)[1] is None
    assert same_tree(c_value(deepest), python_value(deepest)[0])
    assert python_value(deeper)[1] == msgpack_module.TOO_DEEP
    assert c_value(deeper) is None


@needs_c
def test_only_bytes_are_read_in_c() -> None:
    assert c_value(bytearray(b"\x91\x01")) is None   # the Python path takes any buffer
    assert c_value(b"\x91\x01") == [1]


@needs_c
@pytest.mark.parametrize("value", [0, 127, -1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1,
                                   limits.INT64_MIN, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32,
                                   limits.INT64_MAX])
def test_every_int_width_decodes(value: int) -> None:
    assert c_value(msgpack.packb([value])) == [value]
