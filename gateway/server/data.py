"""Routes of the data listener (SPEC section 3): transactions, keys, metrics, health, readiness.

A transaction goes: admission (gateway/server/admission.py: admitted, or shed with a signed 429
before it is parsed) → content type → load shedding → `sealer.answer` (decide → seal → commit,
synchronous between awaits, so the core needs no locks) → the commit gate `runtime.make_durable`
(journal, then wait until every op the answer depends on is durable) → the signed answer. Every
answer to POST /fsi/v1/tx is a signed Frame, including the server's own refusals, with one
exception: a cluster standby with no inf_refmsgid serial left (SerialsExhausted) answers a plain
503 with Retry-After, as the router in front does when no gateway is up, rather than sign with a
serial that may be used twice or close the connection unanswered.
"""

from __future__ import annotations

import json
import time

from gateway.journal.errors import JournalFailed, JournalFull
from gateway.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from gateway.server.http import Request, Response, plain_response
from gateway.server.plain import render_response
from gateway.server.logs import log_event
from gateway.refids import SerialsExhausted
from gateway.runtime import Runtime
from protocol import ErrCode

__all__ = ["COMMON_PATHS", "DataApp", "common_route", "frame_response"]

TX_PATH = "/fsi/v1/tx"
MSGPACK = "application/msgpack"
RETRY_AFTER_OVERLOADED_S = 1
RETRY_AFTER_DRAINING_S = 5
RETRY_AFTER_INTERNAL_S = 2
# Served by both listeners (GET only).
COMMON_PATHS = ("/healthz", "/readyz", "/metrics")
_ROUTES = {TX_PATH: "POST", "/fsi/v1/keys": "GET", **{path: "GET" for path in COMMON_PATHS}}


def frame_response(status: int, frame: bytes, retry_after_s: int | None = None,
                   close: bool = False) -> Response:
    """An answer carrying a signed Frame."""
    return Response(status, _frame_headers(retry_after_s), frame, close)


def _frame_headers(retry_after_s: int | None) -> tuple[tuple[str, str], ...]:
    if retry_after_s is None:
        return _FRAME_HEADERS
    return (*_FRAME_HEADERS, ("retry-after", str(retry_after_s)))


_FRAME_HEADERS = (("content-type", MSGPACK),)
_SHED_HEADERS = _frame_headers(RETRY_AFTER_OVERLOADED_S)
# The answer when no serial is left to sign a refusal with (see the module docstring).
_NO_SERIAL_TEXT = "standby: no inf_refmsgid serial to sign a refusal with; retry"
_NO_SERIAL_RETRY_AFTER = ("retry-after", str(RETRY_AFTER_DRAINING_S))


def _unsigned_refusal(close: bool = False) -> Response:
    return plain_response(503, _NO_SERIAL_TEXT, _NO_SERIAL_RETRY_AFTER, close=close)


def _is_msgpack(content_type: str | None) -> bool:
    if content_type is None:
        return False
    return content_type.split(";", 1)[0].strip().lower() == MSGPACK


def _route_refusal(request: Request) -> Response | None:
    """404 for a path the data listener does not serve, 405 for a wrong method; None when routable."""
    expected = _ROUTES.get(request.path)
    if expected is None:
        return plain_response(404, "not found")
    if request.method != expected:
        return plain_response(405, "method not allowed", ("allow", expected))
    return None


def common_route(runtime: Runtime, request: Request) -> Response | None:
    """Answer GET /healthz, /readyz and /metrics (both listeners serve them); None otherwise."""
    if request.method != "GET":
        return None
    if request.path == "/healthz":
        return plain_response(200, "ok")
    if request.path == "/readyz":
        if runtime.standby and runtime.recovered and not runtime.drain.started:
            return plain_response(503, "standby")
        return plain_response(200, "ready") if runtime.ready() else plain_response(503, "not ready")
    if request.path == "/metrics":
        runtime.metrics.sessions_active.set(runtime.core.sessions_active)
        runtime.metrics.catalogue_rows.set(runtime.core.catalogue_rows)
        runtime.metrics.ready.set(1 if runtime.ready() else 0)
        return Response(200, (("content-type", METRICS_CONTENT_TYPE),), runtime.metrics.render())
    return None


