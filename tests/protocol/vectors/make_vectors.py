"""Write the protocol test vectors (JSON) from fixed seeds.

Run from the repository root: `python tests/protocol/vectors/make_vectors.py`. The committed JSON
is the reference; test_protocol_vectors.py recomputes every value with the library and compares,
so a change to the wire format shows up as a diff here before it reaches a terminal.
Binary values are written as lowercase hex; inside envelopes, a bin is {"$bin": "<hex>"}.
"""

from __future__ import annotations

import base64
import hashlib
import json
import pathlib
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

import protocol

HERE = pathlib.Path(__file__).resolve().parent
FIXMEDINS_CODE = "P51018200001"
ADMDVS = "510182"
DEV_NO = "T51018200001-01"
OPTER = "OP0001"
NOW_MS = 1_750_000_000_000  # 2025-06-15 15:06:40 UTC = 23:06:40 Asia/Shanghai
SIGN_NO = "SN20250615230640000001"
SEEDS = ["terminal", "terminal-x25519", "gateway", "gateway-x25519", "voucher-issuer", "card-master-51"]


def seed(label: str) -> bytes:
    """32 bytes from a label: sha256(b"yb/vector/v1\\n" + label)."""
    return hashlib.sha256(b"yb/vector/v1\n" + label.encode("utf-8")).digest()


