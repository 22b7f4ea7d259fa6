"""A rotated signing key sealed for the region's journal, so that every process of the region has it.

In cluster mode the region's journal (the Redis stream, and the snapshot behind it) is the only
thing all processes of a region share that changes; the key files on their disks do not. A
rotation therefore journals its new private key inside its `key_rotate` record, sealed, never in
plaintext: AES-256-GCM under a key derived with HKDF-SHA256 from the card master key of the
region's own province in `secrets.toml`, which every process of the region holds (SPEC section
15: the same secrets file on every node) and nothing outside the gateway does. The associated
data binds a sealed key to its region and kid, so a sealed key moved to another record or region
does not open.

Why the province's card master key: it is the one secret of the secrets file that is the same on
every node and does not change when admins or other provinces are added (a key derived from the
whole file would, and older sealed keys would no longer open). HKDF with its own label keeps the
derived key independent of the master key's other uses.

Wire form of a sealed key: version (1 byte) + nonce (12 bytes) + ciphertext of the raw 32-byte
private key with its 16-byte tag.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.core import Secrets
from protocol import gateway_kid, public_raw

__all__ = ["KeySeal", "KeySealError"]

SEAL_VERSION = 1
SEAL_INFO = b"yb/cluster/signing-key/v1"
NONCE_BYTES = 12
RAW_KEY_BYTES = 32
SEALED_BYTES = 1 + NONCE_BYTES + RAW_KEY_BYTES + 16


class KeySealError(Exception):
    """A sealed key cannot be made or opened (no province key, another secret, tampered); one line."""


class KeySeal:
    """Seals and opens a region's rotated signing keys (see the module docstring)."""

    def __init__(self, secrets: Secrets, admdvs: str) -> None:
        """Raises KeySealError when secrets.toml has no card master key for the region's province."""
        province = admdvs[:2]
        master_key = secrets.card_master_keys.get(province)
        if master_key is None:
            raise KeySealError(f"secrets.toml has no card master key for province {province}: cluster mode "
                               f"seals rotated signing keys under it")
        self.admdvs = admdvs
        seal_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=admdvs.encode("ascii"),
                        info=SEAL_INFO).derive(master_key)
        self._aead = AESGCM(seal_key)

    def _associated(self, kid: str) -> bytes:
        return b"%s\n%s\n%s" % (SEAL_INFO, self.admdvs.encode("ascii"), kid.encode("ascii"))

    def seal(self, private_key: Ed25519PrivateKey) -> bytes:
        """The sealed form of `private_key`, for its key_rotate record."""
        kid = gateway_kid(public_raw(private_key.public_key()))
        nonce = os.urandom(NONCE_BYTES)
        raw = private_key.private_bytes_raw()
        return bytes([SEAL_VERSION]) + nonce + self._aead.encrypt(nonce, raw, self._associated(kid))

    def open(self, sealed: bytes, kid: str) -> Ed25519PrivateKey:
        """The private key of `kid` from its sealed form.

        Raises:
            KeySealError: not a sealed key of this region's secret for `kid`.
        """
        if len(sealed) != SEALED_BYTES or sealed[0] != SEAL_VERSION:
            raise KeySealError(f"the sealed key of {kid} is not in a known form")
        nonce = sealed[1:1 + NONCE_BYTES]
        try:
            raw = self._aead.decrypt(nonce, sealed[1 + NONCE_BYTES:], self._associated(kid))
        except InvalidTag:
            raise KeySealError(f"the sealed key of {kid} does not open with this node's secrets.toml "
                               f"(another card master key, or altered)") from None
        private_key = Ed25519PrivateKey.from_private_bytes(raw)
        if gateway_kid(public_raw(private_key.public_key())) != kid:
            raise KeySealError(f"the sealed key of {kid} holds another key")
        return private_key
