"""The terminal side of the contract, for simulators, tests and POS vendors.

A TerminalSession signs in (9001) with the terminal's enrolled Ed25519 key, finishes the X25519
key agreement from the gateway's answer, MACs every later request with the session key, and
checks the gateway's signature on every answer. It holds one session at a time.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from protocol import limits
from protocol.credentials import card_mac
from protocol.envelope import (
    SIGN_IN_INFNO,
    RequestEnvelope,
    ResponseEnvelope,
    decode_response_envelope,
    encode_request_envelope,
)
from protocol.errors import ErrCode, ProtocolError
from protocol.frames import AUTH_MAC, AUTH_SIG, REQ_DOMAIN, RESP_DOMAIN, Frame, decode_frame, encode_frame, mac, sign, verify_sig
from protocol.session import session_key, x25519_public_raw

# Asia/Shanghai: UTC+8 all year (no DST since 1991), so a fixed offset is exact.
SHANGHAI = datetime.timezone(datetime.timedelta(hours=8))


def msgid(fixmedins_code: str, now_ms: int, serial: int) -> str:
    """Format a msgid: fixmedins_code + yyyyMMddHHmmss (Asia/Shanghai) + 4-digit serial.

    `serial` is taken modulo 10000, so a terminal may pass an ever-growing counter; it must not
    send more than 10000 messages in one second under one institution code.
    """
    local = datetime.datetime.fromtimestamp(now_ms // 1000, tz=SHANGHAI)
    return f"{fixmedins_code}{local:%Y%m%d%H%M%S}{serial % 10**limits.MSGID_SERIAL_DIGITS:04d}"


def verify_answer(frame_bytes: bytes, gateway_public_keys: Mapping[str, Ed25519PublicKey]) -> ResponseEnvelope:
    """Check a response Frame's signature against the published gateway keys and decode it.

    Raises:
        ProtocolError(MALFORMED_FRAME | MALFORMED_ENVELOPE): the answer does not decode.
        ProtocolError(BAD_SIGNATURE): not "sig", an unknown kid, or a bad signature.
    """
    frame = decode_frame(frame_bytes)
    public_key = gateway_public_keys.get(frame.key_id)
    if frame.auth != AUTH_SIG or public_key is None:
        raise ProtocolError(ErrCode.BAD_SIGNATURE, f"answer: not signed by a known gateway key ({frame.key_id})")
    if not verify_sig(public_key, RESP_DOMAIN, frame.body, frame.tag):
        raise ProtocolError(ErrCode.BAD_SIGNATURE, "answer: bad signature")
    return decode_response_envelope(frame.body)


@dataclasses.dataclass
class TerminalSession:
    """One POS terminal and (after sign-in) its current session.

    Attributes:
        dev_no, fixmedins_code, admdvs, opter, opter_type: what goes in every envelope.
        private_key: the terminal's enrolled Ed25519 key (signs 9001).
        gateway_public_keys: kid -> key, from GET /fsi/v1/keys; when given, answers are verified.
        sign_no, session_key: set by a successful on_signin_answer.
    """

    dev_no: str
    fixmedins_code: str
    admdvs: str
    opter: str
    opter_type: str
    private_key: Ed25519PrivateKey
    gateway_public_keys: Mapping[str, Ed25519PublicKey] | None = None
    sign_no: str | None = None
    session_key: bytes | None = None
    _x25519_private: X25519PrivateKey | None = dataclasses.field(default=None, repr=False)

    def _envelope(self, infno: str, msgid_: str, input_: dict[str, Any], now_ms: int) -> bytes:
        return encode_request_envelope(
            RequestEnvelope(
                infno=infno,
                msgid=msgid_,
                fixmedins_code=self.fixmedins_code,
                mdtrtarea_admvs=self.admdvs,
                dev_no=self.dev_no,
                opter=self.opter,
                opter_type=self.opter_type,
                sign_no=None if infno == SIGN_IN_INFNO else self.sign_no,
                inf_time=now_ms,
                input=input_,
            )
        )

    def signin_frame(self, msgid: str, now_ms: int, x25519_private: X25519PrivateKey | None = None) -> bytes:
        """Build a signed 9001 Frame carrying a fresh X25519 public key (random unless given)."""
        self._x25519_private = x25519_private or X25519PrivateKey.generate()
        input_ = {"opter": self.opter, "x25519_pub": x25519_public_raw(self._x25519_private)}
        body = self._envelope(SIGN_IN_INFNO, msgid, input_, now_ms)
        return encode_frame(Frame(limits.FRAME_VERSION, AUTH_SIG, self.dev_no, body, sign(self.private_key, REQ_DOMAIN, body)))

    def on_signin_answer(
        self, frame_bytes: bytes, gateway_public_keys: Mapping[str, Ed25519PublicKey] | None = None
    ) -> ResponseEnvelope:
        """Take the answer to signin_frame: verify it, derive the session key, keep sign_no.

        The signature is checked against `gateway_public_keys` (or the session's own); with no keys
        at all it is only decoded. A rejection (infcode != 0) is returned and leaves no session.

        Raises:
            ProtocolError: the answer does not decode, is badly signed, or its output is malformed.
        """
        envelope = self._read_answer(frame_bytes, gateway_public_keys)
        if envelope.infcode != 0:
            return envelope
        output = envelope.output or {}
        sign_no, peer_pub = output.get("sign_no"), output.get("x25519_pub")
        if not isinstance(sign_no, str) or not isinstance(peer_pub, bytes) or self._x25519_private is None:
            raise ProtocolError(ErrCode.MALFORMED_ENVELOPE, "output: no sign_no/x25519_pub, or no sign-in pending")
        self.session_key = session_key(self._x25519_private, peer_pub, sign_no)
        self.sign_no = sign_no
        self._x25519_private = None
        return envelope

    def request_frame(self, infno: str, msgid: str, input: dict[str, Any], now_ms: int) -> bytes:  # noqa: A002
        """Build a MAC'd request Frame in the current session.

        Raises:
            RuntimeError: called before a successful sign-in (a caller bug, not a wire error).
        """
        if self.sign_no is None or self.session_key is None:
            raise RuntimeError("request_frame needs a session: sign in first")
        body = self._envelope(infno, msgid, input, now_ms)
        tag = mac(self.session_key, REQ_DOMAIN, body)
        return encode_frame(Frame(limits.FRAME_VERSION, AUTH_MAC, self.sign_no, body, tag))

    def verify_answer(
        self, frame_bytes: bytes, gateway_public_keys: Mapping[str, Ed25519PublicKey] | None = None
    ) -> ResponseEnvelope:
        """Verify and decode an answer (see the module-level verify_answer).

        Raises:
            ProtocolError(BAD_SIGNATURE): bad or unknown signature; MALFORMED_*: undecodable.
        """
        keys = gateway_public_keys if gateway_public_keys is not None else self.gateway_public_keys
        if keys is None:
            raise ProtocolError(ErrCode.BAD_SIGNATURE, "answer: no gateway keys to verify against")
        return verify_answer(frame_bytes, keys)

    def end_session(self) -> None:
        """Forget the session (after a 9002 answer, SESSION_UNKNOWN or SESSION_EXPIRED)."""
        self.sign_no = None
        self.session_key = None

    def _read_answer(
        self, frame_bytes: bytes, gateway_public_keys: Mapping[str, Ed25519PublicKey] | None
    ) -> ResponseEnvelope:
        keys = gateway_public_keys if gateway_public_keys is not None else self.gateway_public_keys
        if keys is not None:
            return verify_answer(frame_bytes, keys)
        return decode_response_envelope(decode_frame(frame_bytes).body)

    def card_input(
        self, card_key: bytes, msgid: str, infno: str, medfee_sumamt: int, card: Mapping[str, str]
    ) -> dict[str, Any]:
        """Return the credential fields of an input for a card `{card_no, card_sn, psn_no,
        insutype, insuplc_admdvs}`, with its card_mac computed for this message."""
        tag = card_mac(
            card_key, msgid, infno, self.fixmedins_code, medfee_sumamt,
            card["psn_no"], card["insutype"], card["insuplc_admdvs"],
        )
        return {
            "mdtrt_cert_type": "03",
            "mdtrt_cert_no": card["card_no"],
            "card_sn": card["card_sn"],
            "psn_no": card["psn_no"],
            "insutype": card["insutype"],
            "insuplc_admdvs": card["insuplc_admdvs"],
            "card_mac": tag,
        }
