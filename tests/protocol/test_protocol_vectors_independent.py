"""Rebuild every test vector from docs/protocol.md alone, then check the gateway's code accepts it.

The first part is a second, independent implementation of the wire format: it uses only msgpack,
hashlib/hmac and cryptography, never `protocol`, and rebuilds each vector's bytes (envelope
bodies, tags, frames, session key, card_key, card_mac, e-voucher token, fingerprint) from the
inputs and keys the vector files carry. If a vector needed anything the docs do not say, or the
library drifted from the docs, these tests fail. `test_only_the_acceptance_fixture_imports_protocol`
keeps the two parts apart.

The second part hands the independently built frames to the gateway-side functions of `protocol`
(decode, verify, parse) and checks that they are accepted, and that a one-bit change is not.
"""

from __future__ import annotations

import ast
import base64
import datetime
import hashlib
import hmac
import json
import pathlib
import types
from typing import Any

import msgpack
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VECTORS = pathlib.Path(__file__).resolve().parent / "vectors"
REQ_DOMAIN = b"yb/req/v1\n"
RESP_DOMAIN = b"yb/resp/v1\n"
SESSION_INFO = b"yb/session/v1"
CARD_KEY_DOMAIN = b"yb/card/v1\n"
CARD_MAC_DOMAIN = b"yb/arqc/v1\n"
VOUCHER_DOMAIN = b"yb/ectoken/v1\n"
SHANGHAI = datetime.timezone(datetime.timedelta(hours=8))


