"""Request/response envelopes: shape rules of SPEC section 5, encodings, freshness."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_protocol_canonical import spec_canonical

import protocol
from protocol import ErrCode, ProtocolError
from protocol_builders import (
    INSTITUTION_CODE, MSGID, NOW_MS, VALID_INPUTS, Pairs, bill_line, envelope_dict, loose_packb, packed, settle_input,
    valid_input,
)

MISSING = object()


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def body_with(**changes: Any) -> bytes:
    env = envelope_dict()
    for field, value in changes.items():
        if value is MISSING:
            del env[field]
        else:
            env[field] = value
    return packed(env)


BAD_ENVELOPES = [
    ("not msgpack", b"\xc1"),
    ("empty", b""),
    ("trailing bytes", body_with() + b"\xc0"),
    ("a list", packed([1, 2])),
    ("an int", packed(7)),
    ("bin keys", msgpack.packb({b"infno": "2102"}, use_bin_type=True)),
    ("int keys", b"\x81\x01\x02"),
    ("ext type", msgpack.packb(msgpack.ExtType(5, b"x"), use_bin_type=True)),
    ("ext inside input", body_with(input={"x": msgpack.ExtType(5, b"x")})),
    ("timestamp", body_with(inf_time=msgpack.Timestamp(1, 0))),
    ("infno missing", body_with(infno=MISSING)),
    ("infno int", body_with(infno=2102)),
    ("infno empty", body_with(infno="")),
    ("msgid missing", body_with(msgid=MISSING)),
    ("msgid 29 chars", body_with(msgid=MSGID[:-1])),
    ("msgid 31 chars", body_with(msgid=MSGID + "1")),
    ("msgid other prefix", body_with(msgid="P51018200002" + MSGID[12:])),
    ("msgid Feb 30", body_with(msgid=INSTITUTION_CODE + "20250230120000" + "0001")),
    ("msgid hour 24", body_with(msgid=INSTITUTION_CODE + "20250615240000" + "0001")),
    ("msgid second 60", body_with(msgid=INSTITUTION_CODE + "20250615235960" + "0001")),
    ("msgid year 0", body_with(msgid=INSTITUTION_CODE + "00000615120000" + "0001")),
    ("msgid letter serial", body_with(msgid=MSGID[:-1] + "x")),
    ("msgid full-width digit", body_with(msgid=MSGID[:-1] + "\uff11")),
    ("msgid bin", body_with(msgid=MSGID.encode())),
    ("fixmedins_code 11", body_with(fixmedins_code=INSTITUTION_CODE[:-1])),
    ("fixmedins_code int", body_with(fixmedins_code=510182000001)),
    ("mdtrtarea_admvs 5", body_with(mdtrtarea_admvs="51018")),
    ("mdtrtarea_admvs letters", body_with(mdtrtarea_admvs="5101a2")),
    ("mdtrtarea_admvs int", body_with(mdtrtarea_admvs=510182)),
    ("dev_no missing", body_with(dev_no=MISSING)),
    ("dev_no empty", body_with(dev_no="")),
    ("dev_no too long", body_with(dev_no="d" * 65)),
    ("opter int", body_with(opter=1)),
    ("opter_type 4", body_with(opter_type="4")),
    ("opter_type int", body_with(opter_type=1)),
    ("opter_type list", body_with(opter_type=["1"])),
    ("sign_no missing on 2102", body_with(sign_no=MISSING)),
    ("sign_no nil on 2102", body_with(sign_no=None)),
    ("sign_no int", body_with(sign_no=5)),
    ("inf_time missing", body_with(inf_time=MISSING)),
    ("inf_time float", body_with(inf_time=1.75e12)),
    ("inf_time bool", body_with(inf_time=True)),
    ("inf_time str", body_with(inf_time=str(NOW_MS))),
    ("inf_time over int64", body_with(inf_time=2**64 - 1)),
    ("extra key over int64", body_with(extra=2**63)),
    ("input missing", body_with(input=MISSING)),
    ("input list", body_with(input=[])),
    ("input nil", body_with(input=None)),
    ("deep nesting in input", body_with(input={"x": nested(40)})),
]


@pytest.mark.parametrize("body", [c[1] for c in BAD_ENVELOPES], ids=[c[0] for c in BAD_ENVELOPES])
def test_malformed_envelopes(body: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        protocol.decode_request_envelope(body)
    assert caught.value.code is ErrCode.MALFORMED_ENVELOPE


def test_valid_envelope_decodes_with_raw_input() -> None:
    env = protocol.decode_request_envelope(body_with(extra_key="ignored"))
    assert env == protocol.RequestEnvelope(
        "2102", MSGID, INSTITUTION_CODE, "510182", "T51018200001-01", "OP0001", "1", "S-0001", NOW_MS, valid_input("2102")
    )


@pytest.mark.parametrize("opter_type", ["1", "2", "3"])
def test_opter_types(opter_type: str) -> None:
    assert protocol.decode_request_envelope(body_with(opter_type=opter_type)).opter_type == opter_type


def test_sign_no_optional_on_9001_only() -> None:
    assert protocol.decode_request_envelope(body_with(infno="9001", sign_no=MISSING)).sign_no is None
    assert protocol.decode_request_envelope(body_with(infno="9001", sign_no=None)).sign_no is None
    assert protocol.decode_request_envelope(body_with(infno="9001")).sign_no == "S-0001"
    with pytest.raises(ProtocolError):
        protocol.decode_request_envelope(body_with(infno="9001", sign_no=3))


def test_unknown_infno_and_big_input_ints_pass_the_envelope() -> None:
    # Decided later: UNSUPPORTED_INFNO and MALFORMED_INPUT come from parse_input (SPEC section 5).
    env = protocol.decode_request_envelope(body_with(infno="7777", input={"x": 2**64 - 1}))
    assert env.infno == "7777"
    with pytest.raises(ProtocolError) as caught:
        protocol.parse_input("2102", env.input)
    assert caught.value.code is ErrCode.MALFORMED_INPUT


def test_inf_time_int64_bounds() -> None:
    assert protocol.decode_request_envelope(body_with(inf_time=2**63 - 1)).inf_time == 2**63 - 1
    assert protocol.decode_request_envelope(body_with(inf_time=-(2**63))).inf_time == -(2**63)


def _outcome(call: Any) -> Any:
    try:
        return call()
    except ProtocolError as exc:
        return (exc.code, exc.msg)


@pytest.mark.parametrize(("env", "envelope_says", "input_says"), [
    (envelope_dict(extra=2**64 - 1), "extra: integer outside int64", None),
    (envelope_dict(extra=[{"k": [2**64 - 1]}]), "extra: integer outside int64", None),
    (envelope_dict(extra=2**64 - 1, input_={"x": nested(40)}), "envelope: nested too deeply", None),
    (envelope_dict(input_={**valid_input("2102"), "extra": 2**64 - 1}), None, "input: integer outside int64"),
    (envelope_dict(input_={**valid_input("2102"), "extra": nested(30)}), None, None),      # 32 deep: the bound
    (envelope_dict(input_={**valid_input("2102"), "extra": nested(31)}), "envelope: nested too deeply", None),
    (envelope_dict(input_={**valid_input("2102"), "x": {b"k": 1}}), "envelope: map key is not a string", None),
])
def test_where_a_fault_of_the_tree_is_answered(env: dict[str, Any], envelope_says: str | None,
                                                input_says: str | None) -> None:
    # SPEC section 5: outside `input` every fault is MALFORMED_ENVELOPE; inside it an integer outside
    # int64 is MALFORMED_INPUT (answered after authentication), the tree's shape stays the envelope's.
    outcome = _outcome(lambda: protocol.decode_request_envelope(msgpack.packb(env, use_bin_type=True)))
    if envelope_says is not None:
        assert outcome == (ErrCode.MALFORMED_ENVELOPE, envelope_says)
        return
    parsed = _outcome(lambda: protocol.parse_request_input(outcome))
    assert parsed == _outcome(lambda: protocol.parse_input(outcome.infno, outcome.input))
    if input_says is None:
        assert isinstance(parsed, protocol.SettleInput)
    else:
        assert parsed == (ErrCode.MALFORMED_INPUT, input_says)


def repeating(mapping: dict[str, Any], key: str, decoy: Any = "decoy") -> Pairs:
    """`mapping` with `key` sent twice: a decoy first, its own value last (the copy msgpack-python keeps)."""
    return Pairs([(key, decoy), *mapping.items()])


def _with_line_repeating(key: str) -> dict[str, Any]:
    raw = settle_input([bill_line(0), bill_line(1)])
    raw["items"][1] = repeating(raw["items"][1], key, 7)
    return raw


LONG_KEY = "k" * 100
REPEATED_KEYS = [
    ("envelope key", repeating(envelope_dict(), "infno", "9001"), "envelope: repeated key 'infno'", None),
    ("envelope input key", repeating(envelope_dict(), "input", {}), "envelope: repeated key 'input'", None),
    ("outer map", envelope_dict(extra=[repeating({"a": 1}, "a")]), "extra: repeated key 'a'", None),
    ("input key", envelope_dict(input_=repeating(valid_input("2102"), "items", [])), None,
     "input: repeated key 'items'"),
    ("bill line key", envelope_dict(input_=_with_line_repeating("cnt")), None, "input: repeated key 'cnt'"),
    ("deep in input", envelope_dict(input_={**valid_input("2102"), "x": [[{"y": repeating({"z": 1}, "z")}]]}), None,
     "input: repeated key 'z'"),
    ("long key cut short", envelope_dict(input_=repeating({**valid_input("2102"), LONG_KEY: 1}, LONG_KEY)), None,
     f"input: repeated key {'k' * 64!r}..."),
    # SPEC section 5's order: the envelope's own rules come before anything inside input.
    ("input repeat, bad opter_type", envelope_dict(opter_type="9", input_=repeating(valid_input("2102"), "items")),
     "opter_type: not '1', '2' or '3'", None),
    ("input repeat, outer int64", envelope_dict(extra=2**64 - 1, input_=repeating(valid_input("2102"), "items")),
     "extra: integer outside int64", None),
    ("outer repeat, input int64", envelope_dict(extra=repeating({"a": 1}, "a"), input_={"x": 2**64 - 1}),
     "extra: repeated key 'a'", None),
]


@pytest.mark.parametrize(("env", "envelope_says", "input_says"), [case[1:] for case in REPEATED_KEYS],
                         ids=[case[0] for case in REPEATED_KEYS])
def test_repeated_keys_are_malformed_where_they_lie(env: Any, envelope_says: str | None, input_says: str | None) -> None:
    # SPEC section 2: MALFORMED_ENVELOPE in the envelope, MALFORMED_INPUT inside `input`, in every
    # encoding, whichever copy a decoder would keep.
    for seed in range(4):
        outcome = _outcome(lambda: protocol.decode_request_envelope(loose_packb(env, random.Random(seed))))
        if envelope_says is not None:
            assert outcome == (ErrCode.MALFORMED_ENVELOPE, envelope_says)
            continue
        assert _outcome(lambda: protocol.parse_request_input(outcome)) == (ErrCode.MALFORMED_INPUT, input_says)
        assert _outcome(lambda: protocol.parse_input(outcome.infno, outcome.input)) == (
            ErrCode.MALFORMED_INPUT, input_says)


def _shuffled(tree: Any, rng: random.Random) -> Any:
    if isinstance(tree, dict):
        items = [(key, _shuffled(value, rng)) for key, value in tree.items()]
        rng.shuffle(items)
        return dict(items)
    if isinstance(tree, list):
        return [_shuffled(value, rng) for value in tree]
    return tree


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.sampled_from(sorted(VALID_INPUTS)), st.randoms(use_true_random=False))
def test_valid_requests_in_any_encoding_are_the_same_request(infno: str, rng: random.Random) -> None:
    env = envelope_dict(infno, valid_input(infno))
    decoded = protocol.decode_request_envelope(loose_packb(_shuffled(env, rng), rng))
    assert decoded == protocol.decode_request_envelope(packed(env))
    protocol.parse_input(decoded.infno, decoded.input)
    # A reordered or wider encoding of the same request is the same request for idempotency.
    assert protocol.fingerprint(decoded.infno, decoded.input) == hashlib.sha256(
        spec_canonical([infno, env["input"]])).digest()


def test_request_envelope_round_trip() -> None:
    env = protocol.decode_request_envelope(body_with())
    data = protocol.encode_request_envelope(env)
    assert data == body_with(), "canonical encoding"
    assert protocol.decode_request_envelope(data) == env
    signin = protocol.decode_request_envelope(body_with(infno="9001", sign_no=MISSING, input=valid_input("9001")))
    assert "sign_no" not in msgpack.unpackb(protocol.encode_request_envelope(signin), raw=False)


def response(**changes: Any) -> protocol.ResponseEnvelope:
    fields: dict[str, Any] = {
        "infcode": 0,
        "err_code": "",
        "err_msg": "",
        "msgid": MSGID,
        "inf_refmsgid": "510182202506152306400000000001",
        "respond_time": NOW_MS + 3,
        "output": {"setl_id": "S1", "amount_fen": 5},
        "warnings": ("PERSON_DAY_NEAR_LIMIT",),
    }
    fields.update(changes)
    return protocol.ResponseEnvelope(**fields)


def test_response_envelope_round_trip_and_layout() -> None:
    env = response()
    data = protocol.encode_response_envelope(env)
    assert protocol.decode_response_envelope(data) == env
    assert list(msgpack.unpackb(data, raw=False)) == sorted(
        ["infcode", "err_code", "err_msg", "msgid", "inf_refmsgid", "respond_time", "output", "warnings"]
    )


def test_error_response_leaves_out_msgid_and_output() -> None:
    env = response(infcode=-2, err_code="MALFORMED_FRAME", err_msg="bad", msgid=None, output=None, warnings=())
    decoded = msgpack.unpackb(protocol.encode_response_envelope(env), raw=False)
    assert set(decoded) == {"infcode", "err_code", "err_msg", "inf_refmsgid", "respond_time", "warnings"}
    assert decoded["warnings"] == []
    assert protocol.decode_response_envelope(protocol.encode_response_envelope(env)) == env


@pytest.mark.parametrize(
    "field",
    ["infcode", "err_code", "err_msg", "inf_refmsgid", "respond_time", "warnings"],
)
def test_response_required_fields(field: str) -> None:
    data = msgpack.unpackb(protocol.encode_response_envelope(response()), raw=False)
    del data[field]
    with pytest.raises(ProtocolError) as caught:
        protocol.decode_response_envelope(packed(data))
    assert caught.value.code is ErrCode.MALFORMED_ENVELOPE


@pytest.mark.parametrize(
    ("field", "value"),
    [("infcode", True), ("infcode", "0"), ("warnings", [1]), ("output", []), ("msgid", 5), ("respond_time", 1.0)],
)
def test_response_mistyped_fields(field: str, value: Any) -> None:
    data = msgpack.unpackb(protocol.encode_response_envelope(response()), raw=False)
    data[field] = value
    with pytest.raises(ProtocolError):
        protocol.decode_response_envelope(packed(data))


@pytest.mark.parametrize(
    ("inf_time", "fresh"),
    [
        (NOW_MS, True),
        (NOW_MS - 24 * 3600 * 1000, True),
        (NOW_MS - 24 * 3600 * 1000 - 1, False),
        (NOW_MS + 300_000, True),
        (NOW_MS + 300_001, False),
        (0, False),
    ],
)
def test_check_fresh(inf_time: int, fresh: bool) -> None:
    if fresh:
        protocol.check_fresh(inf_time, NOW_MS)
        return
    with pytest.raises(ProtocolError) as caught:
        protocol.check_fresh(inf_time, NOW_MS)
    assert caught.value.code is ErrCode.STALE_REQUEST
