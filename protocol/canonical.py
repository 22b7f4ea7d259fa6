"""Canonical msgpack (SPEC section 2) and the idempotency fingerprint (SPEC section 6)."""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack


def _sorted_tree(obj: Any) -> Any:
    """Return `obj` with every map rebuilt in key order (UTF-8 bytes), recursively."""
    if isinstance(obj, dict):
        ordered = sorted(obj.items(), key=lambda kv: kv[0].encode("utf-8"))
        return {key: _sorted_tree(value) for key, value in ordered}
    # Exact types: msgpack.ExtType is a tuple subclass and must stay an ext, not become an array.
    if type(obj) in (list, tuple):
        return [_sorted_tree(value) for value in obj]
    return obj


def canonical_packb(obj: Any) -> bytes:
    """Encode `obj` as canonical msgpack.

    Every map's keys are sorted by their UTF-8 bytes, recursively; tuples encode as arrays;
    msgpack-python's default (shortest) encodings with `use_bin_type=True`.

    Args:
        obj: a tree of None, bool, int, float, str, bytes, list/tuple and dicts with str keys.
    Returns:
        The canonical bytes.
    Raises:
        TypeError: a map key is not a str, or a value msgpack cannot encode (a caller bug).
    """
    return msgpack.packb(_sorted_tree(obj), use_bin_type=True)


def fingerprint(infno: str, input: Any) -> bytes:  # noqa: A002 - the SPEC's field name
    """Return `sha256(canonical_packb([infno, input])).digest()`: 32 raw bytes (SPEC section 6)."""
    return hashlib.sha256(canonical_packb([infno, input])).digest()
