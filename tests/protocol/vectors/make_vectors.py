"""Write the protocol test vectors (JSON) from fixed seeds.

Run from the repository root: `python tests/protocol/vectors/make_vectors.py`. The committed JSON
is the reference; test_protocol_vectors.py recomputes every value with the library and compares,
so a change to the wire format shows up as a diff here before it reaches a terminal.
Binary values are written as lowercase hex; inside envelopes, a bin is {"$bin": "<hex>"}.
Each file carries every key (private and public), the fixed time and the intermediate values
(shared secret, HKDF parameters, card_key, MAC inputs, token parts) an implementation written
from docs/protocol.md alone needs; test_protocol_vectors_independent.py proves it.
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
INSTITUTION_CODE = "P51018200001"
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
    """{"$bin": hex} -> bytes, recursively; the inverse of to_json."""
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
        DEV_NO, INSTITUTION_CODE, ADMDVS, OPTER, "1", Ed25519PrivateKey.from_private_bytes(seed("terminal"))
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
    msgid = protocol.msgid(INSTITUTION_CODE, NOW_MS, 1)
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
    terminal_x = X25519PrivateKey.from_private_bytes(seed("terminal-x25519"))
    shared = terminal_x.exchange(gateway_x.public_key())
    return {
        "now_ms": NOW_MS,
        "msgid": msgid,
        "keys": signin_keys(),
        "request": frame_vector(request),
        "response": response,
        "key_agreement": {
            "x25519_shared_secret_hex": shared.hex(),
            "hkdf_hash": "SHA-256",
            "hkdf_salt_hex": SIGN_NO.encode("utf-8").hex(),
            "hkdf_info_hex": b"yb/session/v1".hex(),
            "hkdf_length": 32,
        },
        "session_key_hex": session.session_key.hex(),
    }


def signin_keys() -> dict[str, str]:
    """Every key the 9001 exchange uses, private and public, so the file stands alone."""
    terminal_key = Ed25519PrivateKey.from_private_bytes(seed("terminal"))
    gateway_key = Ed25519PrivateKey.from_private_bytes(seed("gateway"))
    gateway_raw = protocol.public_raw(gateway_key.public_key())
    return {
        "terminal_ed25519_seed_hex": seed("terminal").hex(),
        "terminal_ed25519_public_hex": protocol.public_raw(terminal_key.public_key()).hex(),
        "terminal_x25519_private_hex": seed("terminal-x25519").hex(),
        "terminal_x25519_public_hex": protocol.x25519_public_raw(X25519PrivateKey.from_private_bytes(seed("terminal-x25519"))).hex(),
        "gateway_ed25519_seed_hex": seed("gateway").hex(),
        "gateway_ed25519_public_hex": gateway_raw.hex(),
        "gateway_kid": protocol.gateway_kid(gateway_raw),
        "gateway_x25519_private_hex": seed("gateway-x25519").hex(),
        "gateway_x25519_public_hex": protocol.x25519_public_raw(X25519PrivateKey.from_private_bytes(seed("gateway-x25519"))).hex(),
    }


def settle(kind: str) -> dict[str, Any]:
    session = terminal()
    session.sign_no = SIGN_NO
    session.session_key = bytes.fromhex(signin()["session_key_hex"])
    serial = 2 if kind == "card" else 3
    msgid = protocol.msgid(INSTITUTION_CODE, NOW_MS, serial)
    items = [
        {"feedetl_sn": "0001", "med_list_codg": "XR05CAA0001", "chrgitm_lv": "01", "otc": True,
         "cnt": 2, "pric": 1250, "det_item_fee_sumamt": 2500, "bilg_dr_codg": "DR0001"},
        {"feedetl_sn": "0002", "med_list_codg": "XJ01CAA0002", "chrgitm_lv": "02", "otc": False,
         "rxno": "RX20250615001", "cnt": 1, "pric": 3680, "det_item_fee_sumamt": 3680, "bilg_dr_codg": "DR0001"},
    ]
    medfee_sumamt = 6180
    vector: dict[str, Any] = {
        "now_ms": NOW_MS,
        "msgid": msgid,
        "session": {"sign_no": SIGN_NO, "session_key_hex": session.session_key.hex()},
    }
    if kind == "card":
        cert = card_credential(session, msgid, medfee_sumamt, vector)
    else:
        cert = voucher_credential(vector)
    input_ = {**cert, "medfee_sumamt": medfee_sumamt, "items": items}
    vector["request"] = frame_vector(session.request_frame("2102", msgid, input_, NOW_MS))
    vector["fingerprint_input_hex"] = protocol.canonical_packb(["2102", input_]).hex()
    vector["fingerprint_hex"] = protocol.fingerprint("2102", input_).hex()
    return vector


def card_credential(session: protocol.TerminalSession, msgid: str, medfee_sumamt: int,
                    vector: dict[str, Any]) -> dict[str, Any]:
    """The card fields of the 2102 input; records the master key and each intermediate in `vector`."""
    card = {"card_no": "510182199001010011", "card_sn": "SN00000011", "psn_no": "51018200000000000011",
            "insutype": "310", "insuplc_admdvs": "510182"}
    master_key = seed("card-master-51")
    key = protocol.card_key(master_key, card["card_no"], card["card_sn"])
    cert = session.card_input(key, msgid, "2102", medfee_sumamt, card)
    mac_fields = [msgid, "2102", INSTITUTION_CODE, medfee_sumamt, card["psn_no"], card["insutype"], card["insuplc_admdvs"]]
    vector.update(
        card=card,
        card_master_key={"province": card["insuplc_admdvs"][:2], "key_hex": master_key.hex()},
        card_key_input_hex=(b"yb/card/v1\n" + card["card_no"].encode() + b"\n" + card["card_sn"].encode()).hex(),
        card_key_hex=key.hex(),
        card_mac_input_hex=(b"yb/arqc/v1\n" + protocol.canonical_packb(mac_fields)).hex(),
        card_mac_hex=cert["card_mac"].hex(),
    )
    return cert


def voucher_credential(vector: dict[str, Any]) -> dict[str, Any]:
    """The e-voucher fields of the 2102 input; records the issuer key and the token's parts in `vector`."""
    issuer = Ed25519PrivateKey.from_private_bytes(seed("voucher-issuer"))
    claims = protocol.VoucherClaims("EC20250615000031", "51018200000000000031", "390", "510182",
                                    INSTITUTION_CODE, NOW_MS // 1000 - 30, NOW_MS // 1000 + 270)
    token = protocol.mint_voucher("ec-issuer-01", issuer, claims)
    token_bytes = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    body = protocol.canonical_packb({name: getattr(claims, name) for name in protocol.VoucherClaims.__slots__})
    issuer_raw = protocol.public_raw(issuer.public_key())
    vector.update(
        voucher_issuer={"kid": "ec-issuer-01", "ed25519_seed_hex": seed("voucher-issuer").hex(),
                        "ed25519_public_hex": issuer_raw.hex(),
                        "ed25519_public_b64": base64.b64encode(issuer_raw).decode()},
        voucher_claims={name: getattr(claims, name) for name in protocol.VoucherClaims.__slots__},
        voucher_body_hex=body.hex(),
        voucher_sig_hex=issuer.sign(b"yb/ectoken/v1\n" + body).hex(),
        voucher_token_msgpack_hex=token_bytes.hex(),
        voucher_token=token,
    )
    return {"mdtrt_cert_type": "01", "mdtrt_cert_no": token}


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