def load(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


SIGNIN = load("signin_9001.json")
CARD = load("settle_2102_card.json")
VOUCHER = load("settle_2102_voucher.json")


# -- the independent implementation (docs/protocol.md, nothing else) ---------------------------


def from_json(value: Any) -> Any:
    """The vector files write a bin value as {"$bin": "<hex>"}; turn those back into bytes."""
    if isinstance(value, dict):
        if set(value) == {"$bin"}:
            return bytes.fromhex(value["$bin"])
        return {key: from_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [from_json(item) for item in value]
    return value


def sort_maps(value: Any) -> Any:
    """Rebuild every map with its keys in the order of their UTF-8 bytes, recursively."""
    if isinstance(value, dict):
        return {key: sort_maps(value[key]) for key in sorted(value, key=lambda key: key.encode("utf-8"))}
    if isinstance(value, list):
        return [sort_maps(item) for item in value]
    return value


def canonical(value: Any) -> bytes:
    """Canonical msgpack: sorted map keys, shortest encodings, str as str and bytes as bin."""
    return msgpack.packb(sort_maps(value), use_bin_type=True)


def frame(auth: str, key_id: str, body: bytes, tag: bytes) -> bytes:
    """Frame = msgpack array [1, auth, key_id, body, tag]."""
    return msgpack.packb([1, auth, key_id, body, tag], use_bin_type=True)


def ed25519(seed_hex: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed_hex))


def raw_public(private_key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    return private_key.public_key().public_bytes_raw()


def kid_of(public_raw: bytes) -> str:
    return "gw-" + hashlib.sha256(public_raw).hexdigest()[:16]


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def derive_session_key(own_private_hex: str, peer_public: bytes, sign_no: str) -> bytes:
    shared = X25519PrivateKey.from_private_bytes(bytes.fromhex(own_private_hex)).exchange(
        X25519PublicKey.from_public_bytes(peer_public)
    )
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=sign_no.encode("utf-8"), info=SESSION_INFO)
    return hkdf.derive(shared)


def msgid_time(now_ms: int) -> str:
    """The yyyyMMddHHmmss part of a msgid: the terminal's clock, Asia/Shanghai."""
    return datetime.datetime.fromtimestamp(now_ms // 1000, tz=SHANGHAI).strftime("%Y%m%d%H%M%S")


def terminal_fields() -> dict[str, Any]:
    """What a terminal puts in every envelope, as the sign-in vector shows it."""
    envelope = SIGNIN["request"]["envelope"]
    return {name: envelope[name] for name in ("fixmedins_code", "mdtrtarea_admvs", "dev_no", "opter", "opter_type")}


def settle_envelope(vector: dict[str, Any], credential: dict[str, Any]) -> dict[str, Any]:
    """The 2102 envelope built from parts: terminal fields, session, msgid, time, credential, bill."""
    bill = vector["request"]["envelope"]["input"]
    items = bill["items"]
    assert bill["medfee_sumamt"] == sum(line["det_item_fee_sumamt"] for line in items)
    assert all(line["det_item_fee_sumamt"] == line["cnt"] * line["pric"] for line in items)
    return {
        **terminal_fields(),
        "infno": "2102",
        "msgid": vector["msgid"],
        "sign_no": vector["session"]["sign_no"],
        "inf_time": vector["now_ms"],
        "input": {**credential, "medfee_sumamt": bill["medfee_sumamt"], "items": items},
    }


def card_credential() -> tuple[dict[str, Any], bytes]:
    """The card fields of CARD's input, and the card_key, computed from the master key."""
    card = CARD["card"]
    assert CARD["card_master_key"]["province"] == card["insuplc_admdvs"][:2]
    master_key = bytes.fromhex(CARD["card_master_key"]["key_hex"])
    key_input = CARD_KEY_DOMAIN + card["card_no"].encode() + b"\n" + card["card_sn"].encode()
    assert key_input.hex() == CARD["card_key_input_hex"]
    card_key = hmac_sha256(master_key, key_input)
    fixmedins_code = CARD["msgid"][:12]
    medfee_sumamt = CARD["request"]["envelope"]["input"]["medfee_sumamt"]
    mac_fields = [CARD["msgid"], "2102", fixmedins_code, medfee_sumamt,
                  card["psn_no"], card["insutype"], card["insuplc_admdvs"]]
    mac_input = CARD_MAC_DOMAIN + canonical(mac_fields)
    assert mac_input.hex() == CARD["card_mac_input_hex"]
    credential = {
        "mdtrt_cert_type": "03",
        "mdtrt_cert_no": card["card_no"],
        "card_sn": card["card_sn"],
        "psn_no": card["psn_no"],
        "insutype": card["insutype"],
        "insuplc_admdvs": card["insuplc_admdvs"],
        "card_mac": hmac_sha256(card_key, mac_input)[:16],
    }
    return credential, card_key


def voucher_token() -> str:
    """The e-voucher token of VOUCHER, minted from its claims and the issuer's key."""
    issuer = VOUCHER["voucher_issuer"]
    body = canonical(VOUCHER["voucher_claims"])
    assert body.hex() == VOUCHER["voucher_body_hex"]
    sig = ed25519(issuer["ed25519_seed_hex"]).sign(VOUCHER_DOMAIN + body)
    assert sig.hex() == VOUCHER["voucher_sig_hex"]
    packed = msgpack.packb([1, issuer["kid"], body, sig], use_bin_type=True)
    assert packed.hex() == VOUCHER["voucher_token_msgpack_hex"]
    return base64.urlsafe_b64encode(packed).rstrip(b"=").decode("ascii")


def mac_frame(vector: dict[str, Any], envelope: dict[str, Any]) -> bytes:
    """Encode, MAC and frame a request in the vector's session; checks each step against it."""
    body = canonical(envelope)
    assert body.hex() == vector["request"]["body_hex"]
    tag = hmac_sha256(bytes.fromhex(vector["session"]["session_key_hex"]), REQ_DOMAIN + body)
    assert tag.hex() == vector["request"]["tag_hex"]
    data = frame("mac", vector["session"]["sign_no"], body, tag)
    assert data.hex() == vector["request"]["frame_hex"]
    return data


def build_signin_request() -> bytes:
    keys = SIGNIN["keys"]
    terminal_x = X25519PrivateKey.from_private_bytes(bytes.fromhex(keys["terminal_x25519_private_hex"]))
    envelope = {
        **terminal_fields(),
        "infno": "9001",
        "msgid": SIGNIN["msgid"],
        "inf_time": SIGNIN["now_ms"],
        "input": {"opter": terminal_fields()["opter"], "x25519_pub": raw_public(terminal_x)},
    }
    assert envelope == from_json(SIGNIN["request"]["envelope"])
    body = canonical(envelope)
    assert body.hex() == SIGNIN["request"]["body_hex"]
    tag = ed25519(keys["terminal_ed25519_seed_hex"]).sign(REQ_DOMAIN + body)
    assert tag.hex() == SIGNIN["request"]["tag_hex"]
    return frame("sig", envelope["dev_no"], body, tag)


def build_signin_response() -> bytes:
    keys = SIGNIN["keys"]
    gateway = ed25519(keys["gateway_ed25519_seed_hex"])
    envelope = from_json(SIGNIN["response"]["envelope"])
    gateway_x = X25519PrivateKey.from_private_bytes(bytes.fromhex(keys["gateway_x25519_private_hex"]))
    assert envelope["output"]["x25519_pub"] == raw_public(gateway_x)
    body = canonical(envelope)
    assert body.hex() == SIGNIN["response"]["body_hex"]
    tag = gateway.sign(RESP_DOMAIN + body)
    assert tag.hex() == SIGNIN["response"]["tag_hex"]
    return frame("sig", kid_of(raw_public(gateway)), body, tag)


def build_card_request() -> bytes:
    credential, card_key = card_credential()
    assert card_key.hex() == CARD["card_key_hex"]
    assert credential["card_mac"].hex() == CARD["card_mac_hex"]
    envelope = settle_envelope(CARD, credential)
    assert envelope == from_json(CARD["request"]["envelope"])
    return mac_frame(CARD, envelope)


def build_voucher_request() -> bytes:
    token = voucher_token()
    assert token == VOUCHER["voucher_token"]
    envelope = settle_envelope(VOUCHER, {"mdtrt_cert_type": "01", "mdtrt_cert_no": token})
    assert envelope == from_json(VOUCHER["request"]["envelope"])
    return mac_frame(VOUCHER, envelope)


def independent_fingerprint(vector: dict[str, Any]) -> bytes:
    fingerprint_input = canonical(["2102", from_json(vector["request"]["envelope"]["input"])])
    assert fingerprint_input.hex() == vector["fingerprint_input_hex"]
    return hashlib.sha256(fingerprint_input).digest()


# -- tests of the independent rebuild ----------------------------------------------------------


def test_keys_in_the_vectors_agree_with_keys_json() -> None:
    keys, common = SIGNIN["keys"], load("keys.json")
    assert keys["terminal_ed25519_seed_hex"] == common["seeds"]["terminal"]
    assert raw_public(ed25519(keys["terminal_ed25519_seed_hex"])).hex() == keys["terminal_ed25519_public_hex"]
    assert base64.b64decode(common["terminal_ed25519_public_b64"]).hex() == keys["terminal_ed25519_public_hex"]
    assert raw_public(ed25519(keys["gateway_ed25519_seed_hex"])).hex() == keys["gateway_ed25519_public_hex"]
    assert kid_of(bytes.fromhex(keys["gateway_ed25519_public_hex"])) == keys["gateway_kid"] == common["gateway_kid"]
    for side in ("terminal", "gateway"):
        private = X25519PrivateKey.from_private_bytes(bytes.fromhex(keys[f"{side}_x25519_private_hex"]))
        assert raw_public(private).hex() == keys[f"{side}_x25519_public_hex"] == common[f"{side}_x25519_public"]
    issuer = VOUCHER["voucher_issuer"]
    assert raw_public(ed25519(issuer["ed25519_seed_hex"])).hex() == issuer["ed25519_public_hex"]
    assert base64.b64decode(issuer["ed25519_public_b64"]).hex() == issuer["ed25519_public_hex"]
    assert CARD["card_master_key"]["key_hex"] == common["seeds"]["card-master-51"]


@pytest.mark.parametrize("vector", [SIGNIN, CARD, VOUCHER], ids=["9001", "2102-card", "2102-voucher"])
def test_msgid_layout(vector: dict[str, Any]) -> None:
    msgid = vector["msgid"]
    assert len(msgid) == 30
    assert msgid[:12] == terminal_fields()["fixmedins_code"]
    assert msgid[12:26] == msgid_time(vector["now_ms"]) == "20250615230640"
    assert msgid[26:].isdigit() and len(msgid[26:]) == 4


def test_signin_request_rebuilt() -> None:
    assert build_signin_request().hex() == SIGNIN["request"]["frame_hex"]


def test_signin_response_rebuilt_and_verified_by_the_terminal() -> None:
    data = build_signin_response()
    assert data.hex() == SIGNIN["response"]["frame_hex"]
    version, auth, key_id, body, tag = msgpack.unpackb(data, raw=False)
    assert (version, auth, key_id) == (1, "sig", SIGNIN["keys"]["gateway_kid"])
    public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(SIGNIN["keys"]["gateway_ed25519_public_hex"]))
    public.verify(tag, RESP_DOMAIN + body)  # raises InvalidSignature on a bad tag


def test_session_key_rebuilt_on_both_sides() -> None:
    keys, agreement = SIGNIN["keys"], SIGNIN["key_agreement"]
    sign_no = SIGNIN["response"]["envelope"]["output"]["sign_no"]
    terminal_x = bytes.fromhex(keys["terminal_x25519_public_hex"])
    gateway_x = bytes.fromhex(keys["gateway_x25519_public_hex"])
    shared = X25519PrivateKey.from_private_bytes(bytes.fromhex(keys["terminal_x25519_private_hex"])).exchange(
        X25519PublicKey.from_public_bytes(gateway_x)
    )
    assert shared.hex() == agreement["x25519_shared_secret_hex"]
    assert (agreement["hkdf_hash"], agreement["hkdf_length"]) == ("SHA-256", 32)
    assert bytes.fromhex(agreement["hkdf_salt_hex"]) == sign_no.encode("utf-8")
    assert bytes.fromhex(agreement["hkdf_info_hex"]) == SESSION_INFO
    on_terminal = derive_session_key(keys["terminal_x25519_private_hex"], gateway_x, sign_no)
    on_gateway = derive_session_key(keys["gateway_x25519_private_hex"], terminal_x, sign_no)
    assert on_terminal == on_gateway
    assert on_terminal.hex() == SIGNIN["session_key_hex"] == CARD["session"]["session_key_hex"]
    assert VOUCHER["session"] == CARD["session"] == {"sign_no": sign_no, "session_key_hex": on_terminal.hex()}


def test_card_request_rebuilt() -> None:
    assert build_card_request().hex() == CARD["request"]["frame_hex"]
    assert independent_fingerprint(CARD).hex() == CARD["fingerprint_hex"]


def test_voucher_request_rebuilt() -> None:
    assert build_voucher_request().hex() == VOUCHER["request"]["frame_hex"]
    assert independent_fingerprint(VOUCHER).hex() == VOUCHER["fingerprint_hex"]


def test_canonical_order_is_by_utf8_bytes_not_insertion() -> None:
    shuffled = dict(reversed(list(from_json(CARD["request"]["envelope"]).items())))
    assert canonical(shuffled).hex() == CARD["request"]["body_hex"]
    assert msgpack.packb(shuffled, use_bin_type=True).hex() != CARD["request"]["body_hex"]


# -- the gateway-side code of `protocol` accepts what was built independently ----------------


@pytest.fixture(name="gw")
def gateway_protocol() -> types.ModuleType:
    """The library under test, imported here only, so the rebuild above cannot lean on it."""
    import protocol

    return protocol


def test_only_the_acceptance_fixture_imports_protocol() -> None:
    tree = ast.parse(pathlib.Path(__file__).read_text(encoding="utf-8"))
    importers = [
        node for node in ast.walk(tree)
        if (isinstance(node, ast.Import) and any(alias.name.split(".")[0] == "protocol" for alias in node.names))
        or (isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("protocol", "protocol_builders"))
    ]
    fixture = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "gateway_protocol")
    assert importers and all(fixture.lineno <= node.lineno <= (fixture.end_lineno or 0) for node in importers)


