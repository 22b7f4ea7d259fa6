"""Canonical msgpack (SPEC section 2) and the idempotency fingerprint (SPEC section 6)."""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack


# Scalars msgpack encodes as they are: no copy, no recursion.
_SCALAR_TYPES = frozenset({type(None), bool, int, float, str, bytes})
_STR_ONLY = {str}


def _sorted_tree(obj: Any) -> Any:
    """Return `obj` with every map rebuilt in key order (UTF-8 bytes), recursively."""
    kind = type(obj)
    if kind is dict:
        for key in obj:
            if type(key) is not str:
                return _sorted_tree_general(obj)
        # Python orders str by code point and UTF-8 preserves code-point order, so plain
        # sorted() gives the UTF-8 byte order without encoding every key. (A lone surrogate
        # cannot be encoded at all; msgpack then raises the same UnicodeEncodeError.)
        ordered = {}
        for key in sorted(obj):
            value = obj[key]
            ordered[key] = value if type(value) in _SCALAR_TYPES else _sorted_tree(value)
        return ordered
    # Exact types: msgpack.ExtType is a tuple subclass and must stay an ext, not become an array.
    if kind is list or kind is tuple:
        return [value if type(value) in _SCALAR_TYPES else _sorted_tree(value) for value in obj]
    if isinstance(obj, dict):
        return _sorted_tree_general(obj)
    return obj


def _sorted_tree_general(obj: dict[Any, Any]) -> dict[Any, Any]:
    """The reference form for unusual maps (a dict subclass, a non-str key): same result, same errors."""
    ordered = sorted(obj.items(), key=lambda kv: kv[0].encode("utf-8"))
    return {key: _sorted_tree(value) for key, value in ordered}


def _in_canonical_order(obj: Any) -> bool:
    """True when msgpack already encodes `obj` canonically: every map's str keys in ascending order.

    Decoded requests from canonical encoders and answers built in key order pass, and are then
    packed as they are instead of being copied map by map. False sends `obj` down the rebuilding
    path, which is the reference (it also answers anything unusual: subclasses, non-str keys).
    Each map or array is judged by C-level set, sort and compare calls; only containers recurse.
    """
    kind = type(obj)
    if kind is dict:
        keys = list(obj)
        # Keys of exactly str compare by code point, which is UTF-8 byte order; no duplicates.
        if (keys and set(map(type, keys)) != _STR_ONLY) or keys != sorted(keys):
            return False
        children: Any = obj.values()
    elif kind is list or kind is tuple:
        children = obj
    else:
        return kind in _SCALAR_TYPES
    if _SCALAR_TYPES.issuperset(map(type, children)):
        return True
    for value in children:
        if type(value) not in _SCALAR_TYPES and not _in_canonical_order(value):
            return False
    return True


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
    if _in_canonical_order(obj):
        return msgpack.packb(obj, use_bin_type=True)
    return msgpack.packb(_sorted_tree(obj), use_bin_type=True)


def fingerprint(infno: str, input: Any) -> bytes:  # noqa: A002 - the SPEC's field name
    """Return `sha256(canonical_packb([infno, input])).digest()`: 32 raw bytes (SPEC section 6)."""
    return hashlib.sha256(canonical_packb([infno, input])).digest()
