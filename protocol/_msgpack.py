"""Strict, bounded msgpack decoding shared by every decoder in this package.

Any bytes go in; a value comes out or `ProtocolError(code)` is raised, never anything else. What
makes a decoded value plain (SPEC section 2) is judged by one walk, `first_fault`.

A map that names a key twice is malformed (SPEC section 2), but where it lies decides the answer
(the envelope's or the input's, answered later), so decoding keeps it, as a `RepeatedKeys` map,
for the walk to name.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgpack

from protocol import limits
from protocol.errors import ErrCode, ProtocolError

try:
    # The C fast paths (protocol/_msgpack_c.c): one plain document decoded here (unpack_plain), and
    # canonical packing (protocol/canonical.py); each declines (None) anything else. Absent where
    # the install found no C compiler: then every document takes the Python paths.
    from protocol._msgpack_c import pack_canonical as pack_canonical_in_c
    from protocol._msgpack_c import unpack_plain as _unpack_plain_in_c
except ImportError:  # pragma: no cover - exercised by tests that hide it
    pack_canonical_in_c = _unpack_plain_in_c = None

# Everything msgpack-python raises on hostile input; StackError, ExtraData, FormatError and
# BufferFull are ValueError subclasses, RecursionError and MemoryError are listed for safety.
_DECODE_ERRORS = (ValueError, TypeError, OverflowError, RecursionError, MemoryError, UnicodeDecodeError)

# The scalar types msgpack-python produces that are plain whatever their value.
_PLAIN_LEAF_TYPES = frozenset({type(None), bool, str, bytes, float})
_INT64_MIN, _INT64_MAX = limits.INT64_MIN, limits.INT64_MAX

TOO_DEEP = "nested too deeply"
KEY_NOT_STR = "map key is not a string"
INT_OUTSIDE_INT64 = "integer outside int64"


class RepeatedKeys(dict[Any, Any]):
    """A decoded map that named some key more than once: malformed wherever it lies.

    As a dict it holds what msgpack-python would have made of it (each key once, the last value),
    so that decoders read on to the step that refuses it. `pairs` are the pairs as sent;
    `repeated` is the first key sent a second time.
    """

    __slots__ = ("pairs", "repeated")

    def __init__(self, pairs: list[tuple[Any, Any]]) -> None:
        super().__init__(pairs)
        self.pairs = tuple(pairs)
        seen = set()
        for key, _ in pairs:
            if key in seen:
                self.repeated = key
                break
            seen.add(key)


def _map_of(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    # The unpacker hands over each map's pairs; a dict of them with fewer keys had a repeat.
    value = dict(pairs)
    return value if len(value) == len(pairs) else RepeatedKeys(pairs)


def repeated_key_fault(value: RepeatedKeys) -> str:
    """The fault of a map with a repeated key, naming the key (cut short: it is the sender's text)."""
    key = value.repeated
    if len(key) > limits.ID_CHARS_MAX:
        return f"repeated key {key[:limits.ID_CHARS_MAX]!r}..."
    return f"repeated key {key!r}"


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"ext type {code} is not part of the contract")