def test_gateway_accepts_the_signin(gw: Any) -> None:
    keys = SIGNIN["keys"]
    decoded = gw.decode_frame(build_signin_request())
    terminal_public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(keys["terminal_ed25519_public_hex"]))
    assert decoded.auth == gw.AUTH_SIG
    assert gw.verify_sig(terminal_public, gw.REQ_DOMAIN, decoded.body, decoded.tag)
    env = gw.decode_request_envelope(decoded.body)
    assert (env.infno, env.sign_no, env.dev_no) == ("9001", None, decoded.key_id)
    gw.check_fresh(env.inf_time, SIGNIN["now_ms"])
    typed = gw.parse_input("9001", env.input)
    gateway_x = X25519PrivateKey.from_private_bytes(bytes.fromhex(keys["gateway_x25519_private_hex"]))
    sign_no = SIGNIN["response"]["envelope"]["output"]["sign_no"]
    assert gw.session_key(gateway_x, typed.x25519_pub, sign_no).hex() == SIGNIN["session_key_hex"]


def test_terminal_side_accepts_the_signin_answer(gw: Any) -> None:
    gateway_public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(SIGNIN["keys"]["gateway_ed25519_public_hex"]))
    answer = gw.verify_answer(build_signin_response(), {SIGNIN["keys"]["gateway_kid"]: gateway_public})
    assert (answer.infcode, answer.err_code, answer.msgid) == (0, "", SIGNIN["msgid"])
    assert answer.output["sign_no"] == CARD["session"]["sign_no"]


