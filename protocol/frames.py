"""Frames (SPEC section 4): the outer msgpack array, its domains, signatures and MACs."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol import limits
from protocol._msgpack import first_fault, unpack, unpack_plain
from protocol._rules import ID, Field, Rule, Table, compile_reader, one_of
from protocol.errors import ErrCode, ProtocolError

REQ_DOMAIN = b"yb/req/v1\n"
RESP_DOMAIN = b"yb/resp/v1\n"

AUTH_SIG = "sig"
AUTH_MAC = "mac"
# The tag length each auth word requires; any other length is MALFORMED_FRAME.
TAG_BYTES = {AUTH_SIG: limits.ED25519_SIG_BYTES, AUTH_MAC: limits.HMAC_SHA256_BYTES}


@dataclasses.dataclass(frozen=True, slots=True)
class Frame:
    """One Frame: `[version, auth, key_id, body, tag]`.

    key_id is the signer's key id for "sig" (dev_no on 9001, the gateway kid on answers) and the
    session's sign_no for "mac". body is the msgpack-encoded envelope; tag covers DOMAIN + body.
    """

    version: int
    auth: str
    key_id: str
    body: bytes
    tag: bytes


# Frame fields in the order SPEC section 4 reads them; err_msg names the field in its reason.
_FRAME = compile_reader(Table(
    name="frame", code=ErrCode.MALFORMED_FRAME, message="{path}: {why}", positional=True, make=Frame, fields=(
        Field("version", (Rule(f"type(v) is int and v == {limits.FRAME_VERSION}", f"version is not {limits.FRAME_VERSION}"),)),
        Field("auth", (one_of(TAG_BYTES, "auth is not 'sig' or 'mac'"),)),
        Field("key_id", (dataclasses.replace(ID, why="key_id is " + ID.why),)),
        Field("body", (Rule("isinstance(v, bytes)", "body is not bin"),)),
        Field("tag", (Rule("isinstance(v, bytes) and len(v) == TAG_BYTES[auth]", "tag is not bin({TAG_BYTES[auth]})",
                           uses={"TAG_BYTES": TAG_BYTES}),)),
    )))


def decode_frame(data: bytes) -> Frame:
    """Decode and shape-check a Frame.

    Args:
        data: the HTTP body (any bytes).
    Returns:
        The Frame; its tag is not verified here.
    Raises:
        ProtocolError(MALFORMED_FRAME): not exactly one plain msgpack array of 5 with version 1, an
            auth word of "sig"/"mac", a str key_id of 1..ID_CHARS_MAX chars, a bin body and a bin
            tag of 64 ("sig") or 32 ("mac") bytes; trailing bytes included.
    """
    value = unpack_plain(data)
    if value is None:
        value = unpack(data, ErrCode.MALFORMED_FRAME, "frame")
    try:
        if not (isinstance(value, list) and len(value) == limits.FRAME_FIELDS):
            raise ProtocolError(ErrCode.MALFORMED_FRAME, "frame: not an array of 5")
        return _FRAME(value, "frame")
    except ProtocolError:
        # SPEC reads the value before its fields, so a fault of the tree outranks the field's
        # answer. Fields that all pass are plain by construction: only a refused frame is walked.
        fault = first_fault(value)
        if fault is not None:
            raise ProtocolError(ErrCode.MALFORMED_FRAME, f"frame: {fault}") from None
        raise


def encode_frame(frame: Frame) -> bytes:
    """Encode a Frame as the msgpack array `[version, auth, key_id, body, tag]`."""
    fields = [frame.version, frame.auth, frame.key_id, bytes(frame.body), bytes(frame.tag)]
    return msgpack.packb(fields, use_bin_type=True)


def sign(private_key: Ed25519PrivateKey, domain: bytes, body: bytes) -> bytes:
    """Return the Ed25519 signature (64 bytes) of `domain + body`."""
    return private_key.sign(domain + body)


def verify_sig(public_key: Ed25519PublicKey, domain: bytes, body: bytes, tag: bytes) -> bool:
    """Return True when `tag` is a valid Ed25519 signature of `domain + body` by `public_key`."""
    try:
        public_key.verify(bytes(tag), domain + body)
    except InvalidSignature:
        return False
    return True


def mac(key: bytes, domain: bytes, body: bytes) -> bytes:
    """Return HMAC-SHA256(key, domain + body): 32 bytes."""
    # hmac.digest is the one-shot C path: the same bytes as hmac.new(...).digest(), several times faster.
    return hmac.digest(key, domain + body, "sha256")


def verify_mac(key: bytes, domain: bytes, body: bytes, tag: bytes) -> bool:
    """Return True when `tag` equals HMAC-SHA256(key, domain + body), compared in constant time."""
    return hmac.compare_digest(mac(key, domain, body), bytes(tag))


def gateway_kid(public_raw: bytes) -> str:
    """Return the gateway key id: "gw-" + the first 16 hex digits of sha256(raw public key)."""
    return "gw-" + hashlib.sha256(public_raw).hexdigest()[:16]


def public_raw(public_key: Ed25519PublicKey) -> bytes:
    """Return the raw 32 bytes of an Ed25519 public key (the form the registry and /keys publish)."""
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
