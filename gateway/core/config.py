"""Configuration, decisions and result codes of the core (the types the shells code against)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

from protocol import ErrCode


@dataclasses.dataclass(frozen=True)
class CoreConfig:
    """Limits and identity of one core. Every table has a cap with a name."""

    admdvs: str                                  # the gateway's own region: inf_refmsgid/setl_id prefix
    session_ttl_s: int = 43_200
    sessions_max: int = 200_000
    idempotency_records_max: int = 5_000_000
    tombstones_max: int = 1_000_000
    used_vouchers_max: int = 2_000_000
    settlements_max: int = 20_000_000
    settlement_days_kept: int = 62               # reconciliation look-back; covers this month and last
    refid_block: int = 100_000                   # inf_refmsgid serials reserved per `refid` record

    def __post_init__(self) -> None:
        assert len(self.admdvs) == 6 and self.admdvs.isdigit(), "admdvs must be 6 digits"
        assert self.session_ttl_s > 0 and self.refid_block >= 2


# TxFacts and TxResult are NamedTuples rather than frozen dataclasses: just as immutable, but built
# by one tuple allocation instead of one object.__setattr__ per field (one of each per request).
class TxFacts(NamedTuple):
    """What metrics and logs may know about one transaction.

    Metrics never label by `msgid` (it is there for log correlation only); nothing here names a
    person or a card.
    """

    infno: str = ""
    msgid: str = ""                              # "" when the envelope did not decode
    outcome: str = "error"                       # "ok" | "rejected" | "error"
    err_code: str = ""
    kind: str = ""                               # institution kind, when known
    grade: str = ""                              # pharmacy grade, when known
    cert_type: str = ""                          # "01" e-voucher | "03" card, on settlements
    medfee_fen: int = 0
    fund_fen: int = 0
    cash_fen: int = 0
    # Account payment and the own-pay parts (SPEC 13 amount parts).
    acct_fen: int = 0
    fulamt_fen: int = 0
    preselfpay_fen: int = 0
    overlmt_fen: int = 0
    cut_reasons: tuple[str, ...] = ()            # one per cut line of a settlement
    bound_by: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    idempotent_replay: bool = False


class Decision(NamedTuple):
    """What the core decided about one request: an answer to seal, and what it changes.

    code: None for success, else the result code of a refusal (`msg` says why).
    output, warnings: the answer's fields (output None on refusals).
    record: the typed record to commit once the answer is sealed (None: nothing durable changes).
    stored: an idempotent replay's stored answer bytes, sent as they are (nothing else is sealed).
    read_op: the newest op the decision read; the answer waits until that op is durable, so no
        answer reports state a crash could roll back.
    session_opened / session_ended: the volatile session-table change of 9001 / 9002.
    """

    code: ErrCode | None
    msg: str
    msgid: str | None
    output: dict[str, Any] | None
    warnings: tuple[str, ...]
    record: Any
    facts: TxFacts
    read_op: int
    stored: bytes | None = None
    session_opened: Any = None
    session_ended: str | None = None


class Rejection(Exception):
    """A refusal raised by a rule deep inside `decide`; `decide` returns it as a Decision's code.

    It never leaves the core: callers of `decide` see result codes, not exceptions. `evidence`: what
    the rule knows that a supervision alert raised by this refusal should show (plain values; see
    gateway/core/supervision.py `refusal_alert`), never part of the answer.
    """

    def __init__(self, code: ErrCode, msg: str, evidence: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{code.wire}: {msg}")
        self.code = code
        self.msg = msg
        self.evidence = evidence


def outcome_of(code: ErrCode | None) -> str:
    """The metrics outcome word for an answer code (None = success)."""
    if code is None:
        return "ok"
    return "rejected" if code.infcode == -2 else "error"