def accept_settle(gw: Any, data: bytes, vector: dict[str, Any]) -> Any:
    """Run a 2102 frame through the gateway's decode and verify steps; return (typed input, envelope)."""
    session_key = bytes.fromhex(vector["session"]["session_key_hex"])
    decoded = gw.decode_frame(data)
    assert (decoded.auth, decoded.key_id) == (gw.AUTH_MAC, vector["session"]["sign_no"])
    assert gw.verify_mac(session_key, gw.REQ_DOMAIN, decoded.body, decoded.tag)
    env = gw.decode_request_envelope(decoded.body)
    assert env.sign_no == decoded.key_id and env.msgid == vector["msgid"]
    gw.check_fresh(env.inf_time, vector["now_ms"])
    assert gw.fingerprint(env.infno, env.input) == independent_fingerprint(vector)
    return gw.parse_input(env.infno, env.input), env


def test_gateway_accepts_the_card_settlement(gw: Any) -> None:
    typed, env = accept_settle(gw, build_card_request(), CARD)
    cert = typed.cert
    assert isinstance(cert, gw.CardCredential) and typed.medfee_sumamt == 6180 and len(typed.items) == 2
    master_key = bytes.fromhex(CARD["card_master_key"]["key_hex"])
    card_key = gw.card_key(master_key, cert.card_no, cert.card_sn)
    assert gw.verify_card_mac(card_key, env.msgid, env.infno, env.fixmedins_code, typed.medfee_sumamt,
                              cert.psn_no, cert.insutype, cert.insuplc_admdvs, cert.card_mac)


