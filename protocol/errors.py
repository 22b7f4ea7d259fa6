"""Error codes of the wire contract (SPEC section 8) and the protocol's one exception type."""

from __future__ import annotations

import enum


class ErrCode(enum.Enum):
    """Every err_code the gateway can answer, with its infcode and HTTP status.

    The value is the wire string; `infcode` and `http_status` come from SPEC section 8.
    """

    MALFORMED_FRAME = ("MALFORMED_FRAME", -2, 400)
    MALFORMED_ENVELOPE = ("MALFORMED_ENVELOPE", -2, 400)
    BODY_TOO_LARGE = ("BODY_TOO_LARGE", -2, 413)
    UNSUPPORTED_MEDIA_TYPE = ("UNSUPPORTED_MEDIA_TYPE", -2, 415)
    UNKNOWN_TERMINAL = ("UNKNOWN_TERMINAL", -2, 401)
    BAD_SIGNATURE = ("BAD_SIGNATURE", -2, 401)
    BAD_MAC = ("BAD_MAC", -2, 401)
    SESSION_UNKNOWN = ("SESSION_UNKNOWN", -2, 401)
    SESSION_EXPIRED = ("SESSION_EXPIRED", -2, 401)
    SESSION_MISMATCH = ("SESSION_MISMATCH", -2, 401)
    TERMINAL_REVOKED = ("TERMINAL_REVOKED", -2, 401)
    OVERLOADED = ("OVERLOADED", -1, 429)
    DRAINING = ("DRAINING", -1, 503)
    INTERNAL = ("INTERNAL", -1, 500)
    MALFORMED_INPUT = ("MALFORMED_INPUT", -2, 200)
    AMOUNT_MISMATCH = ("AMOUNT_MISMATCH", -2, 200)
    UNSUPPORTED_INFNO = ("UNSUPPORTED_INFNO", -2, 200)
    STALE_REQUEST = ("STALE_REQUEST", -2, 200)
    MSGID_REUSED = ("MSGID_REUSED", -2, 200)
    ORIGINAL_REVERSED = ("ORIGINAL_REVERSED", -2, 200)
    INSTITUTION_UNKNOWN = ("INSTITUTION_UNKNOWN", -2, 200)
    INSTITUTION_SUSPENDED = ("INSTITUTION_SUSPENDED", -2, 200)
    OPERATOR_SUSPENDED = ("OPERATOR_SUSPENDED", -2, 200)
    WRONG_INSTITUTION_KIND = ("WRONG_INSTITUTION_KIND", -2, 200)
    CREDENTIAL_NOT_ACCEPTED = ("CREDENTIAL_NOT_ACCEPTED", -2, 200)
    VOUCHER_INVALID = ("VOUCHER_INVALID", -2, 200)
    VOUCHER_EXPIRED = ("VOUCHER_EXPIRED", -2, 200)
    VOUCHER_WRONG_INSTITUTION = ("VOUCHER_WRONG_INSTITUTION", -2, 200)
    VOUCHER_ALREADY_USED = ("VOUCHER_ALREADY_USED", -2, 200)
    CARD_INVALID = ("CARD_INVALID", -2, 200)
    CARD_BLOCKED = ("CARD_BLOCKED", -2, 200)
    PERSON_INELIGIBLE = ("PERSON_INELIGIBLE", -2, 200)
    CROSS_PROVINCE_NOT_FILED = ("CROSS_PROVINCE_NOT_FILED", -2, 200)
    SETTLEMENT_NOT_FOUND = ("SETTLEMENT_NOT_FOUND", -2, 200)
    ALREADY_CANCELLED = ("ALREADY_CANCELLED", -2, 200)
    CANCEL_WINDOW_CLOSED = ("CANCEL_WINDOW_CLOSED", -2, 200)
    TRACE_CODE_REUSED = ("TRACE_CODE_REUSED", -2, 200)
    MUTUAL_AID_NOT_AUTHORIZED = ("MUTUAL_AID_NOT_AUTHORIZED", -2, 200)

    def __init__(self, wire: str, infcode: int, http_status: int) -> None:
        self.wire = wire
        self.infcode = infcode
        self.http_status = http_status

    def __str__(self) -> str:
        return self.wire


class ProtocolError(Exception):
    """Raised by every decoder and validator in `protocol` for bad input, and by nothing else.

    Attributes:
        code: the ErrCode the gateway answers with.
        msg: a human-readable reason; for input errors it names the offending field's path.
    """

    def __init__(self, code: ErrCode, msg: str) -> None:
        super().__init__(f"{code.wire}: {msg}")
        self.code = code
        self.msg = msg
