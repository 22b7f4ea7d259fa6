"""Frames, domains, signatures, MACs, gateway kids and canonical msgpack."""

from __future__ import annotations

import hashlib
import hmac as std_hmac
import random
from typing import Any

import msgpack
import pytest

import protocol
from protocol import ErrCode, ProtocolError
from protocol_builders import GATEWAY_KEY, TERMINAL_KEY, Pairs, loose_packb, seeded

BODY = protocol.canonical_packb({"infno": "9002"})
SIG = bytes(range(64))
MAC = bytes(range(32))


def raw_frame(*fields: Any) -> bytes:
    return msgpack.packb(list(fields), use_bin_type=True)


MALFORMED_FRAMES = [
    ("empty", b""),
    ("not msgpack", b"\xc1"),
    ("truncated", raw_frame(1, "sig", "D1", BODY, SIG)[:-1]),
    ("trailing byte", raw_frame(1, "sig", "D1", BODY, SIG) + b"\x00"),
    ("a map", msgpack.packb({"v": 1}, use_bin_type=True)),
    ("array of 4", raw_frame(1, "sig", "D1", BODY)),
    ("array of 6", raw_frame(1, "sig", "D1", BODY, SIG, b"")),
    ("version 2", raw_frame(2, "sig", "D1", BODY, SIG)),
    ("version true", raw_frame(True, "sig", "D1", BODY, SIG)),
    ("version str", raw_frame("1", "sig", "D1", BODY, SIG)),
    ("unknown auth", raw_frame(1, "hmac", "D1", BODY, MAC)),
    ("auth upper case", raw_frame(1, "SIG", "D1", BODY, SIG)),
    ("auth bin", raw_frame(1, b"sig", "D1", BODY, SIG)),
    ("key_id int", raw_frame(1, "sig", 7, BODY, SIG)),
    ("key_id empty", raw_frame(1, "sig", "", BODY, SIG)),
    ("key_id too long", raw_frame(1, "sig", "k" * 65, BODY, SIG)),
    ("body str", raw_frame(1, "sig", "D1", "body", SIG)),
    ("tag str", raw_frame(1, "sig", "D1", BODY, "t" * 64)),
    ("sig tag of 32", raw_frame(1, "sig", "D1", BODY, MAC)),
    ("mac tag of 64", raw_frame(1, "mac", "S1", BODY, SIG)),
    ("mac tag of 31", raw_frame(1, "mac", "S1", BODY, MAC[:31])),
    ("ext type", b"\x95\x01\xa3sig\xa2D1\xc4\x00\xd4\x01\x00"),
    ("uint64 version", raw_frame(2**64 - 1, "sig", "D1", BODY, SIG)),
    ("invalid utf-8", b"\x95\x01\xa3s\xffg\xa2D1\xc4\x00\xc4\x00"),
    ("hostile length prefix", b"\x95\x01\xa3sig\xa2D1\xc6\xff\xff\xff\xff"),
    ("deep nesting", b"\x91" * 5000),
]


