"""Valid messages and fixed keys shared by the protocol tests; each test breaks one thing."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

import protocol
from protocol import ErrCode, ProtocolError
from protocol._msgpack import unpack_strict

INSTITUTION_CODE = "P51018200001"
ADMDVS = "510182"
DEV_NO = "T51018200001-01"
OPTER = "OP0001"
NOW_MS = 1_750_000_000_000  # 2025-06-15 23:06:40 Asia/Shanghai
NOW_S = NOW_MS // 1000
MSGID = protocol.msgid(INSTITUTION_CODE, NOW_MS, 1)
CARD = {
    "card_no": "510182000000000001",
    "card_sn": "SN0001",
    "psn_no": "51018200000000000001",
    "insutype": "310",
    "insuplc_admdvs": "510182",
}


def seeded(label: str) -> bytes:
    """32 bytes derived from a label: fixed keys without committing key material."""
    return hashlib.sha256(b"yibao-gateway test vector seed: " + label.encode()).digest()


def ed25519(label: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(seeded(label))


def x25519(label: str) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(seeded(label))


TERMINAL_KEY = ed25519("terminal")
GATEWAY_KEY = ed25519("gateway")
ISSUER_KEY = ed25519("voucher-issuer")
ISSUER_KID = "ec-issuer-01"
CARD_MASTER_KEY = seeded("card-master-51")
GATEWAY_KID = protocol.gateway_kid(protocol.public_raw(GATEWAY_KEY.public_key()))
GATEWAY_KEYS = {GATEWAY_KID: GATEWAY_KEY.public_key()}


def envelope_dict(infno: str = "2102", input_: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """A valid request envelope as a plain map."""
    env = {
        "infno": infno,
        "msgid": MSGID,
        "fixmedins_code": INSTITUTION_CODE,
        "mdtrtarea_admvs": ADMDVS,
        "dev_no": DEV_NO,
        "opter": OPTER,
        "opter_type": "1",
        "sign_no": "S-0001",
        "inf_time": NOW_MS,
        "input": input_ if input_ is not None else settle_input(),
    }
    env.update(overrides)
    return env


def bill_line(index: int = 0, **overrides: Any) -> dict[str, Any]:
    line = {
        "feedetl_sn": f"L{index:03d}",
        "med_list_codg": "XA01AAA0001",
        "chrgitm_lv": "01",
        "otc": True,
        "cnt": 2,
        "pric": 1250,
        "det_item_fee_sumamt": 2500,
        "bilg_dr_codg": "DR0001",
    }
    line.update(overrides)
    return line


def card_fields(infno: str = "2102", medfee_sumamt: int = 2500, msgid: str = MSGID) -> dict[str, Any]:
    key = protocol.card_key(CARD_MASTER_KEY, CARD["card_no"], CARD["card_sn"])
    tag = protocol.card_mac(
        key, msgid, infno, INSTITUTION_CODE, medfee_sumamt, CARD["psn_no"], CARD["insutype"], CARD["insuplc_admdvs"]
    )
    return {
        "mdtrt_cert_type": "03",
        "mdtrt_cert_no": CARD["card_no"],
        "card_sn": CARD["card_sn"],
        "psn_no": CARD["psn_no"],
        "insutype": CARD["insutype"],
        "insuplc_admdvs": CARD["insuplc_admdvs"],
        "card_mac": tag,
    }


def voucher_claims(**overrides: Any) -> protocol.VoucherClaims:
    fields = {
        "tid": "EC-0001",
        "psn_no": CARD["psn_no"],
        "insutype": "310",
        "insuplc_admdvs": "510182",
        "org": INSTITUTION_CODE,
        "iat": NOW_S - 10,
        "exp": NOW_S + 290,
    }
    fields.update(overrides)
    return protocol.VoucherClaims(**fields)


def voucher_token(**overrides: Any) -> str:
    return protocol.mint_voucher(ISSUER_KID, ISSUER_KEY, voucher_claims(**overrides))


def settle_input(lines: list[dict[str, Any]] | None = None, cert: dict[str, Any] | None = None) -> dict[str, Any]:
    items = lines if lines is not None else [bill_line()]
    total = sum(line["det_item_fee_sumamt"] for line in items if isinstance(line, dict))
    fields = dict(cert) if cert is not None else card_fields(medfee_sumamt=total)
    fields.update({"medfee_sumamt": total, "items": items})
    return fields


VALID_INPUTS: dict[str, dict[str, Any]] = {
    "9001": {"opter": OPTER, "x25519_pub": protocol.x25519_public_raw(x25519("terminal-ephemeral"))},
    "9002": {},
    "1101": card_fields("1101", 0),
    "2101": settle_input(),
    "2102": settle_input(),
    "2206": settle_input(),
    "2207": settle_input(cert={"mdtrt_cert_type": "01", "mdtrt_cert_no": voucher_token()}),
    "2103": {"setl_id": "SETL-0001", "psn_no": CARD["psn_no"]},
    "2208": {"setl_id": "SETL-0001", "psn_no": CARD["psn_no"]},
    "2601": {"omsgid": MSGID, "oinfno": "2102"},
    "3201": {"stmt_date": "20250615", "setl_cnt": 3, "medfee_sumamt": 7500, "fund_pay_sumamt": 5000, "psn_cash_pay": 2500},
    "3202": {"stmt_date": "20250615", "limit": 100},
}


def valid_input(infno: str) -> dict[str, Any]:
    """A deep copy, so a test may mutate it."""
    return copy.deepcopy(VALID_INPUTS[infno])


def packed(value: Any) -> bytes:
    return protocol.canonical_packb(value)


def reference_decode_frame(data: bytes) -> protocol.Frame:
    """decode_frame as SPEC section 4 reads: strict plain decode first, then each field in order."""
    value = unpack_strict(data, ErrCode.MALFORMED_FRAME, "frame")
    if not isinstance(value, list) or len(value) != 5:
        raise ProtocolError(ErrCode.MALFORMED_FRAME, "frame: not an array of 5")
    version, auth, key_id, body, tag = value
    if type(version) is not int or version != 1:
        raise ProtocolError(ErrCode.MALFORMED_FRAME, "frame: version is not 1")
    if not isinstance(auth, str) or auth not in ("sig", "mac"):
        raise ProtocolError(ErrCode.MALFORMED_FRAME, "frame: auth is not 'sig' or 'mac'")
    if not isinstance(key_id, str) or not 1 <= len(key_id) <= 64:
        raise ProtocolError(ErrCode.MALFORMED_FRAME, "frame: key_id is not a string of 1..64 chars")
    if not isinstance(body, bytes):
        raise ProtocolError(ErrCode.MALFORMED_FRAME, "frame: body is not bin")
    size = 64 if auth == "sig" else 32
    if not isinstance(tag, bytes) or len(tag) != size:
        raise ProtocolError(ErrCode.MALFORMED_FRAME, f"frame: tag is not bin({size})")
    return protocol.Frame(version, auth, key_id, body, tag)
