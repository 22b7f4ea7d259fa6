"""Patient credentials (SPEC section 7): the e-voucher token and the chip-card cryptogram."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hmac
from collections.abc import Mapping
from typing import Any

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol import limits
from protocol._fields import is_int
from protocol._msgpack import RepeatedKeys, first_fault, repeated_key_fault, unpack, unpack_strict
from protocol.canonical import canonical_packb
from protocol.errors import ErrCode, ProtocolError
from protocol.frames import verify_sig

VOUCHER_DOMAIN = b"yb/ectoken/v1\n"
CARD_KEY_DOMAIN = b"yb/card/v1\n"
CARD_MAC_DOMAIN = b"yb/arqc/v1\n"
_B64URL_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@dataclasses.dataclass(frozen=True, slots=True)
class VoucherClaims:
    """The signed body of an e-voucher; iat/exp are Unix seconds."""

    tid: str
    psn_no: str
    insutype: str
    insuplc_admdvs: str
    org: str
    iat: int
    exp: int


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    # The stdlib decoder silently skips foreign characters; refuse them instead, and padding too.
    if not all(ch in _B64URL_ALPHABET for ch in text) or len(text) % 4 == 1:
        raise ValueError("not base64url without padding")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint_voucher(issuer_kid: str, private_key: Ed25519PrivateKey, claims: VoucherClaims) -> str:
    """Build an e-voucher token: base64url (no padding) of msgpack `[1, issuer_kid, body, sig]`.

    body is the canonical msgpack map of the claims; sig = Ed25519(b"yb/ectoken/v1\\n" + body).
    """
    body = canonical_packb(dataclasses.asdict(claims))
    sig = private_key.sign(VOUCHER_DOMAIN + body)
    return _b64url_encode(msgpack.packb([limits.VOUCHER_VERSION, issuer_kid, body, sig], use_bin_type=True))


def _invalid(why: str) -> ProtocolError:
    return ProtocolError(ErrCode.VOUCHER_INVALID, f"input.mdtrt_cert_no: {why}")


def _unwrap(token: object) -> tuple[str, bytes, bytes]:
    if not isinstance(token, str) or len(token) > limits.VOUCHER_TOKEN_CHARS_MAX:
        raise _invalid("not a token")
    try:
        raw = _b64url_decode(token)
    except (ValueError, binascii.Error):
        raise _invalid("not base64url") from None
    try:
        value = unpack_strict(raw, ErrCode.VOUCHER_INVALID, "input.mdtrt_cert_no")
    except ProtocolError:
        raise _invalid("not msgpack") from None
    if not isinstance(value, list) or len(value) != limits.VOUCHER_FIELDS:
        raise _invalid("not an array of 4")
    version, kid, body, sig = value
    if not is_int(version) or version != limits.VOUCHER_VERSION or not isinstance(kid, str):
        raise _invalid("bad version or issuer kid")
    if not isinstance(body, bytes) or not isinstance(sig, bytes) or len(sig) != limits.ED25519_SIG_BYTES:
        raise _invalid("bad body or signature field")
    return kid, body, sig


def _claims(body: bytes) -> VoucherClaims:
    try:
        value = unpack(body, ErrCode.VOUCHER_INVALID, "input.mdtrt_cert_no")
    except ProtocolError:
        raise _invalid("body is not msgpack") from None
    # A body that repeats a claim could be read two ways (first or last wins): it is no voucher.
    if isinstance(value, RepeatedKeys):
        raise _invalid(f"body: {repeated_key_fault(value)}")
    if first_fault(value) is not None:
        raise _invalid("body is not msgpack")
    if not isinstance(value, dict):
        raise _invalid("body is not a map")
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(VoucherClaims):
        item = value.get(field.name)
        wanted_int = field.name in ("iat", "exp")
        if (wanted_int and not is_int(item)) or (not wanted_int and not isinstance(item, str)):
            raise _invalid(f"claim {field.name} missing or mistyped")
        fields[field.name] = item
    return VoucherClaims(**fields)


def verify_voucher(
    token: str, issuer_keys: Mapping[str, Ed25519PublicKey], fixmedins_code: str, now_s: int
) -> VoucherClaims:
    """Verify an e-voucher token for a settlement at `fixmedins_code` at time `now_s`.

    Checks, in SPEC order: decodes; issuer known and signature good; iat <= now + 300 and
    exp - iat <= 600; now < exp; org == fixmedins_code. Single use is the core's business.

    Returns:
        The claims.
    Raises:
        ProtocolError(VOUCHER_INVALID | VOUCHER_EXPIRED | VOUCHER_WRONG_INSTITUTION).
    """
    kid, body, sig = _unwrap(token)
    public_key = issuer_keys.get(kid)
    if public_key is None:
        raise _invalid("unknown issuer")
    if not verify_sig(public_key, VOUCHER_DOMAIN, body, sig):
        raise _invalid("bad signature")
    claims = _claims(body)
    if claims.iat > now_s + limits.VOUCHER_IAT_SKEW_S or claims.exp - claims.iat > limits.VOUCHER_LIFETIME_S_MAX:
        raise _invalid("iat in the future or lifetime over 600 s")
    if now_s >= claims.exp:
        raise ProtocolError(ErrCode.VOUCHER_EXPIRED, "input.mdtrt_cert_no: expired")
    if claims.org != fixmedins_code:
        raise ProtocolError(ErrCode.VOUCHER_WRONG_INSTITUTION, "input.mdtrt_cert_no: issued for another institution")
    return claims


def card_key(master_key: bytes, card_no: str, card_sn: str) -> bytes:
    """Return the card's 32-byte key: HMAC-SHA256(master, b"yb/card/v1\\n" + card_no + b"\\n" + card_sn)."""
    message = CARD_KEY_DOMAIN + card_no.encode("utf-8") + b"\n" + card_sn.encode("utf-8")
    # hmac.digest is the one-shot C path: the same bytes as hmac.new(...).digest(), several times faster.
    return hmac.digest(master_key, message, "sha256")


def card_mac(
    card_key: bytes,
    msgid: str,
    infno: str,
    fixmedins_code: str,
    medfee_sumamt: int,
    psn_no: str,
    insutype: str,
    insuplc_admdvs: str,
) -> bytes:
    """Return the card cryptogram (16 bytes) binding this card to this request.

    HMAC-SHA256(card_key, b"yb/arqc/v1\\n" + canonical msgpack of [msgid, infno, fixmedins_code,
    medfee_sumamt, psn_no, insutype, insuplc_admdvs])[:16]; medfee_sumamt is 0 for 1101.
    """
    fields = [msgid, infno, fixmedins_code, medfee_sumamt, psn_no, insutype, insuplc_admdvs]
    digest = hmac.digest(card_key, CARD_MAC_DOMAIN + canonical_packb(fields), "sha256")
    return digest[: limits.CARD_MAC_BYTES]


def verify_card_mac(
    card_key: bytes,
    msgid: str,
    infno: str,
    fixmedins_code: str,
    medfee_sumamt: int,
    psn_no: str,
    insutype: str,
    insuplc_admdvs: str,
    tag: bytes,
) -> bool:
    """Return True when `tag` equals card_mac(...) of the same fields, compared in constant time."""
    expected = card_mac(card_key, msgid, infno, fixmedins_code, medfee_sumamt, psn_no, insutype, insuplc_admdvs)
    return hmac.compare_digest(expected, bytes(tag))