@pytest.mark.parametrize("data", [c[1] for c in MALFORMED_FRAMES], ids=[c[0] for c in MALFORMED_FRAMES])
def test_malformed_frames(data: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        protocol.decode_frame(data)
    assert caught.value.code is ErrCode.MALFORMED_FRAME


# SPEC reads the value before its fields: a fault of the tree (an integer outside int64, a bin
# map key, an ext) outranks a field's rule; then the fields answer in their order.
FRAME_MESSAGES = [
    ([1, "mac", 2**64 - 1, BODY, MAC], "frame: integer outside int64"),
    ([2**63, "mac", "S1", BODY, MAC], "frame: integer outside int64"),
    ([1, "mac", "S1", {b"k": 1}, MAC], "frame: map key is not a string"),
    ([{"a": 1}, "xyz", 7, "body", b""], "frame: version is not 1"),
    ([True, "mac", "S1", BODY, MAC], "frame: version is not 1"),
    ([1, ["mac"], "S1", BODY, MAC], "frame: auth is not 'sig' or 'mac'"),
    ([1, "mac", "", BODY, SIG], "frame: key_id is not a string of 1..64 chars"),
    ([1, "mac", "S1", "body", SIG], "frame: body is not bin"),
    ([1, "mac", "S1", BODY, SIG], "frame: tag is not bin(32)"),
    ([1, "sig", "S1", BODY, MAC], "frame: tag is not bin(64)"),
    ([1, "mac", "S1", BODY], "frame: not an array of 5"),
    ({"a": 1}, "frame: not an array of 5"),
]


@pytest.mark.parametrize(("value", "message"), FRAME_MESSAGES, ids=[c[1] for c in FRAME_MESSAGES])
def test_frame_faults_answer_in_the_spec_order(value: Any, message: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        protocol.decode_frame(msgpack.packb(value, use_bin_type=True))
    assert (caught.value.code, caught.value.msg) == (ErrCode.MALFORMED_FRAME, message)


def test_a_frame_has_no_keys_of_its_own_and_a_map_in_it_is_malformed() -> None:
    # A Frame is an array: a map (with a repeated key or not) is never a valid field.
    for value in (Pairs([("a", 1), ("a", 2)]), [1, "mac", "S1", Pairs([("k", 1), ("k", 1)]), MAC]):
        with pytest.raises(ProtocolError) as caught:
            protocol.decode_frame(loose_packb(value, random.Random(0)))
        assert caught.value.code is ErrCode.MALFORMED_FRAME
        assert caught.value.msg in ("frame: repeated key 'a'", "frame: repeated key 'k'")


def test_frame_with_an_ext_anywhere_is_malformed() -> None:
    ext = msgpack.ExtType(1, b"x")
    for value in ([1, "mac", "S1", ext, MAC], [1, "mac", "S1", BODY, MAC, ext], [ext]):
        with pytest.raises(ProtocolError) as caught:
            protocol.decode_frame(msgpack.packb(value, use_bin_type=True))
        assert caught.value.code is ErrCode.MALFORMED_FRAME


@pytest.mark.parametrize(("auth", "tag"), [("sig", SIG), ("mac", MAC)])
def test_frame_round_trip(auth: str, tag: bytes) -> None:
    frame = protocol.Frame(1, auth, "key-1", BODY, tag)
    data = protocol.encode_frame(frame)
    assert data == raw_frame(1, auth, "key-1", BODY, tag)
    assert protocol.decode_frame(data) == frame
    assert protocol.decode_frame(bytearray(data)) == frame


def test_domains() -> None:
    assert protocol.REQ_DOMAIN == b"yb/req/v1\n"
    assert protocol.RESP_DOMAIN == b"yb/resp/v1\n"


def test_signature_covers_domain_and_body() -> None:
    tag = protocol.sign(TERMINAL_KEY, protocol.REQ_DOMAIN, BODY)
    public = TERMINAL_KEY.public_key()
    public.verify(tag, b"yb/req/v1\n" + BODY)
    assert protocol.verify_sig(public, protocol.REQ_DOMAIN, BODY, tag)
    assert not protocol.verify_sig(public, protocol.RESP_DOMAIN, BODY, tag), "domain separation"
    assert not protocol.verify_sig(public, protocol.REQ_DOMAIN, BODY + b"\x00", tag)
    assert not protocol.verify_sig(GATEWAY_KEY.public_key(), protocol.REQ_DOMAIN, BODY, tag)
    assert not protocol.verify_sig(public, protocol.REQ_DOMAIN, BODY, bytes(64))


def test_mac_is_hmac_sha256_of_domain_and_body() -> None:
    key = seeded("session")
    expected = std_hmac.new(key, b"yb/req/v1\n" + BODY, hashlib.sha256).digest()
    assert protocol.mac(key, protocol.REQ_DOMAIN, BODY) == expected
    assert protocol.verify_mac(key, protocol.REQ_DOMAIN, BODY, expected)
    assert not protocol.verify_mac(key, protocol.RESP_DOMAIN, BODY, expected)
    assert not protocol.verify_mac(seeded("other"), protocol.REQ_DOMAIN, BODY, expected)
    assert not protocol.verify_mac(key, protocol.REQ_DOMAIN, BODY, expected[:-1] + bytes([expected[-1] ^ 1]))
    assert not protocol.verify_mac(key, protocol.REQ_DOMAIN, BODY, expected[:16])


def test_gateway_kid() -> None:
    raw = protocol.public_raw(GATEWAY_KEY.public_key())
    assert len(raw) == 32
    kid = protocol.gateway_kid(raw)
    assert kid == "gw-" + hashlib.sha256(raw).hexdigest()[:16]
    assert len(kid) == 19


def test_canonical_sorts_keys_by_utf8_bytes_recursively() -> None:
    value = {"b": 1, "a": {"z": b"\x00", "y": [{"d": 2, "c": 3}]}, "\u00e9": None, "Z": True}
    data = protocol.canonical_packb(value)
    assert list(msgpack.unpackb(data, raw=False)) == ["Z", "a", "b", "\u00e9"]
    assert data.startswith(b"\x84\xa1Z\xc3\xa1a\x82\xa1y\x91\x82\xa1c\x03\xa1d\x02\xa1z\xc4\x01\x00")
    assert data.endswith(b"\xa1b\x01\xa2\xc3\xa9\xc0")


def test_canonical_uses_shortest_encodings_and_bin_type() -> None:
    assert protocol.canonical_packb(1) == b"\x01"
    assert protocol.canonical_packb(-1) == b"\xff"
    assert protocol.canonical_packb(300) == b"\xcd\x01\x2c"
    assert protocol.canonical_packb(b"\x01") == b"\xc4\x01\x01"
    assert protocol.canonical_packb(("a", 1)) == protocol.canonical_packb(["a", 1])


def test_fingerprint() -> None:
    raw = {"setl_id": "S1", "psn_no": "P1"}
    expected = hashlib.sha256(protocol.canonical_packb(["2103", raw])).digest()
    assert protocol.fingerprint("2103", raw) == expected
    assert protocol.fingerprint("2103", dict(reversed(list(raw.items())))) == expected, "key order is irrelevant"
    assert protocol.fingerprint("2208", raw) != expected
    assert len(expected) == 32
