"""One HTTP/1.1 connection: h11 driven by trio, with a deadline on every read and write.

The connection reads one request at a time (head, then a body of at most `body_bytes_max`),
hands it to an `HttpApp`, sends the answer and, with keep-alive, waits for the next request no
longer than `idle_timeout_s`. Whatever the peer sends, the task ends with an answer or a closed
connection; it never raises into the listener's nursery.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import h11
import trio

from gateway.runtime import Drain
from gateway.server.logs import log_event

__all__ = ["Drain", "HttpApp", "HttpConnection", "HttpLimits", "Request", "Response",
           "plain_response", "serve_connection"]

RECEIVE_BYTES_MAX = 16384
# After answering a peer that may still be sending (e.g. a refused oversized body), keep reading
# and discarding for a moment before closing, so the kernel does not reset the connection and
# destroy the answer in flight. Bounded in time and bytes.
LINGER_S = 1.0
LINGER_BYTES_MAX = 256 * 1024


@dataclasses.dataclass(frozen=True)
class HttpLimits:
    """Per-connection limits (from gateway.toml [limits])."""

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


class _PeerGone(Exception):
    """The peer closed, went idle too long, was too slow, or drain asked us to stop."""


class HttpConnection:
    """Serves requests on one stream until either side closes it."""

    def __init__(self, stream: trio.abc.Stream, app: HttpApp, limits: HttpLimits,
                 drain: Drain) -> None:
        self.stream = stream
        self.app = app
        self.limits = limits
        self.drain = drain
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.header_bytes_max)
        self._linger = False
        # An answer to HEAD carries the head only (h11 refuses body bytes for it).
        self._answering_head = False

    async def run(self) -> None:
        """Serve until the connection ends; never raises (except trio.Cancelled)."""
        try:
            while await self._serve_one():
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
            request = await self._receive_request()
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint if exc.error_status_hint >= 400 else 400
            await self._send_if_allowed(plain_response(status, "bad request", close=True))
            return False
        except _ReadTimeout:
            await self._send_if_allowed(plain_response(408, "request timeout", close=True))
            return False
        if request is None:
            return False
        if isinstance(request, _TooLarge):
            response = self.app.body_too_large(request.head)
            response = dataclasses.replace(response, close=True)
        else:
            response = await self.app.handle(request)
        await self._send_response(response)
        return self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE

    async def _receive_request(self) -> Request | _TooLarge | None:
        self._answering_head = False
        event = await self._wait_for_request_start()
        if event is None:
            return None
        deadline = trio.current_time() + self.limits.read_timeout_s
        if event is h11.NEED_DATA:
            event = await self._next_event(deadline)
        if isinstance(event, h11.ConnectionClosed):
            return None
        assert isinstance(event, h11.Request), event
        target = event.target.decode("ascii", "replace")
        path, _, query = target.partition("?")
        method = event.method.decode("ascii", "replace")
        self._answering_head = method == "HEAD"
        # h11 has already lower-cased the names.
        headers = {k.decode("ascii", "replace"): v.decode("latin-1") for k, v in event.headers}
        body = await self._receive_body(headers.get("content-length"), deadline)
        if body is None:
            return _TooLarge(Request(method, path, headers, b"", query))
        return Request(method, path, headers, body, query)

    async def _wait_for_request_start(self) -> h11.Request | h11.ConnectionClosed | object | None:
        """Wait for the first bytes of a request within idle_timeout_s; None ends the connection."""
        event = self.conn.next_event()
        pending, _ = self.conn.trailing_data
        if event is not h11.NEED_DATA or pending:
            return event
        scope = self.drain.idle_scope()
        try:
            with scope:
                scope.deadline = trio.current_time() + self.limits.idle_timeout_s
                data = await self.stream.receive_some(RECEIVE_BYTES_MAX)
        finally:
            self.drain.forget(scope)
        if scope.cancelled_caught:
            return None
        self.conn.receive_data(data)
        return self.conn.next_event()

    async def _receive_body(self, declared: str | None, deadline: float) -> bytes | None:
        limit = self.limits.body_bytes_max
        if declared is not None and int(declared) > limit:
            # Refused without reading it: the connection closes after the answer.
            self._linger = True
            return None
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
            with trio.move_on_at(deadline):
                self.conn.receive_data(await self.stream.receive_some(RECEIVE_BYTES_MAX))
                continue
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
        # A peer that never reads its answer must not hold this task: the write has a deadline.
        with trio.move_on_after(self.limits.write_timeout_s):
            await self.stream.send_all(data)
            return
        self._linger = False
        raise _PeerGone("write timeout")

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


class _ReadTimeout(Exception):
    """A request did not arrive in full within read_timeout_s of its first byte."""


def _log_connection_error(exc: Exception) -> None:
    log_event("connection_error", error=type(exc).__name__, detail=str(exc)[:200])


async def serve_connection(stream: trio.abc.Stream, app: HttpApp, limits: HttpLimits,
                           drain: Drain) -> None:
    """Serve one connection to its end (the listener's per-connection task)."""
    await HttpConnection(stream, app, limits, drain).run()
