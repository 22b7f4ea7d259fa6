"""Canonical msgpack (SPEC section 2) and the idempotency fingerprint (SPEC section 6)."""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack

# _pack_in_c: the same bytes from C for trees of exact plain types; None where no C module was built.
from protocol._msgpack import RepeatedKeys
from protocol._msgpack import pack_canonical_in_c as _pack_in_c

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
        children: Any = obj.values()
    # Exact types: msgpack.ExtType is a tuple subclass and must stay an ext, not become an array.
    elif kind is list or kind is tuple:
        keys, children = None, obj
    elif kind in _SCALAR_TYPES:
        return obj
    else:
        return _ordered_unusual(obj)
    # Rebuilt children are noted by identity, which costs less than counting positions: the children
    # stay alive in `obj` meanwhile, so no two share an id, and a child held twice is one child.
    rebuilt = None
    if not _SCALAR_TYPES.issuperset(map(type, children)):
        for value in children:
            if type(value) not in _SCALAR_TYPES and (ordered := _ordered(value)) is not value:
                rebuilt = rebuilt or {}
                rebuilt[id(value)] = ordered
    if keys is None:
        return obj if rebuilt is None else [rebuilt.get(id(value), value) for value in obj]
    # Python orders str by code point and UTF-8 preserves code-point order, so plain sorted()
    # gives the UTF-8 byte order without encoding every key.
    ordered_keys = sorted(keys)
    if rebuilt is None and keys == ordered_keys:
        return obj
    rebuilt = rebuilt or {}
    return {key: rebuilt.get(id(obj[key]), obj[key]) for key in ordered_keys}


def _ordered_unusual(obj: Any) -> Any:
    """`_ordered` of what decoding and answers rarely hold: repeated keys, subclasses, other types."""
    if type(obj) is RepeatedKeys:
        pairs = sorted(obj.pairs, key=lambda kv: kv[0].encode("utf-8"))  # stable: repeats stay in wire order
        return msgpack.ExtType(_REPEATED_KEYS_EXT, canonical_packb([list(pair) for pair in pairs]))
    if isinstance(obj, dict):
        return _ordered_general(obj)
    return _ordered(list(obj)) if isinstance(obj, list) else obj


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
    if _pack_in_c is not None and (packed := _pack_in_c(obj)) is not None:
        return packed
    return msgpack.packb(_ordered(obj), use_bin_type=True)


def fingerprint(infno: str, input: Any) -> bytes:  # noqa: A002 - the SPEC's field name
    """Return `sha256(canonical_packb([infno, input])).digest()`: 32 raw bytes (SPEC section 6)."""
    return hashlib.sha256(canonical_packb([infno, input])).digest()