def unpack(data: Any, code: ErrCode, what: str) -> Any:
    """Decode one msgpack value from `data`, refusing trailing bytes, ext types and non-str/bin keys.

    The value is not yet judged plain: the caller asks `first_fault` (`unpack_strict` does). A
    map that repeats a key comes back as a `RepeatedKeys` map.

    Args:
        data: the bytes to decode (anything else is refused with `code`).
        code: the ErrCode to raise on any failure.
        what: names the thing being decoded in the error message.
    Raises:
        ProtocolError(code): not bytes, undecodable, trailing bytes, an ext or timestamp.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError(code, f"{what}: not bytes")
    try:
        return msgpack.unpackb(
            bytes(data),
            raw=False,
            strict_map_key=True,
            object_pairs_hook=_map_of,
            use_list=True,
            ext_hook=_no_ext,
            max_str_len=limits.MSGPACK_LEN_MAX,
            max_bin_len=limits.MSGPACK_LEN_MAX,
            max_array_len=limits.MSGPACK_LEN_MAX,
            max_map_len=limits.MSGPACK_LEN_MAX,
            max_ext_len=0,
        )
    except _DECODE_ERRORS as exc:
        raise ProtocolError(code, f"{what}: not decodable msgpack ({type(exc).__name__})") from None


def unpack_plain(data: Any) -> Any:
    """The value of `data` when it is one plain document (one `unpack` would decode and
    `first_fault` find nothing in), decoded in C; None when it may not be, or is nil itself.

    A shortcut only: on None, `unpack` and `first_fault` decide, and answer every fault as before.
    """
    if _unpack_plain_in_c is None:
        return None
    return _unpack_plain_in_c(data, limits.MSGPACK_LEN_MAX, limits.NESTING_DEPTH_MAX)


def unpack_strict(data: Any, code: ErrCode, what: str) -> Any:
    """`unpack`, then refuse a value that is not plain (any fault `first_fault` names).

    Returns:
        A tree of None, bool, int (int64), float, str, bytes, list and dicts with str keys, each once.
    Raises:
        ProtocolError(code): as `unpack`, or the value's first fault.
    """
    value = unpack_plain(data)
    if value is not None:
        return value
    value = unpack(data, code, what)
    fault = first_fault(value)
    if fault is not None:
        raise ProtocolError(code, f"{what}: {fault}")
    return value


def first_fault(value: Any, depth: int = 0, value_faults: bool = True) -> str | None:
    """Why `value` is not a plain contract value: its first fault in iteration order, or None.

    Faults of shape are nesting deeper than NESTING_DEPTH_MAX, a map key that is not a str and a
    type msgpack does not produce; faults of value are integers outside int64 and maps with a
    repeated key (the map's own fault comes before its children's). The envelope answers the
    shape of `input` but leaves its values to input validation (SPEC section 5), hence the flag.

    Args:
        value: a decoded tree, or any Python value (parse_input also takes maps built by callers).
        depth: the nesting depth of `value` itself (0 for a whole document).
        value_faults: False reports faults of shape only.
    Returns:
        None for a plain tree, else the reason for its first fault.
    """
    if depth > limits.NESTING_DEPTH_MAX:
        return TOO_DEEP
    kind = type(value)
    if kind is dict:
        for key in value:
            if type(key) is not str:
                return _key_fault(value, depth, value_faults)
        children: Iterable[Any] = value.values()
    elif kind is list:
        children = value
    elif kind is int:
        return _int_fault(value) if value_faults else None
    elif kind in _PLAIN_LEAF_TYPES:
        return None
    else:
        return _unusual_fault(value, depth, value_faults)
    if depth >= limits.NESTING_DEPTH_MAX:
        return TOO_DEEP if value else None  # its first child would be nested too deeply
    # A scalar child is judged here, in line (its exact type is all it takes), rather than by a call
    # per child: a bill of a few hundred values then costs one call per map or array.
    for item in children:
        kind = type(item)
        if kind in _PLAIN_LEAF_TYPES:
            continue
        if kind is int:
            if value_faults and not _INT64_MIN <= item <= _INT64_MAX:
                return INT_OUTSIDE_INT64
            continue
        fault = first_fault(item, depth + 1, value_faults)
        if fault is not None:
            return fault
    return None


def _int_fault(value: int) -> str | None:
    return None if _INT64_MIN <= value <= _INT64_MAX else INT_OUTSIDE_INT64


def _key_fault(mapping: dict[Any, Any], depth: int, value_faults: bool) -> str | None:
    """`first_fault` of a map with a key that is not exactly a str: values before a bad key come first."""
    for index, key in enumerate(mapping):
        if not isinstance(key, str):
            return first_fault(list(mapping.values())[:index], depth, value_faults) or KEY_NOT_STR
    return first_fault(list(mapping.values()), depth, value_faults)


def _unusual_fault(value: Any, depth: int, value_faults: bool) -> str | None:
    """`first_fault` of what decoding rarely produces: repeated keys, subclasses, other types."""
    if isinstance(value, RepeatedKeys):
        return repeated_key_fault(value) if value_faults else first_fault(dict(value), depth, value_faults)
    if isinstance(value, (bool, str, bytes, float)):
        return None
    if isinstance(value, int):
        return _int_fault(value) if value_faults else None
    if isinstance(value, list):
        return first_fault(list(value), depth, value_faults)
    if isinstance(value, dict):
        return first_fault(dict(value), depth, value_faults)
    return f"{type(value).__name__} is not part of the contract"
