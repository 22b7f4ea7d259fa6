"""Session key agreement of sign-in (SPEC section 4): X25519, then HKDF-SHA256."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from protocol import limits
from protocol.errors import ErrCode, ProtocolError

SESSION_INFO = b"yb/session/v1"


def x25519_public_raw(private_key: X25519PrivateKey) -> bytes:
    """Return the raw 32-byte public key of an X25519 private key (what goes in x25519_pub)."""
    return private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def session_key(own_x25519_private: X25519PrivateKey, peer_public_raw: bytes, sign_no: str) -> bytes:
    """Derive the 32-byte session key both sides of a sign-in share.

    `HKDF-SHA256(ikm = X25519(own, peer), salt = sign_no UTF-8, info = b"yb/session/v1", 32)`.

    Args:
        own_x25519_private: this side's ephemeral X25519 private key.
        peer_public_raw: the other side's raw 32-byte X25519 public key.
        sign_no: the session's sign_no, chosen by the gateway.
    Returns:
        The 32-byte session key.
    Raises:
        ProtocolError(MALFORMED_INPUT): the peer key is not 32 bytes or is a low-order point
            (the shared secret would be all zeros).
    """
    if not isinstance(peer_public_raw, bytes) or len(peer_public_raw) != limits.X25519_PUB_BYTES:
        raise ProtocolError(ErrCode.MALFORMED_INPUT, "input.x25519_pub: not bin(32)")
    try:
        shared = own_x25519_private.exchange(X25519PublicKey.from_public_bytes(peer_public_raw))
    except ValueError:
        raise ProtocolError(ErrCode.MALFORMED_INPUT, "input.x25519_pub: not a usable X25519 key") from None
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=limits.SESSION_KEY_BYTES,
        salt=sign_no.encode("utf-8"),
        info=SESSION_INFO,
    )
    return hkdf.derive(shared)


# A fixed private scalar used only to probe whether a peer key is a low-order point: for those,
# X25519 yields the all-zero secret whatever the private key, and cryptography refuses it.
_PROBE_KEY = X25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


def x25519_public_usable(public_raw: bytes) -> bool:
    """Return True when `public_raw` is 32 bytes and gives a non-zero shared secret."""
    if not isinstance(public_raw, bytes) or len(public_raw) != limits.X25519_PUB_BYTES:
        return False
    try:
        _PROBE_KEY.exchange(X25519PublicKey.from_public_bytes(public_raw))
    except ValueError:
        return False
    return True
