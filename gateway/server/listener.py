"""A TCP listener that serves each connection in its own task, with caps on open connections.

Like `trio.serve_tcp`, `run(task_status=...)` reports the bound port once the socket listens, so
tests bind port 0 without races. Draining stops the accept loop while the connections already open
finish in the listener's own nursery.

Two caps bound what clients hold: `connections_max` for the listener and
`connections_per_address_max` for one source address. A new connection that would exceed either
first closes the longest-idle connection (of that address, or of anyone): idle keep-alive
connections cost the client nothing to hold, so they must not lock anyone out. Only when every
connection concerned is busy in a request is the new one refused: it gets one answer (health,
readiness and metrics as usual, so ops can see a full gateway; a refusal otherwise) and is closed.
"""

from __future__ import annotations

import dataclasses
import errno
from typing import Callable, Collection

import trio

from gateway.config import HostPort, LimitsConfig
from gateway.server.http import (Drain, Gate, HttpApp, HttpLimits, IdleConnections, Request, Response,
                                 serve_connection)
from gateway.server import arrival
from gateway.server.logs import log_event

__all__ = ["Listener", "OverCap"]

# Accept errors that mean "out of resources right now": wait and retry rather than die.
_RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_ACCEPT_RETRY_S = 0.1
# Connections over a cap get one answer; at most this many such connections are served at once,
# beyond that the socket is closed at once. Each ends within REFUSAL_S, its request included.
REFUSALS_MAX = 64
REFUSAL_S = 1.0
# A closed idle connection frees its slot at its task's next turn; this bounds the wait for the
# rare one whose request arrived just as it was closed (it is served, and another one is closed).
EVICTION_WAIT_S = 1.0


class OverCap:
    """The `HttpApp` of a connection over a cap: one answer, then the connection closes.

    GET of `open_paths` (health, readiness, metrics) is answered by the listener's app as usual:
    those answers are cheap and are most needed when the gateway is full. Every other request
    gets `refusal(request)`.
    """

    def __init__(self, app: HttpApp, open_paths: Collection[str],
                 refusal: Callable[[Request], Response]) -> None:
        self.app = app
        self.open_paths = frozenset(open_paths)
        self.refusal = refusal

    async def handle(self, request: Request) -> Response:
        if request.method == "GET" and request.path in self.open_paths:
            response = await self.app.handle(request)
        else:
            response = self.refusal(request)
        return dataclasses.replace(response, close=True)

    def body_too_large(self, request: Request) -> Response:
        return dataclasses.replace(self.refusal(request), close=True)


class Listener:
    """One listening address served by an `HttpApp`."""

    def __init__(self, name: str, address: HostPort, app: HttpApp, limits: HttpLimits,
                 drain: Drain, connections_max: int,
                 refusal: Callable[[], Response], on_count: Callable[[int], None], *,
                 connections_per_address_max: int = LimitsConfig.connections_per_address_max,
                 over_cap: HttpApp | None = None, gate: Gate | None = None) -> None:
        """Args:
            name: "data" or "admin", for logs.
            address: where to listen (port 0: any free port).
            refusal: builds the answer to any request on a connection over a cap (unless
                `over_cap` is given).
            on_count: called with +1 / -1 as connections open and close (metrics).
            connections_per_address_max: open connections from one source address.
            over_cap: serves the one request of a connection over a cap (see OverCap).
            gate: admits or sheds each request of the connections within the caps (None: all
                are admitted).
        """
        self.name = name
        self.address = address
        self.app = app
        self.limits = limits
        self.drain = drain
        self.connections_max = connections_max
        self.connections_per_address_max = connections_per_address_max
        self.over_cap = over_cap or OverCap(app, (), lambda request: refusal())
        self.on_count = on_count
        self.gate = gate
        self.open_connections = 0
        self.idle = IdleConnections()
        self.idle_closed = 0
        self._per_address: dict[str, int] = {}
        self._slot_freed = trio.Event()
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
            if self.gate is not None:
                arrival.enable(stream)   # the gate ages requests from their arrival (arrival.py)
            await self._admit(stream, connections)

    async def _admit(self, stream: trio.SocketStream, connections: trio.Nursery) -> None:
        """Serve `stream`, refuse it, or (when even refusals are full) close it at once."""
        peer = _peer_address(stream)
        if peer is not None and await self._make_room(peer):
            self._count(peer, +1)
            connections.start_soon(self._serve, stream, peer)
        elif peer is not None and self._refusals < REFUSALS_MAX:
            self._refusals += 1
            connections.start_soon(self._refuse, stream)
        else:
            await trio.aclose_forcefully(stream)

    async def _make_room(self, peer: str) -> bool:
        """Close idle connections until `peer` may open one more; False when all are busy."""
        while self._per_address.get(peer, 0) >= self.connections_per_address_max:
            if not await self._close_idle(peer):
                return False
        while self.open_connections >= self.connections_max:
            if not await self._close_idle(None):
                return False
        return True

    async def _close_idle(self, peer: str | None) -> bool:
        """Close the longest-idle connection (from `peer`, or any) and wait for it to end."""
        if not self.idle.close_longest_waiting(peer):
            return False
        self.idle_closed += 1
        with trio.move_on_after(EVICTION_WAIT_S):
            await self._slot_freed.wait()
        return True

    async def _serve(self, stream: trio.SocketStream, peer: str) -> None:
        try:
            await serve_connection(stream, self.app, self.limits, self.drain, self.idle, peer, self.gate)
        finally:
            self._count(peer, -1)

    async def _refuse(self, stream: trio.SocketStream) -> None:
        """Serve one request of a connection over a cap with `over_cap`, all within REFUSAL_S."""
        limits = dataclasses.replace(self.limits, idle_timeout_s=REFUSAL_S, read_timeout_s=REFUSAL_S,
                                     write_timeout_s=REFUSAL_S)
        try:
            with trio.move_on_after(REFUSAL_S):
                await serve_connection(stream, self.over_cap, limits, self.drain)
        finally:
            self._refusals -= 1
            await trio.aclose_forcefully(stream)

    def _count(self, peer: str, delta: int) -> None:
        self.open_connections += delta
        count = self._per_address.get(peer, 0) + delta
        if count:
            self._per_address[peer] = count
        else:
            del self._per_address[peer]   # the table holds only addresses with open connections
        if delta < 0:
            self._slot_freed.set()
            self._slot_freed = trio.Event()
        self.on_count(delta)


def _peer_address(stream: trio.SocketStream) -> str | None:
    """The source address of `stream`; None when the peer is already gone."""
    try:
        address: str = stream.socket.getpeername()[0]
    except OSError:
        return None
    return address