def to_json(value: Any) -> Any:
    """bytes -> {"$bin": hex}, recursively; the inverse of from_json."""
    if isinstance(value, bytes):
        return {"$bin": value.hex()}
    if isinstance(value, dict):
        return {key: to_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [to_json(item) for item in value]
    return value


def from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$bin"}:
            return bytes.fromhex(value["$bin"])
        return {key: from_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [from_json(item) for item in value]
    return value


def keys() -> dict[str, Any]:
    terminal = Ed25519PrivateKey.from_private_bytes(seed("terminal"))
    gateway = Ed25519PrivateKey.from_private_bytes(seed("gateway"))
    issuer = Ed25519PrivateKey.from_private_bytes(seed("voucher-issuer"))
    gateway_raw = protocol.public_raw(gateway.public_key())
    return {
        "seeds": {label: seed(label).hex() for label in SEEDS},
        "terminal_ed25519_public": protocol.public_raw(terminal.public_key()).hex(),
        "terminal_ed25519_public_b64": base64.b64encode(protocol.public_raw(terminal.public_key())).decode(),
        "gateway_ed25519_public": gateway_raw.hex(),
        "gateway_kid": protocol.gateway_kid(gateway_raw),
        "voucher_issuer_kid": "ec-issuer-01",
        "voucher_issuer_public": protocol.public_raw(issuer.public_key()).hex(),
        "terminal_x25519_public": protocol.x25519_public_raw(X25519PrivateKey.from_private_bytes(seed("terminal-x25519"))).hex(),
        "gateway_x25519_public": protocol.x25519_public_raw(X25519PrivateKey.from_private_bytes(seed("gateway-x25519"))).hex(),
    }


def terminal() -> protocol.TerminalSession:
    return protocol.TerminalSession(
        DEV_NO, FIXMEDINS_CODE, ADMDVS, OPTER, "1", Ed25519PrivateKey.from_private_bytes(seed("terminal"))
    )


def frame_vector(frame_bytes: bytes) -> dict[str, Any]:
    frame = protocol.decode_frame(frame_bytes)
    envelope = protocol.decode_request_envelope(frame.body) if frame.auth == "mac" or frame.key_id == DEV_NO else None
    vector: dict[str, Any] = {
        "auth": frame.auth,
        "key_id": frame.key_id,
        "body_hex": frame.body.hex(),
        "tag_hex": frame.tag.hex(),
        "frame_hex": frame_bytes.hex(),
    }
    if envelope is not None:
        fields = {name: getattr(envelope, name) for name in protocol.RequestEnvelope.__slots__}
        vector["envelope"] = to_json({key: value for key, value in fields.items() if value is not None})
    return vector


def signin() -> dict[str, Any]:
    session = terminal()
    msgid = protocol.msgid(FIXMEDINS_CODE, NOW_MS, 1)
    request = session.signin_frame(msgid, NOW_MS, X25519PrivateKey.from_private_bytes(seed("terminal-x25519")))
    gateway = Ed25519PrivateKey.from_private_bytes(seed("gateway"))
    gateway_x = X25519PrivateKey.from_private_bytes(seed("gateway-x25519"))
    output = {
        "sign_no": SIGN_NO,
        "sign_time": NOW_MS + 5,
        "x25519_pub": protocol.x25519_public_raw(gateway_x),
        "session_expires": NOW_MS + 5 + 43_200_000,
    }
    answer = protocol.ResponseEnvelope(0, "", "", msgid, "510182202506152306400000000001", NOW_MS + 5, output, ())
    answer_bytes = protocol.seal_response(gateway, answer)
    session.on_signin_answer(answer_bytes, {protocol.gateway_kid(protocol.public_raw(gateway.public_key())): gateway.public_key()})
    response = frame_vector(answer_bytes)
    response["envelope"] = to_json(
        {"infcode": 0, "err_code": "", "err_msg": "", "msgid": msgid, "inf_refmsgid": answer.inf_refmsgid,
         "respond_time": answer.respond_time, "output": output, "warnings": []}
    )
    return {
        "now_ms": NOW_MS,
        "request": frame_vector(request),
        "response": response,
        "session_key_hex": session.session_key.hex(),
    }


def settle(kind: str) -> dict[str, Any]:
    session = terminal()
    session.sign_no = SIGN_NO
    session.session_key = bytes.fromhex(signin()["session_key_hex"])
    serial = 2 if kind == "card" else 3
    msgid = protocol.msgid(FIXMEDINS_CODE, NOW_MS, serial)
    items = [
        {"feedetl_sn": "0001", "med_list_codg": "XR05CAA0001", "chrgitm_lv": "01", "otc": True,
         "cnt": 2, "pric": 1250, "det_item_fee_sumamt": 2500, "bilg_dr_codg": "DR0001"},
        {"feedetl_sn": "0002", "med_list_codg": "XJ01CAA0002", "chrgitm_lv": "02", "otc": False,
         "rxno": "RX20250615001", "cnt": 1, "pric": 3680, "det_item_fee_sumamt": 3680, "bilg_dr_codg": "DR0001"},
    ]
    medfee_sumamt = 6180
    vector: dict[str, Any] = {"now_ms": NOW_MS, "msgid": msgid}
    if kind == "card":
        card = {"card_no": "510182199001010011", "card_sn": "SN00000011", "psn_no": "51018200000000000011",
                "insutype": "310", "insuplc_admdvs": "510182"}
        key = protocol.card_key(seed("card-master-51"), card["card_no"], card["card_sn"])
        cert = session.card_input(key, msgid, "2102", medfee_sumamt, card)
        vector.update(card=card, card_key_hex=key.hex(), card_mac_hex=cert["card_mac"].hex())
    else:
        claims = protocol.VoucherClaims("EC20250615000031", "51018200000000000031", "390", "510182",
                                        FIXMEDINS_CODE, NOW_MS // 1000 - 30, NOW_MS // 1000 + 270)
        token = protocol.mint_voucher("ec-issuer-01", Ed25519PrivateKey.from_private_bytes(seed("voucher-issuer")), claims)
        cert = {"mdtrt_cert_type": "01", "mdtrt_cert_no": token}
        vector.update(voucher_claims={name: getattr(claims, name) for name in protocol.VoucherClaims.__slots__},
                      voucher_token=token)
    input_ = {**cert, "medfee_sumamt": medfee_sumamt, "items": items}
    vector["request"] = frame_vector(session.request_frame("2102", msgid, input_, NOW_MS))
    vector["fingerprint_hex"] = protocol.fingerprint("2102", input_).hex()
    return vector


def build() -> dict[str, dict[str, Any]]:
    """Every vector file's content, by file name."""
    return {
        "keys.json": keys(),
        "signin_9001.json": signin(),
        "settle_2102_card.json": settle("card"),
        "settle_2102_voucher.json": settle("voucher"),
    }


def main() -> None:
    for name, content in build().items():
        (HERE / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
