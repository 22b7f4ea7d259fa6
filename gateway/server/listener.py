"""A TCP listener that serves each connection in its own task, with a cap on open connections.

Like `trio.serve_tcp`, `run(task_status=...)` reports the bound port once the socket listens, so
tests bind port 0 without races. Draining stops the accept loop while the connections already open
finish in the listener's own nursery.
"""

from __future__ import annotations

import errno
from typing import Callable

import trio

from gateway.config import HostPort
from gateway.server.http import Drain, HttpApp, HttpLimits, Response, serve_connection
from gateway.server.logs import log_event

__all__ = ["Listener"]

# Accept errors that mean "out of resources right now": wait and retry rather than die.
_RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_ACCEPT_RETRY_S = 0.1
# Connections over the cap get a short canned refusal; at most this many refusals run at once,
# beyond that the socket is closed at once. Each refusal ends within REFUSAL_S.
REFUSALS_MAX = 64
REFUSAL_S = 1.0


class Listener:
    """One listening address served by an `HttpApp`."""

    def __init__(self, name: str, address: HostPort, app: HttpApp, limits: HttpLimits,
                 drain: Drain, connections_max: int,
                 refusal: Callable[[], Response], on_count: Callable[[int], None]) -> None:
        """Args:
            name: "data" or "admin", for logs.
            address: where to listen (port 0: any free port).
            refusal: builds the answer for a connection over `connections_max`.
            on_count: called with +1 / -1 as connections open and close (metrics).
        """
        self.name = name
        self.address = address
        self.app = app
        self.limits = limits
        self.drain = drain
        self.connections_max = connections_max
        self.refusal = refusal
        self.on_count = on_count
        self.open_connections = 0
        self._refusals = 0
        self._accept_scope = trio.CancelScope()
        self._connections_scope = trio.CancelScope()

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, report the bound port, serve until `stop_accepting` and the connections end."""
        listeners = await trio.open_tcp_listeners(self.address.port, host=self.address.host)
        port = listeners[0].socket.getsockname()[1]
        try:
            with self._connections_scope:
                async with trio.open_nursery() as connections:
                    with self._accept_scope:
                        async with trio.open_nursery() as acceptors:
                            for listener in listeners:
                                acceptors.start_soon(self._accept_loop, listener, connections)
                            task_status.started(port)
                    await self._close(listeners)
        finally:
            await self._close(listeners)

    @staticmethod
    async def _close(listeners: list[trio.SocketListener]) -> None:
        """Close the listening sockets (idempotent; also on cancellation)."""
        for listener in listeners:
            await trio.aclose_forcefully(listener)

    def stop_accepting(self) -> None:
        """Close the listening sockets; open connections carry on."""
        self._accept_scope.cancel()

    def cancel_connections(self) -> None:
        """End every open connection now (the drain deadline passed)."""
        self._connections_scope.cancel()

    async def _accept_loop(self, listener: trio.SocketListener, connections: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _RESOURCE_ERRNOS:
                    raise
                log_event("accept_error", listener=self.name, error=errno.errorcode[exc.errno])
                await trio.sleep(_ACCEPT_RETRY_S)
                continue
            if self.open_connections < self.connections_max:
                self._count(+1)
                connections.start_soon(self._serve, stream)
            elif self._refusals < REFUSALS_MAX:
                self._refusals += 1
                connections.start_soon(self._refuse, stream)
            else:
                await trio.aclose_forcefully(stream)

    async def _serve(self, stream: trio.SocketStream) -> None:
        try:
            await serve_connection(stream, self.app, self.limits, self.drain)
        finally:
            self._count(-1)

    async def _refuse(self, stream: trio.SocketStream) -> None:
        try:
            with trio.move_on_after(REFUSAL_S):
                await stream.send_all(_serialize(self.refusal()))
                await stream.send_eof()
                # Read what the client sent so closing does not reset the answer away.
                while await stream.receive_some(16384):
                    pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            self._refusals -= 1
            await trio.aclose_forcefully(stream)

    def _count(self, delta: int) -> None:
        self.open_connections += delta
        self.on_count(delta)


_REASONS = {429: b"Too Many Requests", 503: b"Service Unavailable"}


def _serialize(response: Response) -> bytes:
    """Encode a refusal without an h11 connection (no request was read)."""
    lines = [b"HTTP/1.1 %d %s" % (response.status, _REASONS.get(response.status, b"Error"))]
    lines += [k.encode() + b": " + v.encode() for k, v in response.headers]
    lines += [b"content-length: %d" % len(response.body), b"connection: close", b"", b""]
    return b"\r\n".join(lines) + response.body
