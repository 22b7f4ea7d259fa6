"""One HTTP/1.1 connection: h11 driven by trio, with a deadline on every read and write.

The connection reads one request at a time (head, then a body of at most `body_bytes_max`),
hands it to an `HttpApp`, sends the answer and, with keep-alive, waits for the next request no
longer than `idle_timeout_s`. Whatever the peer sends, the task ends with an answer or a closed
connection; it never raises into the listener's nursery.

Framing is strict (RFC 9112; the table of answers is in docs/protocol.md, "HTTP framing"): h11
parses, and this module adds what h11 lets through: a request head (request line to the blank line)
of more than `header_bytes_max` bytes is 431; obsolete line folding, Transfer-Encoding together with
Content-Length, and Transfer-Encoding in HTTP/1.0 are 400 (each a request-smuggling hazard when a
proxy reads the message differently); an HTTP version other than 1.x is 505; an expectation other
than 100-continue is 417. All of these close the connection, since the rest of the stream can no
longer be framed with certainty.

On the data listener a `Gate` rules on each transaction request (see gateway/server/admission.py):
the connection stamps the arrival of its first bytes and waits for the verdict. A request whose
first bytes hold the whole of a plainly framed `POST` of the transaction path (gateway/server/plain.py),
as a terminal sends it, goes to the gate before it is parsed, and is read and answered without
h11, admitted or shed: h11 never sees that request nor its answer, so the connection is as it was
before the request, ready for the next. Anything less plain is parsed by h11 with the strict
checks and goes to the gate only once all of it is read, then is answered by the app or, when
shed, by the shedder. The gate admits only requests ready to be worked on: a client that sends
its head or body a byte at a time holds its connection until `read_timeout_s`, never a place
the gate keeps for work (it would take only `limit` of them to shut everyone else out).
"""

from __future__ import annotations

import dataclasses
import os
import re
import urllib.parse
from typing import Protocol

import h11
import trio

from gateway.runtime import Drain
from gateway.server.admission import Admission, Verdict
from gateway.server.arrival import receive_stamped
from gateway.server.logs import log_event
from gateway.server.plain import PlainPost, plain_post, render_response

__all__ = ["Drain", "Gate", "HttpApp", "HttpConnection", "HttpLimits", "IdleConnections", "Request",
           "Response", "Shedder", "plain_response", "serve_connection"]

RECEIVE_BYTES_MAX = 16384
# After answering a peer that may still be sending (e.g. a refused oversized body), keep reading
# and discarding for a moment before closing, so the kernel does not reset the connection and
# destroy the answer in flight. Bounded in time and bytes.
LINGER_S = 1.0
LINGER_BYTES_MAX = 256 * 1024
# A line of a head that starts with a space or a tab continues the previous one (obs-fold).
_OBS_FOLD = re.compile(rb"\n[ \t]")
_ABSOLUTE_FORM = re.compile(r"https?://", re.IGNORECASE)
# Requests the gate never holds: reads (health, readiness, metrics, keys) are cheap and most needed
# when the gateway is full.
_UNGATED_METHODS = (b"GET ", b"HEAD ")


@dataclasses.dataclass(frozen=True)
class HttpLimits:
    """Per-connection limits (from gateway.toml [limits]).

    `header_bytes_max` bounds the request head: the request line, the header lines and the blank
    line that ends them, in bytes as received. A head of exactly that size is read; one byte more
    is 431 and the connection closes.
    """

    body_bytes_max: int = 65536
    header_bytes_max: int = 16384
    read_timeout_s: float = 10.0
    write_timeout_s: float = 10.0
    idle_timeout_s: float = 30.0


@dataclasses.dataclass(frozen=True)
class Request:
    """A request: method and path (query string dropped), lower-cased headers, the whole body."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    query: str = ""   # the raw query string after "?" ("" when none); only the admin API reads it


@dataclasses.dataclass(frozen=True)
class Response:
    """An answer; `close` asks the connection to end after sending it."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    close: bool = False


