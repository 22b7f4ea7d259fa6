"""The Core: SPEC section 5's precedence pipeline around the handlers, signed answers, records.

One writer, no locks, no I/O, no clock: the server calls `handle_tx(body, now_ms)` synchronously
between awaits and journals the returned record. Order of the pipeline (the first failing step
answers): frame → envelope → institution known → mdtrtarea_admvs → authentication → freshness →
reversed msgid / idempotent replay / MSGID_REUSED → operator suspension → infno vs institution →
input → credential → person → business rules (the last three inside the handlers).

Inside authentication: a 9001 must be "sig" (else BAD_SIGNATURE); its key_id must be an enrolled
terminal of this institution equal to the envelope's dev_no (else UNKNOWN_TERMINAL); then the
signature (BAD_SIGNATURE); then revocation (TERMINAL_REVOKED). Any other infno must be "mac" (a
"sig" frame answers BAD_MAC: only a session MAC authenticates it); then the session named by
key_id (SESSION_UNKNOWN / SESSION_EXPIRED), the MAC (BAD_MAC), sign_no equal to key_id and dev_no /
opter / fixmedins_code equal to the session's (SESSION_MISMATCH), revocation (TERMINAL_REVOKED).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.core.admin import AdminMixin
from gateway.core.clock import local_stamp
from gateway.core.config import CoreConfig, Rejection, TxFacts, TxResult, outcome_of
from gateway.core.handlers import HANDLERS, Answer, Request
from gateway.core.keyring import KeyRing
from gateway.core.refid import RefidAllocator
from gateway.core.registry import Institution, Registry, Secrets
from gateway.core.sessions import Session, SessionTable
from gateway.core.state import State
from protocol import (
    AUTH_MAC, AUTH_SIG, REQ_DOMAIN, ErrCode, Frame, ProtocolError, RequestEnvelope,
    check_fresh, decode_frame, decode_request_envelope, encode_response_fields, fingerprint,
    parse_request_input,
    verify_mac, verify_sig,
)

SIGN_IN = "9001"
SIGN_OUT = "9002"
PHARMACY_INFNOS = frozenset({"2101", "2102", "2103"})
CLINIC_INFNOS = frozenset({"2206", "2207", "2208"})
SUSPENDABLE_INFNOS = frozenset({"2101", "2102", "2206", "2207"})


class _Trace:
    """What is known about a request so far, for the error answer and the metrics facts."""

    __slots__ = ("now_ms", "msgid", "infno", "institution")

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms
        self.msgid: str | None = None
        self.infno = ""
        self.institution: Institution | None = None


class Core(AdminMixin):
    """The deterministic business core (see module docstring and docs/design.md)."""

    def __init__(self, config: CoreConfig, registry: Registry, secrets: Secrets, keyring: KeyRing,
                 random_bytes: Callable[[int], bytes]) -> None:
        self.config = config
        self.keyring = keyring
        self.random_bytes = random_bytes
        self.master_keys = dict(secrets.card_master_keys)
        self.state = State(config, registry, keyring)
        self.sessions = SessionTable(config.sessions_max)
        self.refids = RefidAllocator(config.refid_block)
        self._issuer_cache: tuple[int, dict[str, Ed25519PublicKey]] = (-1, {})

    # -- public surface ------------------------------------------------------------------------

    @property
    def last_op(self) -> int:
        """Op number of the newest record produced or replayed."""
        return self.state.last_op

    @property
    def sessions_active(self) -> int:
        """Sessions currently in the table."""
        return len(self.sessions)

    def public_keys(self) -> list[dict[str, str]]:
        """The GET /fsi/v1/keys list."""
        return self.keyring.public_keys()

    @property
    def issuer_keys(self) -> dict[str, Ed25519PublicKey]:
        """E-voucher issuer keys as key objects (built once per overlay version)."""
        issuers = self.state.overlay.voucher_issuers
        if self._issuer_cache[0] != id(issuers):
            self._issuer_cache = (id(issuers), {kid: Ed25519PublicKey.from_public_bytes(raw)
                                                for kid, raw in issuers.items()})
        return self._issuer_cache[1]

    def handle_tx(self, body: bytes, now_ms: int) -> TxResult:
        """Answer one POST /fsi/v1/tx body at gateway time `now_ms` (see TxResult for the contract)."""
        trace = _Trace(now_ms)
        try:
            return self._pipeline(body, trace)
        except (ProtocolError, Rejection) as exc:
            return self._error_result(exc.code, exc.msg, trace)

    def error_response(self, code: ErrCode, now_ms: int, msgid: str | None = None) -> bytes:
        """A signed error Frame for errors the server raises itself (OVERLOADED, DRAINING ...)."""
        serial = self.refids.take()
        return self._seal(code, code.wire, msgid, None, (), now_ms, serial)

    def replay(self, record: dict[str, Any]) -> None:
        """Recovery: re-apply one journaled record exactly as the live path applied it."""
        self.state.commit(record)
        self.refids.restart_from(self.state.refid_reserved_to)

    def snapshot(self) -> dict[str, Any]:
        """A msgpack-able copy of all durable state."""
        return self.state.snapshot()

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Load a snapshot into this (fresh) core."""
        self.state.restore(snapshot)
        self.refids.restart_from(self.state.refid_reserved_to)

    @classmethod
    def from_snapshot(cls, snapshot: dict[str, Any], **kwargs: Any) -> Core:
        """Build a core from the registry/secrets/keyring in kwargs and load `snapshot`."""
        core = cls(**kwargs)
        core.restore(snapshot)
        return core

    def setl_id(self, number: int) -> str:
        """The n-th setl_id: gateway admdvs + "1" + 13 digits, so ids sort in allocation order."""
        assert 0 < number < 10**13
        return f"{self.config.admdvs}1{number:013d}"

    def mdtrt_id(self, number: int) -> str:
        """The n-th mdtrt_id (one visit per settlement at the till)."""
        assert 0 < number < 10**13
        return f"{self.config.admdvs}2{number:013d}"

    def new_sign_no(self) -> str:
        """A fresh random sign_no not in the session table."""
        while True:
            sign_no = self.random_bytes(16).hex()
            if self.sessions.get(sign_no) is None:
                return sign_no

    # -- the pipeline --------------------------------------------------------------------------

    def _pipeline(self, body: bytes, trace: _Trace) -> TxResult:
        frame = decode_frame(body)
        env = decode_request_envelope(frame.body)
        trace.msgid, trace.infno = env.msgid, env.infno
        institution = self.state.overlay.institutions.get(env.fixmedins_code)
        if institution is None:
            raise Rejection(ErrCode.INSTITUTION_UNKNOWN, f"institution {env.fixmedins_code} is not registered")
        trace.institution = institution
        if env.mdtrtarea_admvs != institution.admdvs:
            raise Rejection(ErrCode.MALFORMED_ENVELOPE, "mdtrtarea_admvs: not the institution's admdvs")
        session = self._authenticate(frame, env, institution, trace.now_ms)
        check_fresh(env.inf_time, trace.now_ms)
        print_ = fingerprint(env.infno, env.input)
        replayed = self._idempotent(env, print_, trace)
        if replayed is not None:
            return replayed
        self._check_institution(env, institution)
        typed = parse_request_input(env)
        req = Request(env, institution, session, typed, print_, trace.now_ms)
        return self._answer(HANDLERS[env.infno](self, req), trace)

    def _authenticate(self, frame: Frame, env: RequestEnvelope, institution: Institution,
                      now_ms: int) -> Session | None:
        if env.infno == SIGN_IN:
            self._authenticate_sig(frame, env, institution)
            return None
        if frame.auth != AUTH_MAC:
            raise Rejection(ErrCode.BAD_MAC, "only sign-in is signed; other requests carry a session MAC")
        session = self.sessions.get(frame.key_id)
        if session is None:
            raise Rejection(ErrCode.SESSION_UNKNOWN, "no such session; sign in again")
        if now_ms >= session.expires_ms:
            raise Rejection(ErrCode.SESSION_EXPIRED, "the session expired; sign in again")
        if not verify_mac(session.key, REQ_DOMAIN, frame.body, frame.tag):
            raise Rejection(ErrCode.BAD_MAC, "bad MAC")
        if env.sign_no != frame.key_id:
            raise Rejection(ErrCode.SESSION_MISMATCH, "sign_no differs from the frame's key_id")
        if (env.dev_no, env.opter, env.fixmedins_code) != (session.dev_no, session.opter, session.institution):
            raise Rejection(ErrCode.SESSION_MISMATCH, "dev_no, opter or fixmedins_code differ from the session's")
        self._check_not_revoked(env.dev_no)
        return session

    def _authenticate_sig(self, frame: Frame, env: RequestEnvelope, institution: Institution) -> None:
        if frame.auth != AUTH_SIG:
            raise Rejection(ErrCode.BAD_SIGNATURE, "sign-in must be signed by the terminal key")
        terminal = self.state.overlay.terminals.get(frame.key_id)
        if terminal is None or terminal.institution != institution.code or frame.key_id != env.dev_no:
            raise Rejection(ErrCode.UNKNOWN_TERMINAL, "the terminal is not enrolled for this institution")
        if not verify_sig(terminal.public_key, REQ_DOMAIN, frame.body, frame.tag):
            raise Rejection(ErrCode.BAD_SIGNATURE, "bad signature")
        self._check_not_revoked(terminal.dev_no)

    def _check_not_revoked(self, dev_no: str) -> None:
        terminal = self.state.overlay.terminals.get(dev_no)
        if terminal is None or terminal.status == "revoked":
            raise Rejection(ErrCode.TERMINAL_REVOKED, "the terminal is revoked")

    def _idempotent(self, env: RequestEnvelope, print_: bytes, trace: _Trace) -> TxResult | None:
        if env.msgid in self.state.tombstones:
            raise Rejection(ErrCode.ORIGINAL_REVERSED, "this msgid was reversed")
        entry = self.state.idempotency.get(env.msgid)
        if entry is None:
            return None
        if entry.fingerprint != print_:
            raise Rejection(ErrCode.MSGID_REUSED, "this msgid was used for another request")
        facts = TxFacts(infno=env.infno, outcome="ok", idempotent_replay=True, **self._place_facts(trace))
        return TxResult(200, entry.response, None, entry.op, facts)

    def _check_institution(self, env: RequestEnvelope, institution: Institution) -> None:
        if env.infno != SIGN_OUT and self.state.overlay.operator_suspended(env.opter):
            raise Rejection(ErrCode.OPERATOR_SUSPENDED, f"operator {env.opter} is suspended")
        if env.infno not in HANDLERS:
            raise Rejection(ErrCode.UNSUPPORTED_INFNO, f"infno {env.infno!r} is not supported")
        pharmacy = institution.kind == "pharmacy"
        if (env.infno in PHARMACY_INFNOS and not pharmacy) or (env.infno in CLINIC_INFNOS and pharmacy):
            raise Rejection(ErrCode.WRONG_INSTITUTION_KIND, f"infno {env.infno} is not for a {institution.kind}")
        if env.infno in SUSPENDABLE_INFNOS and institution.status == "suspended":
            raise Rejection(ErrCode.INSTITUTION_SUSPENDED, "the institution is suspended")

    # -- answers -------------------------------------------------------------------------------

    def _place_facts(self, trace: _Trace) -> dict[str, str]:
        institution = trace.institution
        if institution is None:
            return {"msgid": trace.msgid or ""}
        return {"kind": institution.kind, "grade": institution.grade or "", "msgid": trace.msgid or ""}

    def _seal(self, code: ErrCode | None, msg: str, msgid: str | None, output: dict[str, Any] | None,
              warnings: tuple[str, ...], now_ms: int, serial: int) -> bytes:
        body = encode_response_fields(
            infcode=0 if code is None else code.infcode, err_code="" if code is None else code.wire,
            err_msg=msg, msgid=msgid, inf_refmsgid=f"{self.config.admdvs}{local_stamp(now_ms)}{serial:010d}",
            respond_time=now_ms, output=output, warnings=warnings)
        return self.keyring.seal(body)

    def _answer(self, answer: Answer, trace: _Trace) -> TxResult:
        serial = self.refids.take()
        response = self._seal(None, "", trace.msgid, answer.output, answer.warnings, trace.now_ms, serial)
        record = None
        if answer.record is not None:
            record = {"op": self.state.last_op + 1, **answer.record, "response": response}
            self.refids.attach(record)
            self.state.commit(record)
        institution = trace.institution
        assert institution is not None   # an answer is only reached past the institution step
        # _place_facts inlined: this is every settlement's path, and it saves building a dict.
        facts = TxFacts(infno=trace.infno, outcome="ok", warnings=answer.warnings, kind=institution.kind,
                        grade=institution.grade or "", msgid=trace.msgid or "", **answer.facts)
        return self._finish(200, response, record, serial, 0, facts)

    def _error_result(self, code: ErrCode, msg: str, trace: _Trace) -> TxResult:
        serial = self.refids.take()
        response = self._seal(code, msg, trace.msgid, None, (), trace.now_ms, serial)
        facts = TxFacts(infno=trace.infno, outcome=outcome_of(code), err_code=code.wire, **self._place_facts(trace))
        return self._finish(code.http_status, response, None, serial, 0, facts)

    def _finish(self, status: int, response: bytes, record: dict[str, Any] | None, serial: int, wait_op: int,
                facts: TxFacts) -> TxResult:
        if record is None and self.refids.unjournaled:
            record = {"op": self.state.last_op + 1, "t": "refid"}
            self.refids.attach(record)
            self.state.commit(record)
        wait_op = max(wait_op, self.refids.wait_op(serial))
        return TxResult(status, response, record, wait_op, facts)
