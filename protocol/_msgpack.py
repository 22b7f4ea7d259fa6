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
    reason = plain_violation(value, 0, int64_only)
    if reason is not None:
        raise ProtocolError(code, f"{what}: {reason}")
    return value


def plain_violation(value: Any, depth: int, int64_only: bool = True) -> str | None:
    """Return why `value` is not a plain contract value, or None when it is.

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
            reason = plain_violation(item, depth + 1, int64_only)
            if reason is not None:
                return reason
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return "map key is not a string"
            reason = plain_violation(item, depth + 1, int64_only)
            if reason is not None:
                return reason
        return None
    return f"{type(value).__name__} is not part of the contract"
