"""The Core: SPEC section 5's precedence pipeline around the handlers; decide and commit.

One writer, no locks, no I/O, no clock, no keys: the shell calls `decide(body, now_ms)`
synchronously between awaits, seals the Decision's answer (gateway/sealer.py), commits its record
with `commit` (the one function that changes durable state; replay uses it too) and journals it.
Protocol decoding and tag verification are `protocol`'s; the pipeline looks up what they need
(institution, terminal key, session key) and applies SPEC's precedence. Order of the pipeline (the first failing step
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

from collections.abc import Callable, Mapping
from typing import Any

from gateway.core.accounts import OpeningBalances
from gateway.core.admin import AdminMixin
from gateway.core.catalogue import Catalogue
from gateway.core.config import CoreConfig, Decision, Rejection, TxFacts, outcome_of
from gateway.core.handlers import HANDLERS, Answer, Request, View
from gateway.core.keys import PublishedKeys
from gateway.core.records import Record
from gateway.core.registry import Institution, Registry, Secrets
from gateway.core.sessions import Session, SessionTable
from gateway.core.state import State
from gateway.core.supervision import refusal_alert
from protocol import (
    AUTH_MAC, AUTH_SIG, REQ_DOMAIN, ErrCode, Frame, ProtocolError, RequestEnvelope,
    check_fresh, decode_frame, decode_request_envelope, fingerprint, parse_request_input,
    verify_mac, verify_sig,
)

SIGN_IN = "9001"
SIGN_OUT = "9002"
PHARMACY_INFNOS = frozenset({"2101", "2102", "2103"})
CLINIC_INFNOS = frozenset({"2206", "2207", "2208"})
SUSPENDABLE_INFNOS = frozenset({"2101", "2102", "2206", "2207"})


class _Trace:
    """What is known about a request so far, for the error answer and the metrics facts."""

    __slots__ = ("now_ms", "msgid", "infno", "institution", "read_op", "env")

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms
        self.msgid: str | None = None
        self.infno = ""
        self.institution: Institution | None = None
        self.read_op = 0                 # 0 until the pipeline first reads state
        self.env: RequestEnvelope | None = None


class Core(AdminMixin):
    """The deterministic business core (see module docstring and docs/design.md)."""

    def __init__(self, config: CoreConfig, registry: Registry, secrets: Secrets, active_public_raw: bytes,
                 random_bytes: Callable[[int], bytes], catalogue: Catalogue | None = None,
                 accounts: OpeningBalances | None = None) -> None:
        """`active_public_raw`: the public key the shell signs with; `random_bytes`: injected entropy;
        `catalogue`: this core's own copy of the loaded catalogue (None: off; see Catalogue.copy);
        `accounts`: the loaded accounts file (None: off; shared as it is, it never changes)."""
        self.config = config
        self.state = State(config, registry, PublishedKeys(active_public_raw), catalogue, accounts)
        self.sessions = SessionTable(config.sessions_max)
        self.view = View(self.state, config, self.sessions, dict(secrets.card_master_keys), random_bytes)

    # -- public surface ------------------------------------------------------------------------

    @property
    def last_op(self) -> int:
        """Op number of the newest record committed (live or replayed)."""
        return self.state.last_op

    @property
    def sessions_active(self) -> int:
        """Sessions currently in the table."""
        return len(self.sessions)

    @property
    def catalogue_rows(self) -> int:
        """Catalogue rows held now, upserts included (0 when the catalogue is off)."""
        catalogue = self.state.catalogue
        return 0 if catalogue is None else catalogue.rows_count

    @property
    def keys(self) -> PublishedKeys:
        """The published response-signing keys (GET /fsi/v1/keys)."""
        return self.state.keys

    def public_keys(self) -> list[dict[str, str]]:
        """The GET /fsi/v1/keys list."""
        return self.state.keys.public_keys()

    def decide(self, body: bytes, now_ms: int) -> Decision:
        """Decide one POST /fsi/v1/tx body at gateway time `now_ms`; changes nothing (see Decision)."""
        trace = _Trace(now_ms)
        try:
            return self._pipeline(body, trace)
        except ProtocolError as exc:
            return self._refusal(exc.code, exc.msg, trace)
        except Rejection as exc:
            return self._refusal(exc.code, exc.msg, trace, exc.evidence)

    def commit(self, record: Record) -> None:
        """Apply one record: the only change of durable state, live and in replay alike."""
        self.state.commit(record)

    def apply_sessions(self, decision: Decision) -> None:
        """Apply a decision's session change (sessions are volatile: never journaled)."""
        if decision.session_opened is not None:
            self.sessions.open(decision.session_opened)
        if decision.session_ended is not None:
            self.sessions.end(decision.session_ended)

    def snapshot(self) -> dict[str, Any]:
        """A msgpack-able copy of all durable state."""
        return self.state.snapshot()

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Load a snapshot into this (fresh) core."""
        self.state.restore(snapshot)

    def rebuild(self, snapshot: dict[str, Any] | None, records: list[Record], sessions_from: Core | None) -> None:
        """Rebuild this fresh core from durable state: a snapshot, then the records after it.

        `sessions_from`: a core whose (volatile) sessions carry over, as after a journal failure,
        so terminals need not sign in again.
        """
        assert self.state.last_op == 0
        if snapshot is not None:
            self.restore(snapshot)
        for record in records:
            self.commit(record)
        if sessions_from is not None:
            self.sessions = sessions_from.sessions
            self.view.sessions = self.sessions

    # -- the pipeline --------------------------------------------------------------------------

    def _pipeline(self, body: bytes, trace: _Trace) -> Decision:
        frame = decode_frame(body)
        env = decode_request_envelope(frame.body)
        trace.msgid, trace.infno, trace.env = env.msgid, env.infno, env
        trace.read_op = self.state.last_op
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
        return self._answer(HANDLERS[env.infno](self.view, req), trace)

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

    def _idempotent(self, env: RequestEnvelope, print_: bytes, trace: _Trace) -> Decision | None:
        if env.msgid in self.state.tombstones:
            raise Rejection(ErrCode.ORIGINAL_REVERSED, "this msgid was reversed")
        entry = self.state.idempotency.get(env.msgid)
        if entry is None:
            return None
        if not entry.same_request(print_):
            raise Rejection(ErrCode.MSGID_REUSED, "this msgid was used for another request")
        facts = TxFacts(infno=env.infno, outcome="ok", idempotent_replay=True, **self._place_facts(trace))
        return Decision(None, "", env.msgid, None, (), None, facts, max(trace.read_op, entry.op), entry.response)

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

    def _answer(self, answer: Answer, trace: _Trace) -> Decision:
        institution = trace.institution
        assert institution is not None   # an answer is only reached past the institution step
        # _place_facts inlined: this is every settlement's path, and it saves building a dict.
        facts = TxFacts(infno=trace.infno, outcome="ok", warnings=answer.warnings, kind=institution.kind,
                        grade=institution.grade or "", msgid=trace.msgid or "", **answer.facts)
        return Decision(None, "", trace.msgid, answer.output, answer.warnings, answer.record, facts, trace.read_op,
                        None, answer.session_opened, answer.session_ended)

    def _refusal(self, code: ErrCode, msg: str, trace: _Trace, evidence: Mapping[str, Any] | None = None) -> Decision:
        facts = TxFacts(infno=trace.infno, outcome=outcome_of(code), err_code=code.wire, **self._place_facts(trace))
        # A refusal that raises a supervision alert journals it (the only record a refusal carries).
        alert = refusal_alert(self.state.supervision, code.wire, trace.now_ms, trace.env, trace.institution, evidence)
        return Decision(code, msg, trace.msgid, None, (), alert, facts, trace.read_op)
