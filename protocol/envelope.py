"""Request and response envelopes (SPEC section 5): shape checks, encoding, freshness."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol import limits
from protocol._fields import is_int, msgid_layout_ok
from protocol._msgpack import RepeatedKeys, first_fault, repeated_key_fault, unpack, unpack_plain, unpack_strict
from protocol._rules import ID, INTEGER, MAP, Field, Rule, Table, compile_reader, digits, one_of, text
from protocol.canonical import canonical_packb
from protocol.errors import ErrCode, ProtocolError
from protocol.frames import AUTH_SIG, RESP_DOMAIN, Frame, encode_frame, gateway_kid, public_raw, sign

SIGN_IN_INFNO = "9001"
OPTER_TYPES = frozenset({"1", "2", "3"})


@dataclasses.dataclass(frozen=True, slots=True)
class RequestEnvelope:
    """A request envelope whose shape is valid; `input` is the raw map, not yet validated.

    `input_fault` is why `input` is not plain (an integer outside int64, a repeated key), found
    by the decoder's walk of the whole body and answered by `parse_request_input` as
    MALFORMED_INPUT; None when it is plain. It is not encoded.
    """

    infno: str
    msgid: str
    fixmedins_code: str
    mdtrtarea_admvs: str
    dev_no: str
    opter: str
    opter_type: str
    sign_no: str | None
    inf_time: int
    input: dict[str, Any]
    input_fault: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ResponseEnvelope:
    """A response envelope. `msgid` and `output` are None when absent on the wire."""

    infcode: int
    err_code: str
    err_msg: str
    msgid: str | None
    inf_refmsgid: str
    respond_time: int
    output: dict[str, Any] | None
    warnings: tuple[str, ...] = ()


# Envelope fields in the order SPEC section 5 checks them. A nil value is judged by the rules, so
# only an absent key is "missing"; sign_no may be absent or nil on sign-in only.
_MSGID = Rule(f"msgid_layout_ok(v) and v[:{limits.INSTITUTION_CODE_CHARS}] == fixmedins_code",
              "not fixmedins_code + a real yyyyMMddHHmmss + 4 digits", uses={"msgid_layout_ok": msgid_layout_ok})
_ENVELOPE = compile_reader(Table(
    name="envelope", code=ErrCode.MALFORMED_ENVELOPE, message="{name}: {why}", nil_is_missing=False, fields=(
        Field("infno", (text(1, limits.INFNO_CHARS_MAX, "not a short string"),)),
        Field("fixmedins_code", (text(limits.INSTITUTION_CODE_CHARS, limits.INSTITUTION_CODE_CHARS),)),
        Field("msgid", (_MSGID,)),
        Field("mdtrtarea_admvs", (digits(limits.ADMDVS_DIGITS),)),
        Field("opter_type", (one_of(OPTER_TYPES, "not '1', '2' or '3'"),)),
        Field("inf_time", (INTEGER,)),
        Field("input", (MAP,)),
        Field("dev_no", (ID,)),
        Field("opter", (ID,)),
        Field("sign_no", (ID,), optional=f"infno == {SIGN_IN_INFNO!r}"),
    )))


def _bad(field: str, why: str) -> ProtocolError:
    return ProtocolError(ErrCode.MALFORMED_ENVELOPE, f"{field}: {why}")


def _input_fault(value: Any) -> str | None:
    """Raise the envelope's own first fault, in the SPEC's order; return the one of `input`.

    Called only for a body whose walk found a fault. The tree's shape is the envelope's everywhere;
    a fault of value (an integer outside int64, a repeated key) is the envelope's outside `input`,
    and inside it is left to input validation, after authentication (SPEC sections 2 and 5).
    """
    fault = first_fault(value, 0, value_faults=False)
    if fault is not None:
        raise _bad("envelope", fault)
    if not isinstance(value, dict):
        raise _bad("envelope", "not a map")
    if isinstance(value, RepeatedKeys):
        raise _bad("envelope", repeated_key_fault(value))
    for key, item in value.items():
        fault = None if key == "input" else first_fault(item, 1)
        if fault is not None:
            raise _bad(key, fault)
    # At depth 0, as parse_input walks it: the same fault it would find.
    return first_fault(value.get("input"))


def decode_request_envelope(body: bytes) -> RequestEnvelope:
    """Decode a request envelope and check its shape (types, lengths, msgid layout and date).

    Whether infno is known, the institution registered and the session right is decided later;
    so is `input`, whose fault of value, if any, the envelope carries (`input_fault`). Unknown
    extra keys are ignored.

    Raises:
        ProtocolError(MALFORMED_ENVELOPE): not a msgpack map, a fault of the tree outside `input`
            or of its shape inside, or a field missing or mistyped.
    """
    value = unpack_plain(body)
    if value is not None:
        input_fault = None
    else:
        value = unpack(body, ErrCode.MALFORMED_ENVELOPE, "envelope")
        # One walk answers for almost every body; only a body with a fault is walked again, to
        # answer the fault SPEC section 5 puts first.
        input_fault = None if first_fault(value) is None else _input_fault(value)
    if not isinstance(value, dict):
        raise _bad("envelope", "not a map")
    infno, fixmedins_code, msgid, admvs, opter_type, inf_time, raw_input, dev_no, opter, sign_no = _ENVELOPE(
        value, "envelope")
    return RequestEnvelope(infno, msgid, fixmedins_code, admvs, dev_no, opter, opter_type, sign_no, inf_time,
                           raw_input, input_fault)


def encode_request_envelope(env: RequestEnvelope) -> bytes:
    """Encode a request envelope as canonical msgpack; `sign_no` None is left out."""
    fields = {
        "infno": env.infno,
        "msgid": env.msgid,
        "fixmedins_code": env.fixmedins_code,
        "mdtrtarea_admvs": env.mdtrtarea_admvs,
        "dev_no": env.dev_no,
        "opter": env.opter,
        "opter_type": env.opter_type,
        "inf_time": env.inf_time,
        "input": env.input,
    }
    if env.sign_no is not None:
        fields["sign_no"] = env.sign_no
    return canonical_packb(fields)


def encode_response_envelope(env: ResponseEnvelope) -> bytes:
    """Encode a response envelope as canonical msgpack.

    infcode, err_code, err_msg, inf_refmsgid, respond_time and warnings are always present;
    msgid and output only when not None.
    """
    return encode_response_fields(env.infcode, env.err_code, env.err_msg, env.msgid, env.inf_refmsgid,
                                  env.respond_time, env.output, env.warnings)


def encode_response_fields(infcode: int, err_code: str, err_msg: str, msgid: str | None, inf_refmsgid: str,
                           respond_time: int, output: dict[str, Any] | None, warnings: tuple[str, ...]) -> bytes:
    """`encode_response_envelope` of the envelope with these fields, without building it (the signer's path)."""
    # Built in canonical key order, so canonical_packb packs it (and a handler's output built in
    # key order) as it is, without rebuilding the maps.
    fields: dict[str, Any] = {"err_code": err_code, "err_msg": err_msg, "inf_refmsgid": inf_refmsgid,
                              "infcode": infcode}
    if msgid is not None:
        fields["msgid"] = msgid
    if output is not None:
        fields["output"] = output
    fields["respond_time"] = respond_time
    fields["warnings"] = list(warnings)
    return canonical_packb(fields)


def _typed(value: dict[str, Any], field: str, kind: type, optional: bool = False) -> Any:
    item = value.get(field)
    if item is None and optional:
        return None
    if field not in value or not isinstance(item, kind) or (kind is int and not is_int(item)):
        raise _bad(field, f"missing or not {kind.__name__}")
    return item


def decode_response_envelope(body: bytes) -> ResponseEnvelope:
    """Decode a response envelope (the terminal side) and check its shape.

    Raises:
        ProtocolError(MALFORMED_ENVELOPE): not a map, or a field missing or mistyped.
    """
    value = unpack_strict(body, ErrCode.MALFORMED_ENVELOPE, "response")
    if not isinstance(value, dict):
        raise _bad("response", "not a map")
    warnings = _typed(value, "warnings", list)
    if not all(isinstance(item, str) for item in warnings):
        raise _bad("warnings", "not a list of strings")
    return ResponseEnvelope(
        infcode=_typed(value, "infcode", int),
        err_code=_typed(value, "err_code", str),
        err_msg=_typed(value, "err_msg", str),
        msgid=_typed(value, "msgid", str, optional=True),
        inf_refmsgid=_typed(value, "inf_refmsgid", str),
        respond_time=_typed(value, "respond_time", int),
        output=_typed(value, "output", dict, optional=True),
        warnings=tuple(warnings),
    )


def check_fresh(inf_time_ms: int, now_ms: int) -> None:
    """Refuse an inf_time outside [now - 24 h, now + 300 s] (both ends included).

    Raises:
        ProtocolError(STALE_REQUEST): inf_time_ms is too old or too far ahead.
    """
    if not now_ms - limits.FRESH_PAST_MS <= inf_time_ms <= now_ms + limits.FRESH_FUTURE_MS:
        raise ProtocolError(ErrCode.STALE_REQUEST, f"inf_time {inf_time_ms} outside [now-24h, now+300s]")


def seal_response(private_key: Ed25519PrivateKey, env: ResponseEnvelope) -> bytes:
    """Encode `env` and sign it into a response Frame under the key's gateway kid."""
    body = encode_response_envelope(env)
    kid = _kid_of(private_key)
    return encode_frame(Frame(limits.FRAME_VERSION, AUTH_SIG, kid, body, sign(private_key, RESP_DOMAIN, body)))


# A signer seals many answers with one key: derive its kid once, not per answer. The cache holds
# the few key objects in use (they cannot be weakly referenced), so an id is never reused under it.
@functools.lru_cache(maxsize=8)
def _kid_of(private_key: Ed25519PrivateKey) -> str:
    return gateway_kid(public_raw(private_key.public_key()))
