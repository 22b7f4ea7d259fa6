"""Recompute the committed vectors (tests/protocol/vectors/*.json) with the library and compare."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import pathlib
import re
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

import protocol

VECTORS = pathlib.Path(__file__).resolve().parent / "vectors"


def load(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


def _load_generator() -> Any:
    """The vectors' own generator (tests/protocol/vectors/make_vectors.py), loaded by path."""
    spec = importlib.util.spec_from_file_location("make_vectors", VECTORS / "make_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATOR = _load_generator()
from_json = GENERATOR.from_json


KEYS = load("keys.json")
SEEDS = {label: bytes.fromhex(hex_) for label, hex_ in KEYS["seeds"].items()}
TERMINAL = Ed25519PrivateKey.from_private_bytes(SEEDS["terminal"])
GATEWAY = Ed25519PrivateKey.from_private_bytes(SEEDS["gateway"])
ISSUER = Ed25519PrivateKey.from_private_bytes(SEEDS["voucher-issuer"])
TERMINAL_X = X25519PrivateKey.from_private_bytes(SEEDS["terminal-x25519"])
GATEWAY_X = X25519PrivateKey.from_private_bytes(SEEDS["gateway-x25519"])


def test_seeds_follow_the_documented_derivation() -> None:
    for label, value in SEEDS.items():
        assert value == hashlib.sha256(b"yb/vector/v1\n" + label.encode()).digest()


def test_public_keys_and_kid() -> None:
    gateway_raw = protocol.public_raw(GATEWAY.public_key())
    assert gateway_raw.hex() == KEYS["gateway_ed25519_public"]
    assert protocol.gateway_kid(gateway_raw) == KEYS["gateway_kid"]
    assert protocol.public_raw(TERMINAL.public_key()).hex() == KEYS["terminal_ed25519_public"]
    assert protocol.public_raw(ISSUER.public_key()).hex() == KEYS["voucher_issuer_public"]
    assert protocol.x25519_public_raw(TERMINAL_X).hex() == KEYS["terminal_x25519_public"]
    assert protocol.x25519_public_raw(GATEWAY_X).hex() == KEYS["gateway_x25519_public"]


def request_body(vector: dict[str, Any]) -> bytes:
    fields = from_json(vector["envelope"])
    fields.setdefault("sign_no", None)
    body = protocol.encode_request_envelope(protocol.RequestEnvelope(**fields))
    assert body.hex() == vector["body_hex"]
    return body


def check_frame(vector: dict[str, Any], body: bytes, tag: bytes) -> None:
    assert tag.hex() == vector["tag_hex"]
    frame = protocol.Frame(1, vector["auth"], vector["key_id"], body, tag)
    assert protocol.encode_frame(frame).hex() == vector["frame_hex"]
    assert protocol.decode_frame(bytes.fromhex(vector["frame_hex"])) == frame


def test_signin_request() -> None:
    vector = load("signin_9001.json")["request"]
    body = request_body(vector)
    assert vector["auth"] == "sig" and vector["key_id"] == "T51018200001-01"
    check_frame(vector, body, protocol.sign(TERMINAL, protocol.REQ_DOMAIN, body))
    env = protocol.decode_request_envelope(body)
    assert env.sign_no is None
    assert protocol.parse_input("9001", env.input).x25519_pub.hex() == KEYS["terminal_x25519_public"]


def test_signin_response_and_session_key() -> None:
    vectors = load("signin_9001.json")
    vector = vectors["response"]
    fields = from_json(vector["envelope"])
    fields["warnings"] = tuple(fields["warnings"])
    body = protocol.encode_response_envelope(protocol.ResponseEnvelope(**fields))
    assert body.hex() == vector["body_hex"]
    assert vector["key_id"] == KEYS["gateway_kid"]
    check_frame(vector, body, protocol.sign(GATEWAY, protocol.RESP_DOMAIN, body))
    sign_no = fields["output"]["sign_no"]
    from_terminal = protocol.session_key(TERMINAL_X, GATEWAY_X.public_key().public_bytes_raw(), sign_no)
    from_gateway = protocol.session_key(GATEWAY_X, TERMINAL_X.public_key().public_bytes_raw(), sign_no)
    assert from_terminal == from_gateway
    assert from_terminal.hex() == vectors["session_key_hex"]


def session_key() -> bytes:
    return bytes.fromhex(load("signin_9001.json")["session_key_hex"])


def test_settle_with_card() -> None:
    vectors = load("settle_2102_card.json")
    card = vectors["card"]
    key = protocol.card_key(SEEDS["card-master-51"], card["card_no"], card["card_sn"])
    assert key.hex() == vectors["card_key_hex"]
    vector = vectors["request"]
    body = request_body(vector)
    env = protocol.decode_request_envelope(body)
    typed = protocol.parse_input("2102", env.input)
    tag = protocol.card_mac(key, env.msgid, "2102", env.fixmedins_code, typed.medfee_sumamt,
                            card["psn_no"], card["insutype"], card["insuplc_admdvs"])
    assert tag.hex() == vectors["card_mac_hex"] == typed.cert.card_mac.hex()
    check_frame(vector, body, protocol.mac(session_key(), protocol.REQ_DOMAIN, body))
    assert protocol.fingerprint("2102", env.input).hex() == vectors["fingerprint_hex"]


def test_settle_with_voucher() -> None:
    vectors = load("settle_2102_voucher.json")
    claims = protocol.VoucherClaims(**vectors["voucher_claims"])
    token = protocol.mint_voucher(KEYS["voucher_issuer_kid"], ISSUER, claims)
    assert token == vectors["voucher_token"]
    issuers = {KEYS["voucher_issuer_kid"]: ISSUER.public_key()}
    assert protocol.verify_voucher(token, issuers, claims.org, vectors["now_ms"] // 1000) == claims
    vector = vectors["request"]
    body = request_body(vector)
    env = protocol.decode_request_envelope(body)
    assert protocol.parse_input("2102", env.input).cert == protocol.VoucherCredential(token)
    check_frame(vector, body, protocol.mac(session_key(), protocol.REQ_DOMAIN, body))
    assert protocol.fingerprint("2102", env.input).hex() == vectors["fingerprint_hex"]


def test_generator_reproduces_the_committed_files() -> None:
    for name, content in GENERATOR.build().items():
        assert json.loads(json.dumps(content)) == load(name), name


@pytest.mark.parametrize("name", ["signin_9001.json", "settle_2102_card.json", "settle_2102_voucher.json"])
def test_vector_frames_verify(name: str) -> None:
    vector = load(name)["request"]
    frame = protocol.decode_frame(bytes.fromhex(vector["frame_hex"]))
    if frame.auth == "sig":
        assert protocol.verify_sig(TERMINAL.public_key(), protocol.REQ_DOMAIN, frame.body, frame.tag)
    else:
        assert protocol.verify_mac(session_key(), protocol.REQ_DOMAIN, frame.body, frame.tag)


def vector_strings(value: Any) -> list[str]:
    """Every string in a vector file, nested ones included."""
    if isinstance(value, dict):
        return [text for item in value.values() for text in vector_strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in vector_strings(item)]
    return [value] if isinstance(value, str) else []


def test_hex_quoted_in_docs_matches_the_vectors() -> None:
    """docs/protocol.md quotes vector values (whole, or as `head…tail`); each must be real."""
    docs = (VECTORS.parents[2] / "docs" / "protocol.md").read_text(encoding="utf-8")
    names = ["keys.json", "signin_9001.json", "settle_2102_card.json", "settle_2102_voucher.json"]
    known = [text for name in names for text in vector_strings(load(name))]
    # The docs also spell out the frame domains in hex; they sit in no vector on their own.
    known += [protocol.REQ_DOMAIN.hex(), protocol.RESP_DOMAIN.hex()]
    quoted = re.findall(r"`([0-9a-f]{8,})(?:…([0-9a-f]{4,}))?`", docs)
    assert len(quoted) >= 15
    for head, tail in quoted:
        if tail:
            assert any(text.startswith(head) and text.endswith(tail) for text in known), f"{head}…{tail}"
        else:
            assert any(head in text for text in known), head
