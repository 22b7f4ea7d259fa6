"""The gateway's published response-signing keys: public keys and kids only, never a private key.

The private key lives with the shell that seals answers (gateway/sealer.py). The core keeps what
GET /fsi/v1/keys lists: the active public key and the retired ones, which `key_rotate` records
(journaled) add to, so after a restart the retired keys are listed again and old stored answers
(signed by them) stay verifiable.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

from protocol import gateway_kid

if TYPE_CHECKING:
    from gateway.core.records import KeyRotateRecord


class PublishedKeys:
    """The active public key (the one that signs now) and the retired public keys by kid."""

    def __init__(self, active_public_raw: bytes, retired_public_keys: dict[str, bytes] | None = None) -> None:
        self.active_public_raw = active_public_raw
        self.active_kid = gateway_kid(active_public_raw)
        self.retired: dict[str, bytes] = dict(retired_public_keys or {})
        self.retired.pop(self.active_kid, None)

    def activate(self, public_raw: bytes) -> None:
        """The shell now signs with the key of `public_raw`; the previous active key is retired."""
        kid = gateway_kid(public_raw)
        if kid == self.active_kid:
            return
        self.retired[self.active_kid] = self.active_public_raw
        self.active_public_raw, self.active_kid = public_raw, kid
        self.retired.pop(kid, None)

    def apply_rotation(self, record: KeyRotateRecord) -> None:
        """Replay a rotation: both of its keys are listed, as retired unless active.

        Which key is active comes from the shell (its key file, or in cluster mode the newest
        rotation's sealed key, activated once the rotation is durable), so replay never changes it.
        """
        for kid, raw in ((record.retired_kid, record.retired_public_key), (record.kid, record.public_key)):
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
        """Retired public keys by kid (the durable part)."""
        return dict(sorted(self.retired.items()))

    def restore(self, retired: dict[str, bytes]) -> None:
        """Merge retired keys from a snapshot."""
        for kid, raw in retired.items():
            if kid != self.active_kid:
                self.retired[kid] = raw
