"""The gateway's response-signing keys: one active Ed25519 private key and the retired public keys.

Private keys live in files owned by the operator; the journal only ever carries kids and public
keys (record kind `key_rotate`), so after a restart the retired keys are listed again at
GET /fsi/v1/keys and old stored answers (signed by them) stay verifiable.
"""

from __future__ import annotations

import base64
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol import AUTH_SIG, RESP_DOMAIN, Frame, encode_frame, gateway_kid, limits, public_raw


class KeyRing:
    """Signs response bodies with the active key; remembers retired public keys by kid."""

    def __init__(self, active_private_key: Ed25519PrivateKey,
                 retired_public_keys: dict[str, bytes] | None = None) -> None:
        self._active = active_private_key
        self.active_public_raw = public_raw(active_private_key.public_key())
        self.active_kid = gateway_kid(self.active_public_raw)
        self.retired: dict[str, bytes] = dict(retired_public_keys or {})
        self.retired.pop(self.active_kid, None)

    def seal(self, body: bytes) -> bytes:
        """Return the response Frame `[1, "sig", kid, body, Ed25519(RESP_DOMAIN + body)]`."""
        tag = self._active.sign(RESP_DOMAIN + body)
        return encode_frame(Frame(limits.FRAME_VERSION, AUTH_SIG, self.active_kid, body, tag))

    def rotate(self, new_private_key: Ed25519PrivateKey) -> dict[str, Any]:
        """Make `new_private_key` active and retire the current one.

        Returns the journal record body (without "op"): kind `key_rotate` with the kids and raw
        public keys of both keys, never a private key.
        """
        change = {"t": "key_rotate", "kid": gateway_kid(public_raw(new_private_key.public_key())),
                  "public_key": public_raw(new_private_key.public_key()),
                  "retired_kid": self.active_kid, "retired_public_key": self.active_public_raw}
        self.retired[self.active_kid] = self.active_public_raw
        self._active = new_private_key
        self.active_public_raw = change["public_key"]
        self.active_kid = change["kid"]
        self.retired.pop(self.active_kid, None)
        return change

    def apply_rotation(self, record: dict[str, Any]) -> None:
        """Replay a `key_rotate` record: the key it retired is listed as retired (unless active again).

        The active key itself comes from the key file at start, so replay never changes it.
        """
        for kid, raw in ((record["retired_kid"], record["retired_public_key"]),
                         (record["kid"], record["public_key"])):
            if kid != self.active_kid:
                self.retired[kid] = raw

    def public_keys(self) -> list[dict[str, str]]:
        """The GET /fsi/v1/keys list: the active key first, then retired ones by kid."""
        keys = [{"kid": self.active_kid, "alg": "Ed25519",
                 "public_key": base64.b64encode(self.active_public_raw).decode("ascii"), "status": "active"}]
        keys += [{"kid": kid, "alg": "Ed25519", "public_key": base64.b64encode(raw).decode("ascii"),
                  "status": "retired"} for kid, raw in sorted(self.retired.items())]
        return keys

    def snapshot(self) -> dict[str, bytes]:
        """Retired public keys by kid (the durable part of the ring)."""
        return dict(sorted(self.retired.items()))

    def restore(self, retired: dict[str, bytes]) -> None:
        """Merge retired keys from a snapshot."""
        for kid, raw in retired.items():
            if kid != self.active_kid:
                self.retired[kid] = raw
