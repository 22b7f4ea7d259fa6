"""Key agreement from both sides, and the terminal's whole sign-in / request / answer cycle."""

from __future__ import annotations

import dataclasses

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

import protocol
from protocol import ErrCode, ProtocolError
from protocol_builders import (
    ADMDVS,
    CARD,
    CARD_MASTER_KEY,
    DEV_NO,
    INSTITUTION_CODE,
    GATEWAY_KEY,
    GATEWAY_KEYS,
    NOW_MS,
    OPTER,
    TERMINAL_KEY,
    ed25519,
    x25519,
)


def test_session_key_agrees_from_both_sides() -> None:
    terminal, gateway = x25519("t"), x25519("g")
    t_pub, g_pub = protocol.x25519_public_raw(terminal), protocol.x25519_public_raw(gateway)
    key_t = protocol.session_key(terminal, g_pub, "SN-1")
    key_g = protocol.session_key(gateway, t_pub, "SN-1")
    assert key_t == key_g and len(key_t) == 32
    assert protocol.session_key(terminal, g_pub, "SN-2") != key_t, "sign_no is the salt"
    assert protocol.session_key(x25519("other"), g_pub, "SN-1") != key_t


@pytest.mark.parametrize("peer", [bytes(32), b"\x01" + bytes(31), b"\x00" * 31])
def test_session_key_refuses_unusable_peer_keys(peer: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        protocol.session_key(x25519("t"), peer, "SN-1")
    assert caught.value.code is ErrCode.MALFORMED_INPUT


def test_msgid_helper_uses_shanghai_time() -> None:
    # 2025-06-15 15:06:40 UTC is 23:06:40 in Asia/Shanghai.
    assert protocol.msgid(INSTITUTION_CODE, NOW_MS, 7) == INSTITUTION_CODE + "20250615230640" + "0007"
    # 16:00 UTC on Dec 31 is already the new year in Shanghai.
    assert protocol.msgid(INSTITUTION_CODE, 1_735_660_800_000, 12345)[12:] == "20250101000000" + "2345"


def new_terminal(**changes: object) -> protocol.TerminalSession:
    terminal = protocol.TerminalSession(DEV_NO, INSTITUTION_CODE, ADMDVS, OPTER, "1", TERMINAL_KEY, GATEWAY_KEYS)
    return dataclasses.replace(terminal, **changes)


def gateway_answers_signin(request: bytes, sign_no: str = "SN-42") -> tuple[bytes, bytes]:
    """What the gateway does with a 9001, with this package alone; returns (answer, session key)."""
    frame = protocol.decode_frame(request)
    assert frame.auth == "sig" and frame.key_id == DEV_NO
    assert protocol.verify_sig(TERMINAL_KEY.public_key(), protocol.REQ_DOMAIN, frame.body, frame.tag)
    env = protocol.decode_request_envelope(frame.body)
    typed = protocol.parse_input(env.infno, env.input)
    assert isinstance(typed, protocol.SignInInput) and env.sign_no is None
    ephemeral = x25519("gateway-ephemeral")
    key = protocol.session_key(ephemeral, typed.x25519_pub, sign_no)
    output = {"sign_no": sign_no, "sign_time": NOW_MS, "x25519_pub": protocol.x25519_public_raw(ephemeral),
              "session_expires": NOW_MS + 43_200_000}
    answer = protocol.ResponseEnvelope(0, "", "", env.msgid, "510182202506152306400000000001", NOW_MS, output, ())
    return protocol.seal_response(GATEWAY_KEY, answer), key


def test_full_cycle() -> None:
    terminal = new_terminal()
    request = terminal.signin_frame(protocol.msgid(INSTITUTION_CODE, NOW_MS, 1), NOW_MS)
    answer, gateway_key = gateway_answers_signin(request)
    env = terminal.on_signin_answer(answer)
    assert env.infcode == 0 and terminal.sign_no == "SN-42" and terminal.session_key == gateway_key

    key = protocol.card_key(CARD_MASTER_KEY, CARD["card_no"], CARD["card_sn"])
    msgid = protocol.msgid(INSTITUTION_CODE, NOW_MS, 2)
    input_ = terminal.card_input(key, msgid, "1101", 0, CARD)
    frame = protocol.decode_frame(terminal.request_frame("1101", msgid, input_, NOW_MS))
    assert (frame.auth, frame.key_id) == ("mac", "SN-42")
    assert protocol.verify_mac(gateway_key, protocol.REQ_DOMAIN, frame.body, frame.tag)
    env = protocol.decode_request_envelope(frame.body)
    assert env.sign_no == "SN-42" and env.msgid == msgid
    cert = protocol.parse_input("1101", env.input).cert
    assert protocol.verify_card_mac(key, msgid, "1101", INSTITUTION_CODE, 0, cert.psn_no, cert.insutype,
                                    cert.insuplc_admdvs, cert.card_mac)


def test_signin_with_given_ephemeral_key_is_deterministic() -> None:
    ephemeral = x25519("fixed")
    first = new_terminal().signin_frame(protocol.msgid(INSTITUTION_CODE, NOW_MS, 1), NOW_MS, ephemeral)
    second = new_terminal().signin_frame(protocol.msgid(INSTITUTION_CODE, NOW_MS, 1), NOW_MS, ephemeral)
    assert first == second, "Ed25519 signatures are deterministic"


def test_rejected_signin_leaves_no_session() -> None:
    terminal = new_terminal()
    terminal.signin_frame(protocol.msgid(INSTITUTION_CODE, NOW_MS, 1), NOW_MS)
    refusal = protocol.ResponseEnvelope(-2, "UNKNOWN_TERMINAL", "no", None, "5" * 30, NOW_MS, None, ())
    env = terminal.on_signin_answer(protocol.seal_response(GATEWAY_KEY, refusal))
    assert env.err_code == "UNKNOWN_TERMINAL" and terminal.sign_no is None
    with pytest.raises(RuntimeError):
        terminal.request_frame("9002", protocol.msgid(INSTITUTION_CODE, NOW_MS, 2), {}, NOW_MS)


def test_answers_signed_by_unknown_or_wrong_keys_are_refused() -> None:
    terminal = new_terminal()
    request = terminal.signin_frame(protocol.msgid(INSTITUTION_CODE, NOW_MS, 1), NOW_MS)
    answer, _ = gateway_answers_signin(request)
    impostor = ed25519("impostor")
    forged_frame = protocol.decode_frame(answer)
    forged = protocol.encode_frame(dataclasses.replace(
        forged_frame, tag=protocol.sign(impostor, protocol.RESP_DOMAIN, forged_frame.body)))
    for bad in (forged, protocol.encode_frame(dataclasses.replace(forged_frame, key_id="gw-0000000000000000")),
                protocol.encode_frame(dataclasses.replace(forged_frame, auth="mac", tag=bytes(32)))):
        with pytest.raises(ProtocolError) as caught:
            terminal.on_signin_answer(bad)
        assert caught.value.code is ErrCode.BAD_SIGNATURE
        with pytest.raises(ProtocolError) as caught:
            terminal.verify_answer(bad)
        assert caught.value.code is ErrCode.BAD_SIGNATURE
    assert terminal.sign_no is None
    assert terminal.verify_answer(answer).infcode == 0
    assert protocol.verify_answer(answer, GATEWAY_KEYS).output["sign_no"] == "SN-42"


def test_verify_answer_needs_keys() -> None:
    with pytest.raises(ProtocolError) as caught:
        new_terminal(gateway_public_keys=None).verify_answer(b"")
    assert caught.value.code is ErrCode.BAD_SIGNATURE


def test_end_session() -> None:
    terminal = new_terminal()
    answer, _ = gateway_answers_signin(terminal.signin_frame(protocol.msgid(INSTITUTION_CODE, NOW_MS, 1), NOW_MS))
    terminal.on_signin_answer(answer)
    terminal.end_session()
    assert terminal.sign_no is None and terminal.session_key is None


def test_answer_without_pending_signin_is_malformed() -> None:
    terminal = new_terminal()
    answer, _ = gateway_answers_signin(new_terminal().signin_frame(protocol.msgid(INSTITUTION_CODE, NOW_MS, 1), NOW_MS))
    with pytest.raises(ProtocolError) as caught:
        terminal.on_signin_answer(answer)
    assert caught.value.code is ErrCode.MALFORMED_ENVELOPE


def test_random_ephemeral_keys_differ() -> None:
    first = protocol.decode_frame(new_terminal().signin_frame(protocol.msgid(INSTITUTION_CODE, NOW_MS, 1), NOW_MS))
    second = protocol.decode_frame(new_terminal().signin_frame(protocol.msgid(INSTITUTION_CODE, NOW_MS, 1), NOW_MS))
    assert first.body != second.body
    assert isinstance(X25519PrivateKey.generate(), X25519PrivateKey)
