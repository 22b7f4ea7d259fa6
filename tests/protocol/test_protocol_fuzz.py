"""Fuzz every decoder: any input either decodes or raises ProtocolError, never anything else.

A map that repeats a key, at any depth, is refused with the error its place calls for (SPEC
section 2). About 16,000 examples in all, derandomized so every run is the same run.
"""

from __future__ import annotations

import base64
import random
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import protocol
from protocol import ErrCode, ProtocolError
from protocol_builders import (
    ADMDVS,
    DEV_NO,
    INSTITUTION_CODE,
    GATEWAY_KEY,
    GATEWAY_KEYS,
    ISSUER_KEY,
    ISSUER_KID,
    MSGID,
    NOW_MS,
    OPTER,
    NOW_S,
    TERMINAL_KEY,
    Pairs,
    envelope_dict,
    loose_packb,
    packed,
    valid_input,
    voucher_token,
    x25519,
)


def fuzz(examples: int) -> settings:
    """Derandomized settings; cheap decoders get more examples than tree-generating tests."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# Trees and mutations are built from one seeded Random: far cheaper to generate than recursive
# strategies, and still replayable (hypothesis reports the seed of a failing example).
LEAF_SAMPLES = ["01", "02", "03", "2102", "9001", "", "20250615", INSTITUTION_CODE, "\n", "\u00e9"]
# Map keys: mostly the contract's own field names, so the parsers get past "missing".
FIELD_NAMES = sorted({name for infno in protocol.INFNOS for name in valid_input(infno)} | set(envelope_dict()) | {
    "feedetl_sn", "med_list_codg", "chrgitm_lv", "otc", "rxno", "cnt", "pric", "det_item_fee_sumamt",
    "bilg_dr_codg", "after",
})


def random_leaf(rng: random.Random) -> Any:
    kind = rng.randrange(9)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice([0, 1, -1, 2**63 - 1, -(2**63), 2**64 - 1, 10**10, 10**10 + 1, rng.randrange(-(2**63), 2**64)])
    if kind == 3:
        return rng.choice([0.0, 1.5, -2.0, float("inf"), float("nan")])
    if kind == 4:
        return "".join(chr(rng.randrange(32, 0x3000)) for _ in range(rng.randrange(8)))
    if kind == 5:
        return rng.randbytes(rng.choice([0, 1, 15, 16, 31, 32, 33, 64]))
    if kind == 6:
        return msgpack.ExtType(rng.randrange(128), rng.randbytes(rng.randrange(4)))
    return rng.choice(LEAF_SAMPLES)


def random_key(rng: random.Random) -> str:
    return rng.choice(FIELD_NAMES) if rng.random() < 0.8 else rng.choice(["", "x", "\u00e9", "items[0]"])


def random_tree(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth >= 4 or roll < 0.5:
        return random_leaf(rng)
    if roll < 0.7:
        return [random_tree(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {random_key(rng): random_tree(rng, depth + 1) for _ in range(rng.randrange(6))}


def random_map(rng: random.Random) -> dict[str, Any]:
    return {random_key(rng): random_tree(rng, 1) for _ in range(rng.randrange(10))}


def packb(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def mutate(data: bytes, rng: random.Random) -> bytes:
    """Flip, drop, insert or truncate a few bytes of `data`."""
    buffer = bytearray(data)
    for _ in range(rng.randrange(1, 5)):
        kind = rng.choice(["flip", "drop", "insert", "truncate"])
        position = rng.randrange(max(len(buffer), 1))
        if kind == "flip" and buffer:
            buffer[position] ^= rng.randrange(1, 256)
        elif kind == "drop" and buffer:
            del buffer[position]
        elif kind == "insert":
            buffer.insert(position, rng.randrange(256))
        else:
            del buffer[position:]
    return bytes(buffer)


def valid_frames() -> list[bytes]:
    body = packed(envelope_dict())
    return [
        protocol.encode_frame(protocol.Frame(1, "sig", "T1", body, protocol.sign(TERMINAL_KEY, protocol.REQ_DOMAIN, body))),
        protocol.encode_frame(protocol.Frame(1, "mac", "S1", body, protocol.mac(b"k" * 32, protocol.REQ_DOMAIN, body))),
        protocol.seal_response(GATEWAY_KEY, protocol.ResponseEnvelope(0, "", "", None, "5" * 30, NOW_MS, {"a": 1}, ())),
    ]


VALID_FRAMES = valid_frames()
# A seeded Random per example: hypothesis picks (and reports) the seed, plain Python does the rest.
RNGS = st.integers(0, 2**32 - 1).map(random.Random)
VALID_BODIES = [packed(envelope_dict(infno, valid_input(infno))) for infno in sorted(protocol.INFNOS)]


def decode_everything(data: bytes) -> None:
    """Run every byte decoder on `data`; each must return or raise ProtocolError."""
    for decoder in (
        protocol.decode_frame,
        protocol.decode_request_envelope,
        protocol.decode_response_envelope,
        lambda raw: protocol.verify_answer(raw, GATEWAY_KEYS),
    ):
        try:
            decoder(data)
        except ProtocolError:
            pass


def parse_everything(infno: str, raw: Any) -> None:
    try:
        protocol.parse_input(infno, raw)
    except ProtocolError:
        pass


@fuzz(3000)
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    decode_everything(data)


@fuzz(2500)
@given(st.sampled_from(VALID_FRAMES), RNGS)
def test_mutated_frames(frame: bytes, rng: random.Random) -> None:
    decode_everything(mutate(frame, rng))


@fuzz(2000)
@given(st.sampled_from(VALID_BODIES), RNGS)
def test_mutated_envelopes(body: bytes, rng: random.Random) -> None:
    decode_everything(mutate(body, rng))


@fuzz(1500)
@given(RNGS)
def test_random_msgpack_trees(rng: random.Random) -> None:
    tree = random_tree(rng) if rng.random() < 0.5 else random_map(rng)
    decode_everything(packb(tree))
    decode_everything(packb([1, "sig", "T1", packb(tree), bytes(64)]))


@fuzz(1500)
@given(st.sampled_from(sorted(protocol.INFNOS)), RNGS)
def test_random_inputs(infno: str, rng: random.Random) -> None:
    parse_everything(infno, random_map(rng))


@fuzz(1500)
@given(st.sampled_from(sorted(protocol.INFNOS)), RNGS)
def test_valid_inputs_with_fields_replaced(infno: str, rng: random.Random) -> None:
    raw = valid_input(infno)
    for _ in range(rng.randrange(1, 3)):
        items = raw.get("items")
        line = items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else None
        target = line if line is not None and rng.random() < 0.5 else raw
        if target:
            target[rng.choice(sorted(target))] = random_tree(rng, 2)
    parse_everything(infno, raw)
    body = packed(envelope_dict(infno, raw))
    if rng.random() < 0.5:
        body = mutate(body, rng)
    try:
        env = protocol.decode_request_envelope(body)
    except ProtocolError:
        return
    parse_everything(env.infno, env.input)


@fuzz(1000)
@given(st.text(max_size=200) | st.just(""), RNGS)
def test_vouchers(text: str, rng: random.Random) -> None:
    choice = rng.randrange(3)
    if choice == 0:
        token = text
    elif choice == 1:
        token = mutate(voucher_token().encode(), rng).decode("ascii", "replace")
    else:
        token = base64.urlsafe_b64encode(packb([1, ISSUER_KID, packb(random_map(rng)), rng.randbytes(64)])).rstrip(b"=").decode()
    try:
        protocol.verify_voucher(token, {ISSUER_KID: ISSUER_KEY.public_key()}, INSTITUTION_CODE, NOW_S)
    except ProtocolError:
        pass


@fuzz(1000)
@given(st.binary(max_size=40), st.text(max_size=20))
def test_session_key_with_any_peer(peer: bytes, sign_no: str) -> None:
    try:
        key = protocol.session_key(x25519("t"), peer, sign_no)
    except ProtocolError:
        return
    assert len(key) == 32


def signin_answer(rng: random.Random) -> bytes:
    """A signed 9001 answer whose output is valid or has random fields put in."""
    output: dict[str, Any] = {
        "sign_no": "S-0001",
        "sign_time": NOW_MS,
        "x25519_pub": protocol.x25519_public_raw(x25519("gateway-ephemeral")),
        "session_expires": NOW_MS + 43_200_000,
    }
    for _ in range(rng.randrange(3)):
        output[rng.choice(sorted(output))] = random_leaf(rng)
    envelope = protocol.ResponseEnvelope(0, "", "", MSGID, "5" * 30, NOW_MS, output, ())
    return protocol.seal_response(GATEWAY_KEY, envelope)


@fuzz(1000)
@given(RNGS)
def test_terminal_reading_signin_answers(rng: random.Random) -> None:
    """The terminal side decodes the gateway's answers too: same rule, ProtocolError or success."""
    session = protocol.TerminalSession(DEV_NO, INSTITUTION_CODE, ADMDVS, OPTER, "1", TERMINAL_KEY, GATEWAY_KEYS)
    session.signin_frame(MSGID, NOW_MS, x25519("terminal-ephemeral"))
    answer = signin_answer(rng)
    if rng.random() < 0.5:
        answer = mutate(answer, rng)
    try:
        session.on_signin_answer(answer)
    except ProtocolError:
        assert session.session_key is None
        return
    assert session.session_key is not None and len(session.session_key) == 32


