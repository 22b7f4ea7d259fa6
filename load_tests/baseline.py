"""The floor of this stack: a bare trio + h11 server doing the least a gateway answer costs.

Per POST it reads the body, decodes it as msgpack (the gateway must decode every request), builds
a 100-byte response body, signs `RESP_DOMAIN + body` with Ed25519 and answers the Frame
`[1, "sig", kid, body, sig]` as `application/msgpack`. No journal, no business rules, no MAC check:
whatever the gateway spends beyond this is the price of its features, so the gateway's capacity is
quoted as a ratio of this server's.

The durable floor (`--journal DIR`) adds the least a durable answer costs: each request's body is
appended to the gateway's own journal (gateway/journal: group commit with its default spacing,
fdatasync, its writer thread) and answered only once that record is durable; an answer the journal
could not make durable is a 500. It prices durability apart from the gateway's features
(docs/benchmarks.md, "The durable floor").

Run it alone with `python -m load_tests.baseline --port N [--journal DIR]` (0 picks a free port);
it prints `listening on 127.0.0.1:<port>` once it accepts connections.
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Awaitable, Callable
from functools import partial

import h11
import msgpack
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.journal import Journal, JournalFailed, JournalFull

RESP_DOMAIN = b"yb/resp/v1\n"
RESPONSE_BODY_BYTES = 100
REQUEST_BODY_BYTES_MAX = 65536
READ_TIMEOUT_S = 30.0
RECEIVE_CHUNK_BYTES = 64 * 1024
# Called before each answer; tests use it to make the server stall.
BeforeAnswer = Callable[[], Awaitable[None]]


class FrameSigner:
    """Builds signed 100-byte response Frames with one Ed25519 key."""

    def __init__(self, private_key: Ed25519PrivateKey | None = None) -> None:
        self._key = private_key or Ed25519PrivateKey.generate()
        self.public_key = self._key.public_key()
        raw = self.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.kid = "gw-" + hashlib.sha256(raw).hexdigest()[:16]
        self._serial = 0

    def answer(self) -> bytes:
        """Return the next signed response Frame (its body is exactly 100 bytes)."""
        self._serial += 1
        body = self._body(self._serial)
        tag = self._key.sign(RESP_DOMAIN + body)
        return msgpack.packb([1, "sig", self.kid, body, tag], use_bin_type=True)

    @staticmethod
    def _body(serial: int) -> bytes:
        # A msgpack map shaped like a short response envelope; the serial is a fixed-width bin so
        # every body is exactly 100 bytes and every answer signs and sends the same amount of data.
        fields = {"infcode": 0, "serial": serial.to_bytes(8, "big"), "pad": b"\0" * _PAD_BYTES}
        return msgpack.packb(fields, use_bin_type=True)


def _pad_bytes() -> int:
    empty = msgpack.packb({"infcode": 0, "serial": bytes(8), "pad": b""}, use_bin_type=True)
    return RESPONSE_BODY_BYTES - len(empty)


_PAD_BYTES = _pad_bytes()
assert len(FrameSigner._body(1)) == RESPONSE_BODY_BYTES


async def _next_event(conn: h11.Connection, stream: trio.abc.Stream) -> h11.Event:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        with trio.fail_after(READ_TIMEOUT_S):
            data = await stream.receive_some(RECEIVE_CHUNK_BYTES)
        conn.receive_data(data)


async def _read_body(conn: h11.Connection, stream: trio.abc.Stream) -> bytes | None:
    """Return the request body, or None when it is over the limit."""
    chunks: list[bytes] = []
    size = 0
    while True:
        event = await _next_event(conn, stream)
        if isinstance(event, h11.EndOfMessage):
            return b"".join(chunks)
        if isinstance(event, h11.Data):
            size += len(event.data)
            if size > REQUEST_BODY_BYTES_MAX:
                return None
            chunks.append(event.data)
        else:
            raise h11.RemoteProtocolError(f"unexpected {type(event).__name__} in a body")


async def _send(conn: h11.Connection, stream: trio.abc.Stream, status: int, body: bytes, ctype: str) -> None:
    headers = [("Content-Type", ctype), ("Content-Length", str(len(body)))]
    data = conn.send(h11.Response(status_code=status, headers=headers))
    data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
    await stream.send_all(data)


async def _made_durable(journal: Journal, body: bytes) -> bool:
    """Append `body` to `journal` as one record and wait for its fsync; False when the journal failed."""
    try:
        op = journal.next_op
        journal.append({"op": op, "body": body})
        await journal.wait_durable(op)
    except (JournalFailed, JournalFull):
        return False
    return True


async def _answer(conn: h11.Connection, stream: trio.abc.Stream, request: h11.Request, signer: FrameSigner,
                  before_answer: BeforeAnswer | None, journal: Journal | None) -> None:
    body = await _read_body(conn, stream)
    if request.method != b"POST":
        ok = request.method == b"GET" and request.target == b"/healthz"
        await _send(conn, stream, 200 if ok else 405, b"ok\n" if ok else b"method not allowed\n", "text/plain")
        return
    if body is None:
        await _send(conn, stream, 413, b"body too large\n", "text/plain")
        return
    try:
        msgpack.unpackb(body, raw=False)
    except (ValueError, TypeError):
        await _send(conn, stream, 400, b"not msgpack\n", "text/plain")
        return
    if journal is not None and not await _made_durable(journal, body):
        await _send(conn, stream, 500, b"not durable\n", "text/plain")
        return
    if before_answer is not None:
        await before_answer()
    await _send(conn, stream, 200, signer.answer(), "application/msgpack")


async def handle_connection(stream: trio.abc.Stream, signer: FrameSigner,
                            before_answer: BeforeAnswer | None = None, journal: Journal | None = None) -> None:
    """Serve one keep-alive connection until the peer closes it or errs."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=16 * 1024)
    try:
        while True:
            event = await _next_event(conn, stream)
            if isinstance(event, h11.ConnectionClosed):
                return
            if not isinstance(event, h11.Request):
                return
            await _answer(conn, stream, event, signer, before_answer, journal)
            if conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except (h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
        # Operating errors of one connection: the peer vanished or misbehaved. Drop it, keep serving.
        return
    finally:
        await stream.aclose()


async def serve_baseline(port: int = 0, host: str = "127.0.0.1", *, before_answer: BeforeAnswer | None = None,
                         signer: FrameSigner | None = None, journal: Journal | None = None,
                         task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the baseline on `host:port` until cancelled; `task_status.started(bound_port)`.

    Args:
        port: TCP port, 0 for a free one.
        host: the address to bind (loopback by default).
        before_answer: awaited before each signed answer (tests inject stalls with it).
        signer: the key to sign with (a fresh one by default).
        journal: the durable floor's journal (recovered and run here), or None for the plain floor.
    """
    signer = signer or FrameSigner()
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound_port = listeners[0].socket.getsockname()[1]
    handler = partial(handle_connection, signer=signer, before_answer=before_answer, journal=journal)
    async with trio.open_nursery() as nursery:
        if journal is not None:
            journal.recover()
            await nursery.start(journal.run)
        await nursery.start(trio.serve_listeners, handler, listeners)
        task_status.started(bound_port)


async def _main(port: int, journal_dir: str | None) -> None:
    journal = None if journal_dir is None else Journal(journal_dir, fsync=True)
    async with trio.open_nursery() as nursery:
        bound_port = await nursery.start(partial(serve_baseline, port, journal=journal))
        print(f"listening on 127.0.0.1:{bound_port}", flush=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point of `python -m load_tests.baseline --port N`."""
    parser = argparse.ArgumentParser(prog="python -m load_tests.baseline", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--journal", metavar="DIR", default=None,
                        help="the durable floor: journal each request's body in DIR (fsync on) before answering")
    args = parser.parse_args(argv)
    try:
        trio.run(_main, args.port, args.journal)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
