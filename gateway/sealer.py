"""The shell's seal: the signing key, inf_refmsgid serials, and decide → seal → commit for one request.

The core decides without keys or bytes out; this module turns a Decision into the signed response
Frame (SPEC section 4: `[1, "sig", kid, body, Ed25519(RESP_DOMAIN + body)]`), places the decision's
record at the next op with the sealed answer inside it (an idempotent retry gets exactly these
bytes back) and commits it. What leaves here is a TxResult: the bytes, the record to journal, and
the op the answer must wait for. Both listeners' shells (data and admin) share the journal side
through gateway.gate.

Private keys live in files owned by the operator; the journal only carries kids and public keys.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.core import Core, Decision, TxFacts
from gateway.core.clock import local_stamp
from gateway.core.records import Record, RefidRecord
from gateway.refids import RefidAllocator
from protocol import AUTH_SIG, RESP_DOMAIN, ErrCode, Frame, encode_frame, encode_response_fields, gateway_kid, limits, public_raw

__all__ = ["KeyRing", "Sealer", "TxResult"]


class KeyRing:
    """The active Ed25519 signing key."""

    def __init__(self, active_private_key: Ed25519PrivateKey) -> None:
        self._active = active_private_key
        self.active_public_raw = public_raw(active_private_key.public_key())
        self.active_kid = gateway_kid(self.active_public_raw)

    def seal(self, body: bytes) -> bytes:
        """Return the response Frame `[1, "sig", kid, body, Ed25519(RESP_DOMAIN + body)]`."""
        tag = self._active.sign(RESP_DOMAIN + body)
        return encode_frame(Frame(limits.FRAME_VERSION, AUTH_SIG, self.active_kid, body, tag))

    def rotate(self, new_private_key: Ed25519PrivateKey) -> None:
        """Sign with `new_private_key` from now on."""
        self._active = new_private_key
        self.active_public_raw = public_raw(new_private_key.public_key())
        self.active_kid = gateway_kid(self.active_public_raw)


# respond_time is a Unix time in ms: msgpack's shortest encoding of it is a uint64 (9 bytes) from
# 1970-02-19 on. The template path is taken only in that range.
_UINT64_MIN = 2**32
_UINT64_LIMIT = 2**64
# inf_refmsgid: admdvs (6) + yyyyMMddHHmmss (14) + serial (10).
_REFID_CHARS = 30


class _FixedAnswer:
    """A response body whose only varying fields are inf_refmsgid and respond_time, pre-encoded.

    The body is encoded once with placeholders; `fill` splices the two values in at their offsets.
    Both have one length on the wire (a 30-character str, a uint64), so the result is exactly the
    canonical encoding of the same fields.
    """

    def __init__(self, head: bytes, middle: bytes, tail: bytes) -> None:
        self.head, self.middle, self.tail = head, middle, tail

    @classmethod
    def of(cls, code: ErrCode, admdvs: str) -> _FixedAnswer | None:
        """The template of a server-raised `code` answer; None if admdvs would not fit the layout."""
        refid = (admdvs + "9" * _REFID_CHARS)[:_REFID_CHARS]
        stamp = _UINT64_MIN + 0x5A5A5A5A
        if len(admdvs) != 6:
            return None
        body = encode_response_fields(infcode=code.infcode, err_code=code.wire, err_msg=code.wire, msgid=None,
                                      inf_refmsgid=refid, respond_time=stamp, output=None, warnings=())
        refid_bytes, stamp_bytes = refid.encode("ascii"), b"\xcf" + stamp.to_bytes(8, "big")
        assert body.count(refid_bytes) == 1 and body.count(stamp_bytes) == 1, body
        refid_at, stamp_at = body.index(refid_bytes), body.index(stamp_bytes) + 1
        assert refid_at < stamp_at
        return cls(body[:refid_at], body[refid_at + _REFID_CHARS:stamp_at], body[stamp_at + 8:])

    def fill(self, refid: bytes, now_ms: int) -> bytes:
        return b"".join((self.head, refid, self.middle, now_ms.to_bytes(8, "big"), self.tail))


# A NamedTuple: one per request, built by one tuple allocation.
class TxResult(NamedTuple):
    """The sealed answer to one POST /fsi/v1/tx body.

    record: journal it (its wire form) before the next await.
    wait_op: await durability of this op before sending (the record's own op, the newest op the
        decision read, or the reservation of the answer's serial, whichever is newest; 0: none).
    """

    http_status: int
    response: bytes
    record: Record | None
    wait_op: int
    facts: TxFacts


class Sealer:
    """Seals the core's decisions for one region (admdvs) with the active key and fresh serials."""

    def __init__(self, admdvs: str, keyring: KeyRing, refid_block: int) -> None:
        self.admdvs = admdvs
        self.keyring = keyring
        self.refids = RefidAllocator(refid_block)
        self._overloaded = _FixedAnswer.of(ErrCode.OVERLOADED, admdvs)

    def follow(self, core: Core, *, after_failure: bool = False) -> None:
        """After recovery or a rebuild: continue serials past every durable reservation of `core`.

        `after_failure`: the journal failed, so reservations it had not made durable are gone;
        serials continue after every one handed out, under a new reservation.
        """
        if after_failure:
            self.refids.forget_reservations()
        self.refids.restart_from(core.state.refid_reserved_to)

    def activate(self, core: Core, new_private_key: Ed25519PrivateKey) -> None:
        """Sign with a rotated key once its rotation record is durable, and publish it as active."""
        self.keyring.rotate(new_private_key)
        core.keys.activate(self.keyring.active_public_raw)

    def answer(self, core: Core, body: bytes, now_ms: int) -> TxResult:
        """Decide, seal and commit one request body (synchronous: between awaits, one writer)."""
        decision = core.decide(body, now_ms)
        if decision.stored is not None:
            return TxResult(200, decision.stored, None, decision.read_op, decision.facts)
        serial = self.refids.take()
        response = self._seal(decision.code, decision.msg, decision.msgid, decision.output, decision.warnings,
                              now_ms, serial)
        record = self._commit(core, decision, response)
        core.apply_sessions(decision)
        wait_op = max(decision.read_op, record.op if record is not None else 0, self.refids.wait_op(serial))
        status = 200 if decision.code is None else decision.code.http_status
        return TxResult(status, response, record, wait_op, decision.facts)

    def commit_record(self, core: Core, record: Record) -> Record:
        """Place an admin record at the next op (with any pending reservation) and commit it."""
        op = core.last_op + 1
        placed = record.sealed(op, self.refids.attach(op))
        core.commit(placed)
        return placed

    def error_response(self, code: ErrCode, now_ms: int, msgid: str | None = None) -> bytes:
        """A signed error Frame for errors the server raises itself (OVERLOADED, DRAINING ...)."""
        return self._seal(code, code.wire, msgid, None, (), now_ms, self.refids.take())

    def overloaded_response(self, now_ms: int) -> bytes:
        """`error_response(OVERLOADED, now_ms)`, byte for byte, from a pre-encoded body (the shed path).

        Only inf_refmsgid and respond_time differ between two such answers, and both have a fixed
        length on the wire, so the body is three constant pieces and two fills; the signature is
        the one cost left.
        """
        template = self._overloaded
        if template is None or not _UINT64_MIN <= now_ms < _UINT64_LIMIT:
            return self.error_response(ErrCode.OVERLOADED, now_ms)
        serial = self.refids.take()
        refid = f"{self.admdvs}{local_stamp(now_ms)}{serial:010d}".encode("ascii")
        return self.keyring.seal(template.fill(refid, now_ms))

    def _commit(self, core: Core, decision: Decision, response: bytes) -> Record | None:
        record = decision.record
        if record is None and not self.refids.unjournaled:
            return None
        op = core.last_op + 1
        refid_to = self.refids.attach(op)
        placed = (record.sealed(op, refid_to, response) if record is not None
                  else RefidRecord(op=op, refid_to=refid_to))
        core.commit(placed)
        return placed

    def _seal(self, code: ErrCode | None, msg: str, msgid: str | None, output: dict[str, Any] | None,
              warnings: tuple[str, ...], now_ms: int, serial: int) -> bytes:
        body = encode_response_fields(
            infcode=0 if code is None else code.infcode, err_code="" if code is None else code.wire,
            err_msg=msg, msgid=msgid, inf_refmsgid=f"{self.admdvs}{local_stamp(now_ms)}{serial:010d}",
            respond_time=now_ms, output=output, warnings=warnings)
        return self.keyring.seal(body)
