"""Helpers of the SPEC audit tests: requests crafted field by field and their decoded answers."""

from __future__ import annotations

from typing import Any

import msgpack

from core_world import T0_MS, World, card, line
from protocol import REQ_DOMAIN, Frame, decode_frame, decode_response_envelope, encode_frame, mac


DAY_MS = 86_400_000
HOUR_MS = 3_600_000
ERROR_KEYS = {"infcode", "err_code", "err_msg", "inf_refmsgid", "respond_time", "warnings"}
# SPEC section 8, as the contract states it: err_code -> (infcode, HTTP status). The -1 codes'
# statuses are those of their usual answer (OVERLOADED is also 503 at the connection cap).
SPEC8 = {
    **{c: (-2, 400) for c in ("MALFORMED_FRAME", "MALFORMED_ENVELOPE")},
    "BODY_TOO_LARGE": (-2, 413), "UNSUPPORTED_MEDIA_TYPE": (-2, 415),
    **{c: (-2, 401) for c in ("UNKNOWN_TERMINAL", "BAD_SIGNATURE", "BAD_MAC", "SESSION_UNKNOWN",
                              "SESSION_EXPIRED", "SESSION_MISMATCH", "TERMINAL_REVOKED")},
    "OVERLOADED": (-1, 429), "DRAINING": (-1, 503), "INTERNAL": (-1, 500),
    **{c: (-2, 200) for c in (
        "MALFORMED_INPUT", "AMOUNT_MISMATCH", "UNSUPPORTED_INFNO", "STALE_REQUEST", "MSGID_REUSED",
        "ORIGINAL_REVERSED", "INSTITUTION_UNKNOWN", "INSTITUTION_SUSPENDED", "OPERATOR_SUSPENDED",
        "WRONG_INSTITUTION_KIND", "CREDENTIAL_NOT_ACCEPTED", "VOUCHER_INVALID", "VOUCHER_EXPIRED",
        "VOUCHER_WRONG_INSTITUTION", "VOUCHER_ALREADY_USED", "CARD_INVALID", "CARD_BLOCKED",
        "PERSON_INELIGIBLE", "CROSS_PROVINCE_NOT_FILED", "SETTLEMENT_NOT_FOUND", "ALREADY_CANCELLED",
        "CANCEL_WINDOW_CLOSED", "TRACE_CODE_REUSED", "MUTUAL_AID_NOT_AUTHORIZED")},
}


def answer(world: World, data: bytes, now_ms: int = T0_MS):
    result = world.handle_tx(data, now_ms)
    world.keep(result)
    return result.http_status, decode_response_envelope(decode_frame(result.response).body)


def crafted(world: World, term, infno: str, input_: dict[str, Any], now_ms: int = T0_MS, *,
            tag: bytes | None = None, key_id: str | None = None, auth: str = "mac", drop: tuple[str, ...] = (),
            **override: Any) -> bytes:
    """A request frame of `term`'s session with envelope fields overridden or dropped, re-MACed."""
    mid = override.pop("msgid", None) or world.next_msgid(term.fixmedins_code, now_ms)
    body = msgpack.unpackb(decode_frame(term.request_frame(infno, mid, input_, now_ms)).body, raw=False)
    body.update(override)
    for field in drop:
        body.pop(field, None)
    raw = msgpack.packb(body, use_bin_type=True)
    tag = tag if tag is not None else mac(term.session_key, REQ_DOMAIN, raw)
    return encode_frame(Frame(1, auth, key_id if key_id is not None else term.sign_no, raw, tag))


def ok_output(env) -> dict[str, Any]:
    assert env.infcode == 0, (env.err_code, env.err_msg)
    return env.output



def settle_frame(world: World, term, mid: str, fee_fen: int = 1000, infno: str = "2102",
                  who: dict[str, str] | None = None, now_ms: int = T0_MS) -> bytes:
    fields = world.card_fields(term, mid, infno, fee_fen, who or card())
    return term.request_frame(infno, mid, {**fields, "medfee_sumamt": fee_fen, "items": [line("1", fee_fen)]},
                              now_ms)
