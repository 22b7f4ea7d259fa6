"""Canonical msgpack (SPEC section 2) and the idempotency fingerprint (SPEC section 6)."""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack

from protocol._msgpack import RepeatedKeys


# A map that repeats a key is refused at input validation, which SPEC section 5 puts after the
# idempotency step; until then it is fingerprinted. It must never fingerprint as a well-formed map
# (a retry repeating a key would be answered with the recorded answer), so it stands as an ext
# value, which no decoded request can hold, over the canonical encoding of its pairs as sent.
_REPEATED_KEYS_EXT = 1
# Scalars msgpack encodes as they are: no copy, no recursion.
_SCALAR_TYPES = frozenset({type(None), bool, int, float, str, bytes})
_STR_ONLY = {str}


def _ordered(obj: Any) -> Any:
    """`obj` with every map's keys in UTF-8 byte order: `obj` itself when it already is, else a copy.

    Decoded requests from canonical encoders and answers built in key order come back as they are,
    without a copy; only a map out of order, and the containers holding it, are rebuilt.
    """
    kind = type(obj)
    if kind is dict:
        keys = list(obj)
        if keys and set(map(type, keys)) != _STR_ONLY:
            return _ordered_general(obj)
        # Python orders str by code point and UTF-8 preserves code-point order, so plain sorted()
        # gives the UTF-8 byte order without encoding every key.
        ordered_keys = sorted(keys)
        changed = None
        if not _SCALAR_TYPES.issuperset(map(type, obj.values())):
            for key, value in obj.items():
                if type(value) not in _SCALAR_TYPES and (ordered := _ordered(value)) is not value:
                    changed = changed or {}
                    changed[key] = ordered
        if changed is None and keys == ordered_keys:
            return obj
        changed = changed or {}
        return {key: changed[key] if key in changed else obj[key] for key in ordered_keys}
    # Exact types: msgpack.ExtType is a tuple subclass and must stay an ext, not become an array.
    if kind is list or kind is tuple:
        return _ordered_items(obj)
    if kind in _SCALAR_TYPES:
        return obj
    if kind is RepeatedKeys:
        pairs = sorted(obj.pairs, key=lambda kv: kv[0].encode("utf-8"))  # stable: repeats stay in wire order
        return msgpack.ExtType(_REPEATED_KEYS_EXT, canonical_packb([list(pair) for pair in pairs]))
    if isinstance(obj, dict):
        return _ordered_general(obj)
    return _ordered_items(list(obj)) if isinstance(obj, list) else obj


def _ordered_items(obj: list[Any] | tuple[Any, ...]) -> list[Any] | tuple[Any, ...]:
    if _SCALAR_TYPES.issuperset(map(type, obj)):
        return obj
    rebuilt: list[Any] | None = None
    for index, value in enumerate(obj):
        if type(value) not in _SCALAR_TYPES and (ordered := _ordered(value)) is not value:
            rebuilt = list(obj) if rebuilt is None else rebuilt
            rebuilt[index] = ordered
    return obj if rebuilt is None else rebuilt


def _ordered_general(obj: dict[Any, Any]) -> dict[Any, Any]:
    """An unusual map (a dict subclass, a key not exactly a str), always rebuilt.

    A key that is not a str at all raises AttributeError: a caller bug, decoded requests never
    hold one.
    """
    ordered = sorted(obj.items(), key=lambda kv: kv[0].encode("utf-8"))
    return {key: _ordered(value) for key, value in ordered}


def canonical_packb(obj: Any) -> bytes:
    """Encode `obj` as canonical msgpack.

    Every map's keys are sorted by their UTF-8 bytes, recursively; tuples encode as arrays;
    msgpack-python's default (shortest) encodings with `use_bin_type=True`.

    Args:
        obj: a tree of None, bool, int, float, str, bytes, list/tuple and dicts with str keys.
    Returns:
        The canonical bytes.
    Raises:
        AttributeError: a map key is not a str; TypeError: a value msgpack cannot encode (both
            caller bugs: decoded requests never hold either).
    """
    return msgpack.packb(_ordered(obj), use_bin_type=True)


def fingerprint(infno: str, input: Any) -> bytes:  # noqa: A002 - the SPEC's field name
    """Return `sha256(canonical_packb([infno, input])).digest()`: 32 raw bytes (SPEC section 6)."""
    return hashlib.sha256(canonical_packb([infno, input])).digest()
