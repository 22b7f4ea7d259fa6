"""Strict, bounded msgpack decoding shared by every decoder in this package.

Any bytes go in; a plain value comes out or `ProtocolError(code)` is raised, never anything else.
"""

from __future__ import annotations

from typing import Any

import msgpack

from protocol import limits
from protocol.errors import ErrCode, ProtocolError

# Everything msgpack-python raises on hostile input; StackError, ExtraData, FormatError and
# BufferFull are ValueError subclasses, RecursionError and MemoryError are listed for safety.
_DECODE_ERRORS = (ValueError, TypeError, OverflowError, RecursionError, MemoryError, UnicodeDecodeError)


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"ext type {code} is not part of the contract")


def unpack_strict(data: Any, code: ErrCode, what: str, int64_only: bool = True) -> Any:
    """Decode one msgpack value from `data`, refusing trailing bytes, ext types and non-str keys.

    Args:
        data: the bytes to decode (anything else is refused with `code`).
        code: the ErrCode to raise on any failure.
        what: names the thing being decoded in the error message.
        int64_only: refuse integers outside int64 anywhere (False leaves that to the caller,
            which the request envelope needs: such an integer in `input` is MALFORMED_INPUT).
    Returns:
        A tree of None, bool, int (int64), float, str, bytes, list and dicts with str keys.
    Raises:
        ProtocolError(code): undecodable, trailing bytes, ext/timestamp, int outside int64,
            a map key that is not a str, or nesting deeper than NESTING_DEPTH_MAX.
    """
    value = unpack_unchecked(data, code, what)
    reason = plain_violation(value, 0, int64_only)
    if reason is not None:
        raise ProtocolError(code, f"{what}: {reason}")
    return value


def unpack_unchecked(data: Any, code: ErrCode, what: str) -> Any:
    """`unpack_strict` without the plainness walk: the caller owes `plain_violation` (or `is_plain`).

    For decoders that can prove plainness more cheaply on the shapes they expect, and fall back to
    `plain_violation` (same reasons, same order) otherwise.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError(code, f"{what}: not bytes")
    try:
        value = msgpack.unpackb(
            bytes(data),
            raw=False,
            strict_map_key=True,
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
    return value


def plain_violation(value: Any, depth: int, int64_only: bool = True) -> str | None:
    """Return why `value` is not a plain contract value, or None when it is.

    Args:
        value: the tree to check.
        depth: the nesting depth of `value` itself (0 for a whole decoded document).
        int64_only: also refuse integers outside int64.
    Returns:
        None for a plain tree, else the reason for the first violation in iteration order.
    """
    # Almost every tree is plain, so a cheap yes/no pass answers first; only a refused tree pays
    # for the ordered walk that names its first violation (the reason ends up in err_msg).
    if _is_plain(value, depth, int64_only):
        return None
    return _first_violation(value, depth, int64_only)


# The scalar types msgpack-python produces that are plain whatever their value.
_PLAIN_LEAF_TYPES = frozenset({type(None), bool, str, bytes, float})


def is_plain(value: Any, depth: int = 0) -> bool:
    """A fast yes for plain trees with int64 integers: True means `plain_violation(value, depth)` is None.

    False proves nothing (ask `plain_violation` for the reason, if any).
    """
    return _is_plain(value, depth, True)


def _is_plain(value: Any, depth: int, int64_only: bool) -> bool:
    """True only when `_first_violation` would answer None; may answer False for a plain tree.

    It compares exact types (what msgpack produces) and inlines the scalar checks of a
    container's children, so a bill of a few hundred values costs one call per map or array
    instead of one per value. A subclass of a builtin answers False: the ordered walk decides.
    """
    if depth > limits.NESTING_DEPTH_MAX:
        return False
    kind = type(value)
    if kind is dict:
        for key in value:
            if type(key) is not str:
                return False
        children: Any = value.values()
    elif kind is list:
        children = value
    elif kind is int:
        return not int64_only or limits.INT64_MIN <= value <= limits.INT64_MAX
    else:
        return kind in _PLAIN_LEAF_TYPES
    if not children:
        return True
    if depth >= limits.NESTING_DEPTH_MAX:
        return False  # its children would be nested too deeply
    child_depth = depth + 1
    for item in children:
        kind = type(item)
        if kind in _PLAIN_LEAF_TYPES:
            continue
        if kind is int:
            if int64_only and not limits.INT64_MIN <= item <= limits.INT64_MAX:
                return False
            continue
        if not _is_plain(item, child_depth, int64_only):
            return False
    return True


def _first_violation(value: Any, depth: int, int64_only: bool) -> str | None:
    """The reason for the first violation in iteration order, or None (the reference walk).

    Iterative over siblings, recursive over depth, which NESTING_DEPTH_MAX bounds.
    """
    if depth > limits.NESTING_DEPTH_MAX:
        return "nested too deeply"
    if value is None or isinstance(value, (bool, str, bytes, float)):
        return None
    if isinstance(value, int):
        if int64_only and not limits.INT64_MIN <= value <= limits.INT64_MAX:
            return "integer outside int64"
        return None
    if isinstance(value, list):
        for item in value:
            reason = _first_violation(item, depth + 1, int64_only)
            if reason is not None:
                return reason
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return "map key is not a string"
            reason = _first_violation(item, depth + 1, int64_only)
            if reason is not None:
                return reason
        return None
    return f"{type(value).__name__} is not part of the contract"