class DataApp:
    """The `HttpApp` of the data listener, and the `Shedder` of its admission gate."""

    tx_path = TX_PATH.encode()

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def shed_bytes(self, waited_s: float, close: bool) -> bytes:
        """The whole answer to a shed POST /fsi/v1/tx: 429 with a signed OVERLOADED Frame.

        The cheap path: a pre-encoded body, one signature, the head as h11 would write it; no h11,
        no route.
        """
        runtime = self.runtime
        runtime.metrics.observe_shed("queue_time")
        try:
            frame = runtime.sealer.overloaded_response(runtime.clock.now_ms())
        except SerialsExhausted:
            unsigned = _unsigned_refusal()
            return render_response(unsigned.status, unsigned.headers, unsigned.body, close)
        runtime.metrics.observe_server_answer("other", ErrCode.OVERLOADED, waited_s)
        return render_response(429, _SHED_HEADERS, frame, close)

    def closed_unanswered(self) -> None:
        """Count a transaction request closed unanswered after waiting too long for admission."""
        self.runtime.metrics.observe_shed("queue_closed")

    def shed_response(self, request: Request, waited_s: float) -> Response:
        """The answer to a shed request that h11 parsed (too large or unusual for the plain path)."""
        refused = _route_refusal(request)
        if refused is not None:
            return refused
        self.runtime.metrics.observe_shed("queue_time")
        return self._refusal(ErrCode.OVERLOADED, time.perf_counter() - waited_s, RETRY_AFTER_OVERLOADED_S)

    async def handle(self, request: Request) -> Response:
        """Route one request (see SPEC section 3)."""
        refused = _route_refusal(request)
        if refused is not None:
            return refused
        if request.path == TX_PATH:
            return await self._tx(request)
        if request.path == "/fsi/v1/keys":
            keys = {"keys": self.runtime.core.public_keys()}
            return Response(200, (("content-type", "application/json"),),
                            json.dumps(keys, separators=(",", ":")).encode())
        response = common_route(self.runtime, request)
        assert response is not None, request.path
        return response

    def body_too_large(self, request: Request) -> Response:
        """413 BODY_TOO_LARGE as a Frame on the transaction path; plain elsewhere.

        An unknown path or a wrong method is still 404 / 405: the size of a body nobody would
        read does not change what the path is.
        """
        refused = _route_refusal(request)
        if refused is not None:
            return refused
        if request.path == TX_PATH:
            return self._refusal(ErrCode.BODY_TOO_LARGE, time.perf_counter())
        return plain_response(413, "body too large")

    def overflow_refusal(self) -> Response:
        """The answer to a connection over connections_max: 503 with a signed OVERLOADED Frame."""
        self.runtime.metrics.observe_shed("connections")
        try:
            frame = self.runtime.sealer.error_response(ErrCode.OVERLOADED, self.runtime.clock.now_ms())
        except SerialsExhausted:
            return _unsigned_refusal(close=True)
        return frame_response(503, frame, RETRY_AFTER_OVERLOADED_S, close=True)

    async def _tx(self, request: Request) -> Response:
        started_s = time.perf_counter()
        runtime = self.runtime
        if runtime.drain.started or runtime.standby:
            # A standby (cluster mode) refuses like a draining gateway: the router retries elsewhere.
            runtime.metrics.observe_shed("draining")
            return self._refusal(ErrCode.DRAINING, started_s, RETRY_AFTER_DRAINING_S)
        if not _is_msgpack(request.headers.get("content-type")):
            return self._refusal(ErrCode.UNSUPPORTED_MEDIA_TYPE, started_s)
        if runtime.in_flight >= runtime.limits.requests_in_flight_max:
            runtime.metrics.observe_shed("in_flight")
            return self._refusal(ErrCode.OVERLOADED, started_s, RETRY_AFTER_OVERLOADED_S)
        if not runtime.writable():
            return self._refusal(ErrCode.INTERNAL, started_s, RETRY_AFTER_INTERNAL_S)
        runtime.in_flight += 1
        try:
            return await self._apply(request.body, started_s)
        finally:
            runtime.in_flight -= 1

    async def _apply(self, body: bytes, started_s: float) -> Response:
        runtime = self.runtime
        core, journal = runtime.core, runtime.journal
        try:
            # Before the core decides: a full queue refuses here, with nothing applied.
            journal.check_room()
        except JournalFull:
            runtime.metrics.observe_shed("journal_full")
            return self._refusal(ErrCode.OVERLOADED, started_s, RETRY_AFTER_OVERLOADED_S)
        except JournalFailed:
            return self._refusal(ErrCode.INTERNAL, started_s, RETRY_AFTER_INTERNAL_S)
        result = runtime.sealer.answer(core, body, runtime.clock.now_ms())
        try:
            await runtime.make_durable(result.record, result.wait_op)
        except (JournalFull, JournalFailed) as exc:
            return self._journal_refusal(exc, started_s)
        facts = result.facts
        runtime.metrics.observe_tx(facts, time.perf_counter() - started_s)
        if facts.err_code:
            # Successes are counted, not logged (the hot path); every refusal gets a line that
            # ops can correlate with the terminal's msgid.
            log_event("tx_refused", msgid=facts.msgid or None, infno=facts.infno,
                      err_code=facts.err_code, outcome=facts.outcome)
        return frame_response(result.http_status, result.response)

    def _journal_refusal(self, exc: Exception, started_s: float) -> Response:
        """The journal did not make durable what the answer depends on: memory may be ahead of the disk.

        The answer is -1 (outcome unknown, retry); the commit gate has already handed the process
        to its rebuild, which rolls memory back to what is durable.
        """
        if isinstance(exc, JournalFull):
            self.runtime.metrics.observe_shed("journal_full")
            return self._refusal(ErrCode.OVERLOADED, started_s, RETRY_AFTER_OVERLOADED_S)
        return self._refusal(ErrCode.INTERNAL, started_s, RETRY_AFTER_INTERNAL_S)

    def _refusal(self, code: ErrCode, started_s: float, retry_after_s: int | None = None) -> Response:
        try:
            frame = self.runtime.sealer.error_response(code, self.runtime.clock.now_ms())
        except SerialsExhausted:
            return _unsigned_refusal()
        self.runtime.metrics.observe_server_answer("other", code, time.perf_counter() - started_s)
        return frame_response(code.http_status, frame, retry_after_s)