def plain_response(status: int, text: str, *headers: tuple[str, str], close: bool = False) -> Response:
    """Return a text/plain answer (used for every non-Frame error)."""
    return Response(status, (("content-type", "text/plain; charset=utf-8"), *headers),
                    (text + "\n").encode(), close)


class HttpApp(Protocol):
    """What a listener serves: routes complete requests to answers."""

    async def handle(self, request: Request) -> Response:
        """Answer one request whose body was read in full (at most body_bytes_max)."""

    def body_too_large(self, request: Request) -> Response:
        """Answer a request whose body exceeds body_bytes_max (its `body` is empty)."""


class Shedder(Protocol):
    """Who answers the requests a gate sheds."""

    tx_path: bytes

    def shed_bytes(self, waited_s: float, close: bool) -> bytes:
        """The whole HTTP answer (head and body) to a plain POST of `tx_path` that was shed."""

    def shed_response(self, request: Request, waited_s: float) -> Response:
        """The answer to any other request that was shed (parsed by h11 as usual)."""

    def closed_unanswered(self) -> None:
        """Count a request closed without an answer: it waited too long for a verdict."""


@dataclasses.dataclass(frozen=True)
class Gate:
    """The admission of one listener's requests, and who answers those it sheds."""

    admission: Admission
    shedder: Shedder


class IdleConnections:
    """The connections of one listener waiting for their next request line, longest-waiting first.

    A full listener closes the longest-waiting of them to make room for a new connection: RFC 9112
    section 9.6 lets a server close an idle connection at any time, and a client then retries on a
    fresh one. Without this, anyone holding idle connections up to the cap locks everyone else out.
    """

    def __init__(self) -> None:
        # Insertion order is waiting order (dicts keep it): the first entry waited longest.
        self._waiting: dict[trio.CancelScope, str] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, scope: trio.CancelScope, peer: str) -> None:
        """Note a connection from `peer` that waits inside `scope` for its next request."""
        self._waiting[scope] = peer

    def discard(self, scope: trio.CancelScope) -> None:
        self._waiting.pop(scope, None)

    def close_longest_waiting(self, peer: str | None = None) -> bool:
        """Cancel the wait of the longest-waiting connection (from `peer` when given).

        Returns:
            False when no connection (from `peer`) is waiting.
        """
        for scope, owner in self._waiting.items():
            if peer is None or owner == peer:
                del self._waiting[scope]
                scope.cancel()
                return True
        return False


class _PeerGone(Exception):
    """The peer closed, went idle too long, was too slow, or drain asked us to stop."""


