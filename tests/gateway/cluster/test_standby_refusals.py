"""What a standby answers when it has no refusal serial (its blocks used up while the region's store
is out of reach): 503 with Retry-After on a connection that stays open, never a closed connection;
once a block is reserved, the signed DRAINING Frame again."""

from __future__ import annotations

import pathlib
import sys

import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "server"))

from http_client import RawClient, tx  # noqa: E402
from server_fakes import make_runtime  # noqa: E402

from gateway.cluster.serials import STANDBY_BLOCK, STANDBY_SERIAL_BASE, StandbySerials  # noqa: E402
from gateway.runtime import Runtime  # noqa: E402
from gateway.sealer import KeyRing, Sealer  # noqa: E402
from gateway.server.data import DataApp, RETRY_AFTER_DRAINING_S  # noqa: E402
from gateway.server.http import serve_connection  # noqa: E402
from gateway.server.runtime import http_limits  # noqa: E402
from protocol import decode_frame, decode_response_envelope  # noqa: E402


def standby_runtime() -> tuple[Runtime, StandbySerials]:
    """A standby's runtime whose refusal serials are all used up (none reserved)."""
    runtime = make_runtime()
    runtime.standby = True
    serials = StandbySerials()
    runtime.sealer = Sealer("510182", KeyRing(Ed25519PrivateKey.generate()), 100)
    runtime.sealer.refids = serials
    return runtime, serials


async def test_a_standby_without_serials_answers_503_with_retry_after(nursery: trio.Nursery) -> None:
    runtime, serials = standby_runtime()
    client_stream, server_stream = trio.testing.memory_stream_pair()
    nursery.start_soon(serve_connection, server_stream, DataApp(runtime), http_limits(runtime.limits),
                       runtime.drain, None, "", None)
    client = RawClient(client_stream)
    for _ in range(2):          # the connection stays open for the terminal's next request
        await client.send(tx(b"S-1"))
        reply = await client.reply()
        status, headers, body = reply.status, reply.headers, reply.body
        assert (status, headers.get("retry-after")) == (503, str(RETRY_AFTER_DRAINING_S)), (status, headers, body)
        assert headers["content-type"].startswith("text/plain") and b"standby" in body
    serials.add_block(STANDBY_BLOCK)      # the store answered again: a block is reserved
    await client.send(tx(b"S-1"))
    reply = await client.reply()
    status, headers, body = reply.status, reply.headers, reply.body
    envelope = decode_response_envelope(decode_frame(body).body)
    assert (status, envelope.err_code, headers.get("retry-after")) == (503, "DRAINING", str(RETRY_AFTER_DRAINING_S))
    assert int(envelope.inf_refmsgid[-10:]) == STANDBY_SERIAL_BASE


def test_a_standby_without_serials_refuses_over_its_caps_unsigned_too() -> None:
    runtime, _ = standby_runtime()
    app = DataApp(runtime)
    over_cap = app.overflow_refusal()
    assert (over_cap.status, dict(over_cap.headers).get("retry-after"), over_cap.close) == (
        503, str(RETRY_AFTER_DRAINING_S), True)
    shed = app.shed_bytes(0.0, False)
    assert shed.startswith(b"HTTP/1.1 503 ") and b"retry-after: %d\r\n" % RETRY_AFTER_DRAINING_S in shed
