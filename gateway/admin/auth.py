"""Bearer-token authentication of admins (SPEC section 11): sha256 of the token, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
from typing import Iterable, Mapping, Protocol

__all__ = ["AdminToken", "authenticate"]


class AdminToken(Protocol):
    """An admin of secrets.toml (gateway.core.registry.Admin has these fields)."""

    name: str
    role: str
    token_sha256: str



def authenticate(headers: Mapping[str, str], admins: Iterable[AdminToken]) -> AdminToken | None:
    """Return the admin whose token_sha256 matches the bearer token, or None (constant-time compare)."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    digest = hashlib.sha256(token.strip().encode()).hexdigest()
    found = None
    for admin in admins:
        if hmac.compare_digest(digest, admin.token_sha256):
            found = admin
    return found
