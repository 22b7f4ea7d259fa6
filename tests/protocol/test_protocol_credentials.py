"""E-voucher tokens and card cryptograms (SPEC section 7)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
from typing import Any

import msgpack
import pytest

import protocol
from protocol import ErrCode, ProtocolError
from protocol_builders import (
    CARD,
    CARD_MASTER_KEY,
    INSTITUTION_CODE,
    ISSUER_KEY,
    ISSUER_KID,
    MSGID,
    NOW_S,
    Pairs,
    ed25519,
    loose_packb,
    voucher_claims,
    voucher_token,
)

ISSUERS = {ISSUER_KID: ISSUER_KEY.public_key()}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token_from(fields: list[Any]) -> str:
    return b64url(msgpack.packb(fields, use_bin_type=True))


def signed_body(body: bytes) -> bytes:
    return ISSUER_KEY.sign(b"yb/ectoken/v1\n" + body)


def verify(token: str, now_s: int = NOW_S, org: str = INSTITUTION_CODE) -> protocol.VoucherClaims:
    return protocol.verify_voucher(token, ISSUERS, org, now_s)


def test_voucher_round_trip_and_layout() -> None:
    token = voucher_token()
    assert "=" not in token
    version, kid, body, sig = msgpack.unpackb(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)), raw=False)
    assert (version, kid) == (1, ISSUER_KID)
    assert msgpack.unpackb(body, raw=False) == {
        "tid": "EC-0001", "psn_no": CARD["psn_no"], "insutype": "310", "insuplc_admdvs": "510182",
        "org": INSTITUTION_CODE, "iat": NOW_S - 10, "exp": NOW_S + 290,
    }
    ISSUER_KEY.public_key().verify(sig, b"yb/ectoken/v1\n" + body)
    assert verify(token) == voucher_claims()


BODY = protocol.canonical_packb({
    "tid": "T", "psn_no": "P", "insutype": "310", "insuplc_admdvs": "510182", "org": INSTITUTION_CODE,
    "iat": NOW_S, "exp": NOW_S + 60,
})

INVALID_TOKENS = [
    ("empty", ""),
    ("not base64", "!!!!"),
    ("padding", voucher_token() + "="),
    ("standard alphabet", voucher_token().replace("-", "+").replace("_", "/") + "+/"),
    ("one char too many", voucher_token() + "A"),
    ("too long", "A" * 4096),
    ("not msgpack", b64url(b"\xc1\xc1")),
    ("trailing bytes", b64url(base64.urlsafe_b64decode(voucher_token() + "=" * (-len(voucher_token()) % 4)) + b"\x00")),
    ("array of 3", token_from([1, ISSUER_KID, BODY])),
    ("version 2", token_from([2, ISSUER_KID, BODY, signed_body(BODY)])),
    ("version true", token_from([True, ISSUER_KID, BODY, signed_body(BODY)])),
    ("kid int", token_from([1, 5, BODY, signed_body(BODY)])),
    ("body str", token_from([1, ISSUER_KID, "body", signed_body(BODY)])),
    ("sig 63 bytes", token_from([1, ISSUER_KID, BODY, signed_body(BODY)[:63]])),
    ("unknown issuer", token_from([1, "ec-other", BODY, signed_body(BODY)])),
    ("bad signature", token_from([1, ISSUER_KID, BODY, ed25519("forger").sign(b"yb/ectoken/v1\n" + BODY)])),
    ("signed without domain", token_from([1, ISSUER_KID, BODY, ISSUER_KEY.sign(BODY)])),
    ("body not a map", token_from([1, ISSUER_KID, b"\x90", signed_body(b"\x90")])),
    ("claim missing", token_from([1, ISSUER_KID, b"\x80", signed_body(b"\x80")])),
    ("iat over now+300", voucher_token(iat=NOW_S + 301, exp=NOW_S + 600)),
    ("lifetime 601", voucher_token(iat=NOW_S - 1, exp=NOW_S + 600)),
]


@pytest.mark.parametrize("token", [c[1] for c in INVALID_TOKENS], ids=[c[0] for c in INVALID_TOKENS])
def test_invalid_vouchers(token: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        verify(token)
    assert caught.value.code is ErrCode.VOUCHER_INVALID


@pytest.mark.parametrize("claim", ["org", "exp", "psn_no"])
def test_a_signed_body_that_repeats_a_claim_is_invalid(claim: str) -> None:
    # Either copy could be the claim a reader keeps (another institution, a later expiry, another
    # patient): the token is no voucher, even with a good signature and the right copy last.
    claims = msgpack.unpackb(BODY, raw=False)
    body = loose_packb(Pairs([(claim, "P51018200099" if claim != "exp" else NOW_S + 10**6), *claims.items()]),
                       random.Random(1))
    with pytest.raises(ProtocolError) as caught:
        verify(token_from([1, ISSUER_KID, body, signed_body(body)]))
    assert (caught.value.code, caught.value.msg) == (
        ErrCode.VOUCHER_INVALID, f"input.mdtrt_cert_no: body: repeated key {claim!r}")


@pytest.mark.parametrize("bad_claim", [("iat", "1"), ("exp", 1.5), ("org", 12), ("tid", None), ("iat", True)])
def test_mistyped_claims_are_invalid(bad_claim: tuple[str, Any]) -> None:
    fields = msgpack.unpackb(BODY, raw=False)
    fields[bad_claim[0]] = bad_claim[1]
    body = protocol.canonical_packb(fields)
    with pytest.raises(ProtocolError) as caught:
        verify(token_from([1, ISSUER_KID, body, signed_body(body)]))
    assert caught.value.code is ErrCode.VOUCHER_INVALID


def test_voucher_time_edges() -> None:
    assert verify(voucher_token(iat=NOW_S + 300, exp=NOW_S + 900)).iat == NOW_S + 300, "iat = now+300 is fine"
    assert verify(voucher_token(iat=NOW_S - 599, exp=NOW_S + 1)).exp == NOW_S + 1, "lifetime 600 is fine"
    with pytest.raises(ProtocolError) as caught:
        verify(voucher_token(iat=NOW_S - 600, exp=NOW_S))
    assert caught.value.code is ErrCode.VOUCHER_EXPIRED, "now == exp is expired"


def test_precedence_invalid_then_expired_then_institution() -> None:
    stale_and_long = voucher_token(iat=NOW_S - 2000, exp=NOW_S - 1000, org="P00000000000")
    with pytest.raises(ProtocolError) as caught:
        verify(stale_and_long)
    assert caught.value.code is ErrCode.VOUCHER_INVALID
    expired_elsewhere = voucher_token(iat=NOW_S - 400, exp=NOW_S - 1, org="P00000000000")
    with pytest.raises(ProtocolError) as caught:
        verify(expired_elsewhere)
    assert caught.value.code is ErrCode.VOUCHER_EXPIRED
    with pytest.raises(ProtocolError) as caught:
        verify(voucher_token(), org="P51018200002")
    assert caught.value.code is ErrCode.VOUCHER_WRONG_INSTITUTION


def test_card_key_and_mac_match_the_spec_formula() -> None:
    key = protocol.card_key(CARD_MASTER_KEY, CARD["card_no"], CARD["card_sn"])
    expected_key = hmac.new(
        CARD_MASTER_KEY, b"yb/card/v1\n" + CARD["card_no"].encode() + b"\n" + CARD["card_sn"].encode(), hashlib.sha256
    ).digest()
    assert key == expected_key
    fields = [MSGID, "2102", INSTITUTION_CODE, 2500, CARD["psn_no"], "310", "510182"]
    message = b"yb/arqc/v1\n" + msgpack.packb(fields, use_bin_type=True)
    expected_mac = hmac.new(key, message, hashlib.sha256).digest()[:16]
    tag = protocol.card_mac(key, MSGID, "2102", INSTITUTION_CODE, 2500, CARD["psn_no"], "310", "510182")
    assert tag == expected_mac and len(tag) == 16
    assert protocol.verify_card_mac(key, MSGID, "2102", INSTITUTION_CODE, 2500, CARD["psn_no"], "310", "510182", tag)


@pytest.mark.parametrize(
    "changed",
    [
        {"msgid": MSGID[:-1] + "9"},
        {"infno": "2101"},
        {"fixmedins_code": "P51018200002"},
        {"medfee_sumamt": 2501},
        {"psn_no": "other"},
        {"insutype": "390"},
        {"insuplc_admdvs": "510183"},
    ],
)
def test_card_mac_binds_every_field(changed: dict[str, Any]) -> None:
    key = protocol.card_key(CARD_MASTER_KEY, CARD["card_no"], CARD["card_sn"])
    fields = {
        "msgid": MSGID, "infno": "2102", "fixmedins_code": INSTITUTION_CODE, "medfee_sumamt": 2500,
        "psn_no": CARD["psn_no"], "insutype": "310", "insuplc_admdvs": "510182",
    }
    tag = protocol.card_mac(key, **fields)
    assert not protocol.verify_card_mac(key, **{**fields, **changed}, tag=tag)


def test_card_key_depends_on_master_card_and_sn() -> None:
    base = protocol.card_key(CARD_MASTER_KEY, "C1", "S1")
    assert base != protocol.card_key(CARD_MASTER_KEY, "C2", "S1")
    assert base != protocol.card_key(CARD_MASTER_KEY, "C1", "S2")
    assert base != protocol.card_key(bytes(32), "C1", "S1")
    # The SPEC joins card_no and card_sn with a newline, so the parser refuses newlines in both.
    assert protocol.card_key(CARD_MASTER_KEY, "C1\n", "S1") == protocol.card_key(CARD_MASTER_KEY, "C1", "\nS1")


def test_wrong_card_mac_rejected() -> None:
    key = protocol.card_key(CARD_MASTER_KEY, CARD["card_no"], CARD["card_sn"])
    args = (key, MSGID, "1101", INSTITUTION_CODE, 0, CARD["psn_no"], "310", "510182")
    tag = protocol.card_mac(*args)
    assert not protocol.verify_card_mac(*args, bytes(16))
    assert not protocol.verify_card_mac(*args, tag[:15])
    assert not protocol.verify_card_mac(protocol.card_key(CARD_MASTER_KEY, CARD["card_no"], "SN9"), *args[1:], tag)