class _Refused(Exception):
    """A request the connection answers itself with `status` before closing (framing or syntax)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class HttpConnection:
    """Serves requests on one stream until either side closes it."""

    def __init__(self, stream: trio.abc.Stream, app: HttpApp, limits: HttpLimits,
                 drain: Drain, idle: IdleConnections | None = None, peer: str = "",
                 gate: Gate | None = None) -> None:
        """Args:
            idle: where the listener finds this connection while it waits for a request (or
                for the gate's verdict on one), so it can close it to make room (None: nobody
                closes it early).
            peer: the peer's address, as the listener counts connections per address.
            gate: admits, sheds or closes each request before it is parsed (None: all admitted).
        """
        self.stream = stream
        self.app = app
        self.limits = limits
        self.drain = drain
        self.idle = idle
        self.peer = peer
        self.gate = gate
        # The gate's verdict on the request being served, and when its first bytes arrived.
        self._verdict: Verdict | None = None
        self._arrived_s = 0.0
        # The request being read goes to the gate once it is all read (it was not whole and plain).
        self._gate_when_read = False
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.header_bytes_max)
        self._linger = False
        socket = getattr(stream, "socket", None)
        self._fileno: int = socket.fileno() if socket is not None else -1
        # An answer to HEAD carries the head only (h11 refuses body bytes for it).
        self._answering_head = False

    async def run(self) -> None:
        """Serve until the connection ends; never raises (except trio.Cancelled)."""
        try:
            while await self._serve_one():
                # After a shed answered without h11, h11 is still idle: nothing to restart.
                if self.conn.our_state is h11.DONE:
                    self.conn.start_next_cycle()
        except (_PeerGone, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except h11.LocalProtocolError:
            pass
        except Exception as exc:  # an operating error or a bug in a handler: this connection only
            _log_connection_error(exc)
        finally:
            await self._close()

    async def _serve_one(self) -> bool:
        """Read one request and answer it; return whether the connection stays open."""
        try:
            return await self._read_and_answer()
        finally:
            self._leave_gate()

    async def _read_and_answer(self) -> bool:
        try:
            request = await self._receive_request()
        except h11.RemoteProtocolError as exc:
            # h11's hint: 431 for an unfinished head over the cap, 501 for a transfer coding
            # other than chunked, 400 for the rest.
            status = exc.error_status_hint if exc.error_status_hint >= 400 else 400
            await self._send_if_allowed(plain_response(status, "bad request", close=True))
            return False
        except _Refused as refused:
            await self._send_if_allowed(plain_response(refused.status, refused.reason, close=True))
            return False
        except _ReadTimeout:
            await self._send_if_allowed(plain_response(408, "request timeout", close=True))
            return False
        if request is None:
            return False
        if isinstance(request, _ShedPlain):
            return request.keep_alive
        if isinstance(request, PlainPost):
            return await self._answer_plain(request)
        if self._gate_when_read and isinstance(request, Request):
            await self._enter_gate_read()
        if isinstance(request, _TooLarge):
            response = self.app.body_too_large(request.head)
            response = dataclasses.replace(response, close=True)
        elif self._verdict is Verdict.SHED:
            assert self.gate is not None
            response = self.gate.shedder.shed_response(request, trio.current_time() - self._arrived_s)
        else:
            response = await self.app.handle(request)
        await self._send_response(response)
        return self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE

    async def _answer_plain(self, plain: PlainPost) -> bool:
        """Answer a plain POST (read without h11) without h11; return whether the connection stays open."""
        assert self.gate is not None
        request = Request("POST", self.gate.shedder.tx_path.decode(), plain.headers, plain.body)
        response = await self.app.handle(request)
        close = response.close or self.drain.started or not plain.keep_alive
        if close:
            self._linger = True
        await self._send(render_response(response.status, response.headers, response.body, close,
                                         peer_closes=not plain.keep_alive))
        return not close

    async def _after_verdict(self, data: bytes, plain: PlainPost | None) -> _ShedPlain | None:
        """Act on the gate's verdict on the request that starts with `data` (`plain`: its plain
        POST, or None).

        Returns None when the request is to be read as usual (admitted, or shed but not plain),
        or the outcome of a shed answered from `data` alone. Raises _PeerGone on CLOSE.
        """
        gate = self.gate
        assert gate is not None
        self._raise_if_closed(gate)
        if self._verdict is Verdict.SHED and plain is not None:
            return await self._shed_plain(gate, data, plain)
        return None

    async def _shed_plain(self, gate: Gate, data: bytes, plain: PlainPost) -> _ShedPlain:
        """Answer a shed request from its first bytes, which hold all of a plain POST."""
        keep_alive = plain.keep_alive and not self.drain.started
        answer = gate.shedder.shed_bytes(trio.current_time() - self._arrived_s, not keep_alive)
        if not keep_alive:
            self._linger = True
        else:
            self._pass_pipelined(data, plain)
        written = self._write_now(answer)
        if written < len(answer):
            await self._send(answer[written:])
        return _ShedPlain(keep_alive)

    def _plain(self, data: bytes) -> PlainPost | None:
        """The plain POST of the gate's transaction path that `data` starts with, or None."""
        assert self.gate is not None
        return plain_post(data, self.gate.shedder.tx_path, self.limits.header_bytes_max,
                          self.limits.body_bytes_max)

    def _pass_pipelined(self, data: bytes, plain: PlainPost) -> None:
        """Hand h11 what `data` holds after the plain POST it starts with: a pipelined request is h11's."""
        if len(data) > plain.length:
            self.conn.receive_data(data[plain.length:])

    async def _enter_gate_read(self) -> None:
        """Wait for the gate's verdict on a request read in full through h11; raises _PeerGone on CLOSE."""
        gate = self.gate
        assert gate is not None
        self._gate_when_read = False
        self._verdict = await gate.admission.enter(self._arrived_s)
        self._raise_if_closed(gate)

    def _raise_if_closed(self, gate: Gate) -> None:
        """On the verdict CLOSE: count the request closed unanswered and end the connection (_PeerGone)."""
        if self._verdict is Verdict.CLOSE:
            self._verdict = None
            gate.shedder.closed_unanswered()
            raise _PeerGone("waited too long for admission")

    def _leave_gate(self) -> None:
        """Tell the gate the request it ruled on is finished with (answered or not)."""
        self._gate_when_read = False
        verdict, self._verdict = self._verdict, None
        if verdict is Verdict.ADMIT:
            assert self.gate is not None
            self.gate.admission.done()
        elif verdict is Verdict.SHED:
            assert self.gate is not None
            self.gate.admission.shed_done()

    async def _receive_request(self) -> Request | _TooLarge | _ShedPlain | PlainPost | None:
        self._answering_head = False
        event = await self._receive_head()
        if event is None or isinstance(event, h11.ConnectionClosed):
            return None
        if isinstance(event, (_ShedPlain, PlainPost)):
            return event
        deadline = trio.current_time() + self.limits.read_timeout_s
        assert isinstance(event, h11.Request), event
        _check_framing(event)
        path, query = _split_target(event.target.decode("ascii", "replace"))
        method = event.method.decode("ascii", "replace")
        self._answering_head = method == "HEAD"
        # h11 has already lower-cased the names.
        headers = {k.decode("ascii", "replace"): v.decode("latin-1") for k, v in event.headers}
        body = await self._receive_body(headers.get("content-length"), deadline)
        if body is None:
            return _TooLarge(Request(method, path, headers, b"", query))
        return Request(method, path, headers, body, query)

    async def _receive_head(self) -> object | None:
        """The next request head (an h11 event) checked against header_bytes_max and obs-fold.

        The first bytes may take idle_timeout_s, the rest of the head read_timeout_s. Returns
        None when the connection ends while idle. The head's size is what h11 consumed from the
        bytes it was given: a pipelined body or request after the head does not count.
        """
        buffered, closed = self.conn.trailing_data
        raw = bytearray(buffered)
        if raw or closed or self.conn.their_state is not h11.IDLE:
            event = self.conn.next_event()
        else:
            event = h11.NEED_DATA   # what h11 would answer: nothing buffered, the peer open and idle
        if event is h11.NEED_DATA and not raw:
            started = await self._wait_for_request_start()
            if started is None:
                return None
            data, plain = started
            if self._verdict is not None:
                shed = await self._after_verdict(data, plain)
                if shed is not None:
                    return shed
            if plain is not None:
                self._pass_pipelined(data, plain)   # read without h11 (gateway/server/plain.py)
                return plain
            raw += self._feed(data)
            event = self.conn.next_event()
        deadline = trio.current_time() + self.limits.read_timeout_s
        while event is h11.NEED_DATA:
            raw += self._feed(await self._receive_by(deadline))
            event = self.conn.next_event()
        if isinstance(event, h11.Request):
            self._check_head(raw[:len(raw) - len(self.conn.trailing_data[0])])
        return event

    def _check_head(self, head: bytes | bytearray) -> None:
        if len(head) > self.limits.header_bytes_max:
            raise _Refused(431, "request header fields too large")
        if _OBS_FOLD.search(head):
            raise _Refused(400, "obsolete line folding")

    def _feed(self, data: bytes) -> bytes:
        self.conn.receive_data(data)
        return data

    async def _wait_for_request_start(self) -> tuple[bytes, PlainPost | None] | None:
        """The first bytes of a request within idle_timeout_s and the plain POST they hold (on a
        gated listener; else None), and for a gated request the gate's verdict on it in
        `_verdict` (or, when the bytes are not a whole plain POST, `_gate_when_read`); None ends
        the connection.

        The wait ends early when draining starts or the listener closes this connection to make
        room for another: while it is idle, or while its request waits for a verdict (it holds
        nothing but the connection then; its client is answered by the connection's close).
        """
        scope = self.drain.idle_scope()
        if self.idle is not None:
            self.idle.add(scope, self.peer)
        try:
            with scope:
                scope.deadline = trio.current_time() + self.limits.idle_timeout_s
                gate = self.gate
                if gate is None:
                    data = await self.stream.receive_some(RECEIVE_BYTES_MAX)
                    return (data, None) if data else None
                # The gate ages a request from when its bytes reached the machine (arrival.py).
                data, waited_s = await receive_stamped(self.stream, RECEIVE_BYTES_MAX)
                if not data:
                    return None
                plain = self._plain(data)
                if not data.startswith(_UNGATED_METHODS) and not self.drain.started:
                    self._arrived_s = trio.current_time() - waited_s
                    if plain is None:
                        self._gate_when_read = True      # not whole yet: ruled on once read
                    else:
                        self._verdict = await gate.admission.enter(self._arrived_s)
                return data, plain
            return None
        finally:
            self.drain.forget(scope)
            if self.idle is not None:
                self.idle.discard(scope)

    async def _receive_body(self, declared: str | None, deadline: float) -> bytes | None:
        limit = self.limits.body_bytes_max
        if declared is not None and int(declared) > limit:
            # Refused without reading it (and without 100 Continue): the connection closes
            # after the answer.
            self._linger = True
            return None
        if self.conn.they_are_waiting_for_100_continue:
            await self._send(self.conn.send(h11.InformationalResponse(status_code=100, headers=[])))
        try:
            return await self._receive_chunks(limit, deadline)
        except h11.RemoteProtocolError:
            # Within a body every framing error is the client's (h11 hints 431 for an endless
            # chunk header line, which is no header field).
            raise _Refused(400, "bad request body") from None

    async def _receive_chunks(self, limit: int, deadline: float) -> bytes | None:
        """The body's data up to its end; None once it exceeds `limit`."""
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await self._next_event(deadline)
            if isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > limit:
                    self._linger = True
                    return None
                chunks.append(event.data)

    async def _next_event(self, deadline: float) -> object:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.conn.receive_data(await self._receive_by(deadline))

    async def _receive_by(self, deadline: float) -> bytes:
        with trio.move_on_at(deadline):
            return await self.stream.receive_some(RECEIVE_BYTES_MAX)
        raise _ReadTimeout

    async def _send_response(self, response: Response) -> None:
        close = response.close or self.drain.started
        headers = [(b"content-length", str(len(response.body)).encode())]
        headers += [(k.encode(), v.encode()) for k, v in response.headers]
        if close:
            headers.append((b"connection", b"close"))
            self._linger = True
        # Head, body and end in one write: one syscall and one deadline per answer.
        conn = self.conn
        data = conn.send(h11.Response(status_code=response.status, headers=headers))
        if response.body and not self._answering_head:
            data += conn.send(h11.Data(data=response.body))
        data += conn.send(h11.EndOfMessage())
        await self._send(data)

    async def _send_if_allowed(self, response: Response) -> None:
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            await self._send_response(response)

    async def _send(self, data: bytes) -> None:
        written = self._write_now(data)
        if written == len(data):
            return
        # A peer that never reads its answer must not hold this task: the write has a deadline.
        with trio.move_on_after(self.limits.write_timeout_s):
            await self.stream.send_all(data[written:])
            return
        self._linger = False
        raise _PeerGone("write timeout")

    def _write_now(self, data: bytes) -> int:
        """Write what a socket takes at once (an answer usually fits its send buffer), without
        the cancel scope and checkpoints of `send_all`; 0 when it takes nothing or the stream is
        no socket. Raises _PeerGone when the peer is gone."""
        if self._fileno < 0:
            return 0
        try:
            return os.write(self._fileno, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            self._linger = False
            raise _PeerGone(f"write failed: {exc.strerror}") from None

    async def _close(self) -> None:
        try:
            if self._linger:
                with trio.move_on_after(LINGER_S):
                    await self._discard_input()
        finally:
            # Also when the whole server is being cancelled mid-linger.
            await trio.aclose_forcefully(self.stream)

    async def _discard_input(self) -> None:
        try:
            await self.stream.send_eof()
            discarded = 0
            while discarded < LINGER_BYTES_MAX:
                data = await self.stream.receive_some(RECEIVE_BYTES_MAX)
                if not data:
                    return
                discarded += len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, AttributeError,
                trio.BusyResourceError):
            return


