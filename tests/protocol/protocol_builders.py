"""Valid messages and fixed keys shared by the protocol tests; each test breaks one thing."""

from __future__ import annotations

import copy
import hashlib
import math
import random
import struct
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

import protocol

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


# -- msgpack as other encoders may write it --------------------------------------------------------

def _int_forms(value: int) -> list[bytes]:
    forms = []
    if 0 <= value <= 0x7F or -32 <= value < 0:
        forms.append(struct.pack("b", value) if value < 0 else bytes([value]))
    for marker, fmt, low, high in ((0xCC, ">B", 0, 2**8 - 1), (0xCD, ">H", 0, 2**16 - 1), (0xCE, ">I", 0, 2**32 - 1),
                                   (0xCF, ">Q", 0, 2**64 - 1), (0xD0, ">b", -(2**7), 2**7 - 1),
                                   (0xD1, ">h", -(2**15), 2**15 - 1), (0xD2, ">i", -(2**31), 2**31 - 1),
                                   (0xD3, ">q", -(2**63), 2**63 - 1)):
        if low <= value <= high:
            forms.append(bytes([marker]) + struct.pack(fmt, value))
    return forms


def _sized(raw: bytes, fix_marker: int | None, fix_max: int, markers: tuple[int, ...], rng: random.Random) -> bytes:
    forms = []
    if fix_marker is not None and len(raw) <= fix_max:
        forms.append(bytes([fix_marker | len(raw)]))
    for marker, fmt in zip(markers, (">B", ">H", ">I")):
        if len(raw) < 2 ** (8 * struct.calcsize(fmt)):
            forms.append(bytes([marker]) + struct.pack(fmt, len(raw)))
    return rng.choice(forms) + raw


def _container_head(count: int, fix_marker: int, marker16: int, rng: random.Random) -> bytes:
    forms = [bytes([fix_marker | count])] if count < 16 else []
    return rng.choice(forms + [bytes([marker16]) + struct.pack(">H", count),
                               bytes([marker16 + 1]) + struct.pack(">I", count)])


class Pairs(list[tuple[Any, Any]]):
    """A map written as its (key, value) pairs, in order, so that a key may be sent twice."""


def loose_packb(value: Any, rng: random.Random) -> bytes:
    """msgpack of `value` with a random (valid, often wider than needed) encoding of every item.

    Ints, strings, bins, arrays and maps take any of their encodings, floats float32 when that holds
    them exactly: what a terminal's msgpack library may send for the same value. A `Pairs` is
    written as a map of exactly its pairs.
    """
    if value is None:
        return b"\xc0"
    if value is True or value is False:
        return b"\xc3" if value else b"\xc2"
    if isinstance(value, int):
        return rng.choice(_int_forms(value))
    if isinstance(value, float):
        # float32 when it holds the value exactly (NaN and the infinities included): it decodes to the same float.
        exact = not math.isfinite(value) or (
            abs(value) < 3e38 and struct.unpack(">f", struct.pack(">f", value))[0] == value)
        if exact and rng.random() < 0.5:
            return b"\xca" + struct.pack(">f", value)
        return b"\xcb" + struct.pack(">d", value)
    if isinstance(value, str):
        return _sized(value.encode("utf-8"), 0xA0, 31, (0xD9, 0xDA, 0xDB), rng)
    if isinstance(value, bytes):
        return _sized(value, None, 0, (0xC4, 0xC5, 0xC6), rng)
    if isinstance(value, (Pairs, dict)):
        items = value if isinstance(value, Pairs) else value.items()
        pairs = [loose_packb(key, rng) + loose_packb(item, rng) for key, item in items]
        return _container_head(len(pairs), 0x80, 0xDE, rng) + b"".join(pairs)
    assert isinstance(value, (list, tuple)), value
    return _container_head(len(value), 0x90, 0xDC, rng) + b"".join(loose_packb(item, rng) for item in value)