def test_gateway_accepts_the_voucher_settlement(gw: Any) -> None:
    typed, env = accept_settle(gw, build_voucher_request(), VOUCHER)
    issuer = VOUCHER["voucher_issuer"]
    issuer_keys = {issuer["kid"]: Ed25519PublicKey.from_public_bytes(bytes.fromhex(issuer["ed25519_public_hex"]))}
    claims = gw.verify_voucher(typed.cert.token, issuer_keys, env.fixmedins_code, VOUCHER["now_ms"] // 1000)
    assert {name: getattr(claims, name) for name in VOUCHER["voucher_claims"]} == VOUCHER["voucher_claims"]


@pytest.mark.parametrize("build", [build_card_request, build_voucher_request], ids=["card", "voucher"])
def test_gateway_refuses_a_one_bit_change(gw: Any, build: Any) -> None:
    decoded = gw.decode_frame(build())
    session_key = bytes.fromhex(CARD["session"]["session_key_hex"])
    body = bytearray(decoded.body)
    body[len(body) // 2] ^= 0x01
    assert not gw.verify_mac(session_key, gw.REQ_DOMAIN, bytes(body), decoded.tag)
    assert not gw.verify_mac(session_key[::-1], gw.REQ_DOMAIN, decoded.body, decoded.tag)