@dataclasses.dataclass(frozen=True)
class _TooLarge:
    head: Request


@dataclasses.dataclass(frozen=True)
class _ShedPlain:
    """A shed request answered without h11; `keep_alive`: the connection serves on."""

    keep_alive: bool


class _ReadTimeout(Exception):
    """A request did not arrive in full within read_timeout_s of its first byte."""


def _check_framing(event: h11.Request) -> None:
    """Refuse what h11 accepts but RFC 9112 (or this gateway) does not; raises _Refused."""
    if not event.http_version.startswith(b"1."):
        raise _Refused(505, "HTTP version not supported")
    names = {name for name, _ in event.headers}
    if b"transfer-encoding" in names and b"content-length" in names:
        # RFC 9112 section 6.1: "ought to be handled as an error"; h11 would let chunked win.
        raise _Refused(400, "both transfer-encoding and content-length")
    if b"transfer-encoding" in names and event.http_version == b"1.0":
        # RFC 9112 section 6.1: the framing of such a message is faulty.
        raise _Refused(400, "transfer-encoding in HTTP/1.0")
    for expectation in _comma_values(event, b"expect"):
        if expectation != b"100-continue":
            raise _Refused(417, "expectation failed")


def _comma_values(event: h11.Request, name: bytes) -> list[bytes]:
    """The lower-cased members of every `name` field of the head."""
    return [member.strip().lower() for field, value in event.headers if field == name
            for member in value.split(b",") if member.strip()]


def _split_target(target: str) -> tuple[str, str]:
    """(path, query) of a request target in origin form or absolute form.

    RFC 9112 section 3.2.2: a server must accept the absolute form ("http://host/path?q"), which
    a client sends when it believes it talks to a proxy; its path is routed as usual.
    """
    if _ABSOLUTE_FORM.match(target):
        parts = urllib.parse.urlsplit(target)
        return parts.path or "/", parts.query
    path, _, query = target.partition("?")
    return path, query


def _log_connection_error(exc: Exception) -> None:
    log_event("connection_error", error=type(exc).__name__, detail=str(exc)[:200])


async def serve_connection(stream: trio.abc.Stream, app: HttpApp, limits: HttpLimits,
                           drain: Drain, idle: IdleConnections | None = None, peer: str = "",
                           gate: Gate | None = None) -> None:
    """Serve one connection to its end (the listener's per-connection task; see HttpConnection)."""
    await HttpConnection(stream, app, limits, drain, idle, peer, gate).run()