NOT_BYTES = [None, "", "\x93\x01", 1, 1.5, [], {}, [1, "sig", "T1", b"", b""], bytearray(b"\xc0")]


@pytest.mark.parametrize("value", NOT_BYTES, ids=repr)
def test_decoders_given_other_types(value: Any) -> None:
    """A caller passing the wrong type still gets ProtocolError from every decoder, never a crash."""
    decode_everything(value)
    parse_everything("2102", value)
    try:
        protocol.verify_voucher(value, {ISSUER_KID: ISSUER_KEY.public_key()}, INSTITUTION_CODE, NOW_S)
    except ProtocolError:
        pass


# -- repeated map keys at any depth (SPEC section 2) ----------------------------------------------

EXTRA_TREES = st.recursive(
    st.one_of(st.integers(-5, 5), st.text(max_size=3), st.none()),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)),
    max_leaves=12)


def _map_slots(tree: Any, holder: Any = None, slot: Any = None) -> list[tuple[Any, Any]]:
    """Every map in `tree` as (its holder, its key or index there); the root's holder is None."""
    found = []
    if isinstance(tree, dict):
        found.append((holder, slot))
        for key, value in tree.items():
            found += _map_slots(value, tree, key)
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            found += _map_slots(value, tree, index)
    return found


def _repeat_a_key(tree: Any, data: st.DataObject, root_only: bool = False) -> tuple[Any, str]:
    """`tree` with one map (drawn among all of them) sending one of its keys twice; and that key."""
    holder, slot = (None, None) if root_only else data.draw(st.sampled_from(_map_slots(tree)))
    mapping = tree if holder is None else holder[slot]
    key = data.draw(st.sampled_from(sorted(mapping))) if mapping else "k"
    pairs = list(mapping.items()) or [(key, 0)]
    decoy = (key, data.draw(st.one_of(st.integers(-5, 5), st.text(max_size=3))))
    pairs.insert(data.draw(st.integers(0, len(pairs))), decoy)   # before, between or after the other copy
    repeated = Pairs(pairs)
    if holder is None:
        return repeated, key
    holder[slot] = repeated
    return tree, key


@fuzz(400)
@given(st.sampled_from(sorted(protocol.INFNOS)), EXTRA_TREES, st.booleans(), st.data())
def test_a_repeated_key_in_the_envelope_is_malformed_envelope(infno: str, extra: Any, at_top: bool,
                                                              data: st.DataObject) -> None:
    env = envelope_dict(infno, valid_input(infno), extra={"tree": extra})
    if at_top:  # the envelope's own keys (its input is the next test's)
        tree, key = _repeat_a_key(env, data, root_only=True)
    else:
        env["extra"], key = _repeat_a_key(env["extra"], data)
        tree = env
    with pytest.raises(ProtocolError) as caught:
        protocol.decode_request_envelope(loose_packb(tree, random.Random(data.draw(st.integers(0, 99)))))
    assert caught.value.code is ErrCode.MALFORMED_ENVELOPE
    assert caught.value.msg.endswith(f"repeated key {key!r}"), caught.value.msg


@fuzz(400)
@given(st.sampled_from(sorted(protocol.INFNOS)), EXTRA_TREES, st.data())
def test_a_repeated_key_in_input_is_malformed_input_after_the_envelope(infno: str, extra: Any,
                                                                       data: st.DataObject) -> None:
    input_ = {**valid_input(infno), "extra": extra}
    repeated, key = _repeat_a_key(input_, data)
    body = loose_packb(envelope_dict(infno, repeated), random.Random(data.draw(st.integers(0, 99))))
    env = protocol.decode_request_envelope(body)
    for parse in (lambda: protocol.parse_request_input(env), lambda: protocol.parse_input(env.infno, env.input)):
        with pytest.raises(ProtocolError) as caught:
            parse()
        assert (caught.value.code, caught.value.msg) == (ErrCode.MALFORMED_INPUT, f"input: repeated key {key!r}")
    # Until input validation answers, it is never the request without the repeat (idempotency).
    assert protocol.fingerprint(infno, env.input) != protocol.fingerprint(infno, {**valid_input(infno), "extra": extra})


@fuzz(200)
@given(EXTRA_TREES, st.data())
def test_a_repeated_key_in_an_answer_or_a_frame_is_malformed(extra: Any, data: st.DataObject) -> None:
    answer = {"infcode": 0, "err_code": "", "err_msg": "", "inf_refmsgid": "5" * 30, "respond_time": NOW_MS,
              "output": {"x": extra}, "warnings": []}
    tree, _ = _repeat_a_key(answer, data)
    with pytest.raises(ProtocolError) as caught:
        protocol.decode_response_envelope(loose_packb(tree, random.Random(0)))
    assert caught.value.code is ErrCode.MALFORMED_ENVELOPE
    frame, _ = _repeat_a_key([1, "mac", "S1", {"x": extra}, bytes(32)], data)
    with pytest.raises(ProtocolError) as caught:
        protocol.decode_frame(loose_packb(frame, random.Random(0)))
    assert caught.value.code is ErrCode.MALFORMED_FRAME
