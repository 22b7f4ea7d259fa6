"""Shedding at the connection (in-memory streams, virtual time): a request the gate sheds gets a
429 OVERLOADED Frame with Retry-After, from its first bytes when they hold a plain POST, through
h11 otherwise; the connection serves on; reads are never held."""

from __future__ import annotations

import dataclasses

import h11
import msgpack
import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.sealer import KeyRing, Sealer
from gateway.server.admission import Admission
from gateway.server.data import DataApp, frame_response
from gateway.server.http import Gate, HttpLimits, serve_connection
from gateway.server.plain import plain_post, render_response
from gateway.server.runtime import Runtime, http_limits
from http_client import RawClient, request, tx
from protocol import ErrCode
from server_fakes import FakeJournal, make_runtime

WAIT_MAX_S = 0.05


@dataclasses.dataclass
class Scene:
    """A gate admitting one request at a time, its one place taken by `holder`'s settlement
    (held by the journal until `journal.hold` is cleared), and `client` on a connection of its own."""

    runtime: Runtime
    journal: FakeJournal
    gate: Gate
    holder: RawClient
    client: RawClient


async def connect(nursery: trio.Nursery, runtime: Runtime, gate: Gate) -> RawClient:
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(serve_connection, server, DataApp(runtime), http_limits(runtime.limits),
                       runtime.drain, None, "", gate)
    return RawClient(client)


async def scene(nursery: trio.Nursery, hold: bool = True) -> Scene:
    journal = FakeJournal()
    runtime = make_runtime(journal=journal)
    admission = Admission(limit_max=1, target_s=0.025, wait_max_s=WAIT_MAX_S, sheds_per_answer=1.0,
                          close_after_s=10.0)
    gate = Gate(admission, DataApp(runtime))
    nursery.start_soon(admission.run)
    await nursery.start(journal.run)
    holder = await connect(nursery, runtime, gate)
    if hold:
        journal.hold = True
        await holder.send(tx(b"S-held"))
        await trio.testing.wait_all_tasks_blocked()
        assert gate.admission.admitted == 1
    return Scene(runtime, journal, gate, holder, await connect(nursery, runtime, gate))


def shed_reply_ok(reply: object) -> None:
    assert reply.status == 429 and reply.headers["retry-after"] == "1"
    assert reply.headers["content-type"] == "application/msgpack"
    assert msgpack.unpackb(reply.body)["err_code"] == "OVERLOADED"


async def test_a_stale_request_is_shed_and_the_connection_serves_on(
        nursery: trio.Nursery, autojump_clock: trio.abc.Clock) -> None:
    sc = await scene(nursery)
    runtime, journal, gate, holder, client = sc.runtime, sc.journal, sc.gate, sc.holder, sc.client
    await client.send(tx(b"Q-waits"))
    started = trio.current_time()
    shed_reply_ok(await client.reply())
    assert WAIT_MAX_S <= trio.current_time() - started <= WAIT_MAX_S + 0.05
    assert runtime.core.bodies == [b"S-held"]     # the shed request never reached the core
    journal.hold = False
    assert (await holder.reply()).status == 200
    await client.send(tx(b"Q-next"))
    reply = await client.reply()
    assert reply.status == 200 and msgpack.unpackb(reply.body)["ok"] == b"Q-next"
    assert gate.admission.shed_total == 1 and gate.admission.admitted == 0
    metrics = runtime.metrics.render()
    assert b'yb_shed_requests_total{reason="queue_time"} 1.0' in metrics
    assert b'yb_rejections_total{err_code="OVERLOADED"} 1.0' in metrics


async def test_connection_close_asked_for_is_honoured(nursery: trio.Nursery,
                                                      autojump_clock: trio.abc.Clock) -> None:
    sc = await scene(nursery)
    gate, client = sc.gate, sc.client
    await client.send(request("POST", "/fsi/v1/tx", b"Q", "application/msgpack", "connection: close\r\n"))
    reply = await client.reply()
    shed_reply_ok(reply)
    assert reply.headers["connection"] == "close"
    assert await client.closed()


@pytest.mark.parametrize("raw", [
    # Chunked: not plain, so h11 frames it and the shedder answers the parsed request.
    b"POST /fsi/v1/tx HTTP/1.1\r\nhost: t\r\ncontent-type: application/msgpack\r\n"
    b"transfer-encoding: chunked\r\n\r\n1\r\nQ\r\n0\r\n\r\n",
    # The body arrives after the head.
    b"POST /fsi/v1/tx HTTP/1.1\r\nhost: t\r\ncontent-type: application/msgpack\r\ncontent-length: 3\r\n\r\n",
])
async def test_a_request_that_is_not_plain_is_shed_through_h11(
        nursery: trio.Nursery, autojump_clock: trio.abc.Clock, raw: bytes) -> None:
    sc = await scene(nursery)
    runtime, journal, gate, holder, client = sc.runtime, sc.journal, sc.gate, sc.holder, sc.client
    await client.send(raw)
    if raw.endswith(b"\r\n\r\n") and b"chunked" not in raw:
        await trio.sleep(WAIT_MAX_S * 2)
        await client.send(b"Q-3")
    shed_reply_ok(await client.reply())
    journal.hold = False
    await holder.reply()
    await client.send(tx(b"Q-after"))
    assert (await client.reply()).status == 200


async def test_a_shed_request_to_a_wrong_path_is_still_404(nursery: trio.Nursery,
                                                           autojump_clock: trio.abc.Clock) -> None:
    sc = await scene(nursery)
    gate, client = sc.gate, sc.client
    await client.send(request("POST", "/elsewhere", b"x"))
    assert (await client.reply()).status == 404


async def test_reads_are_never_held_by_the_gate(nursery: trio.Nursery) -> None:
    sc = await scene(nursery)
    gate, client = sc.gate, sc.client
    for path in ("/healthz", "/metrics", "/fsi/v1/keys"):
        await client.send(request("GET", path))
        assert (await client.reply()).status == 200
    assert gate.admission.waiting == 0


def h11_rendering(status: int, headers: tuple[tuple[str, str], ...], body: bytes, close: bool) -> bytes:
    """What HttpConnection._send_response writes for such an answer."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(request("POST", "/fsi/v1/tx", b"x", "application/msgpack"))
    assert isinstance(conn.next_event(), h11.Request)
    wire = [(b"content-length", str(len(body)).encode())] + [(k.encode(), v.encode()) for k, v in headers]
    if close:
        wire.append((b"connection", b"close"))
    return conn.send(h11.Response(status_code=status, headers=wire)) + conn.send(h11.Data(data=body))


@pytest.mark.parametrize("close", [False, True])
def test_the_plain_shed_answer_is_what_h11_writes(close: bool) -> None:
    frame = b"\x95" + b"F" * 200
    response = frame_response(429, frame, 1, close)
    assert render_response(429, response.headers, frame, close) == h11_rendering(429, response.headers, frame, close)


def test_the_overloaded_template_is_the_general_encoding_byte_for_byte() -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    template, general = Sealer("510182", KeyRing(key), 1000), Sealer("510182", KeyRing(key), 1000)
    for now_ms in (1_718_000_000_123, 1_718_000_001_999, 2**32, 2**40, 2**32 - 1, 5):
        assert template.overloaded_response(now_ms) == general.error_response(ErrCode.OVERLOADED, now_ms)
    assert template.refids.next == general.refids.next == 6


PLAIN = b"POST /fsi/v1/tx HTTP/1.1\r\nHost: x\r\nContent-Type: application/msgpack\r\nContent-Length: 3\r\n\r\n"


@pytest.mark.parametrize(("data", "expected"), [
    (PLAIN + b"abc", (len(PLAIN) + 3, True)),
    (PLAIN + b"abcGET / HTTP/1.1\r\n", (len(PLAIN) + 3, True)),          # a pipelined request follows
    (PLAIN + b"ab", None),                                               # body not all there
    (PLAIN.replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n") + b"abc", (len(PLAIN) + 22, False)),
    (PLAIN.replace(b"Host: x\r\n", b""), None),                          # no Host
    (PLAIN.replace(b"Host: x\r\n", b"Host: x\r\nHost: y\r\n") + b"abc", None),
    (PLAIN.replace(b"3\r\n", b"3\r\nContent-Length: 3\r\n") + b"abc", None),
    (PLAIN.replace(b"3\r\n", b"+3\r\n") + b"abc", None),
    (PLAIN.replace(b"Host: x\r\n", b"Host: x\r\nTransfer-Encoding: chunked\r\n") + b"abc", None),
    (PLAIN.replace(b"Host: x\r\n", b"Host: x\r\nExpect: 100-continue\r\n") + b"abc", None),
    (PLAIN.replace(b"Host: x\r\n", b"Host: x\r\n folded\r\n") + b"abc", None),
    (PLAIN.replace(b"Host: x\r\n", b"Host : x\r\n") + b"abc", None),
    (PLAIN.replace(b"Host: x\r\n", b"X: a\nContent-Length: 9\r\nHost: x\r\n") + b"abc", None),
    (PLAIN.replace(b"HTTP/1.1", b"HTTP/1.0") + b"abc", None),
    (PLAIN.replace(b"/fsi/v1/tx", b"/fsi/v1/tx?x") + b"abc", None),
    (PLAIN.replace(b"3\r\n", b"70000\r\n") + b"a" * 70000, None),       # over body_bytes_max
    (PLAIN.replace(b"Host: x", b"Host: " + b"x" * 20000) + b"abc", None),  # over header_bytes_max
])
def test_plain_post_length(data: bytes, expected: tuple[int, bool] | None) -> None:
    limits = HttpLimits()
    plain = plain_post(data, b"/fsi/v1/tx", limits.header_bytes_max, limits.body_bytes_max)
    assert (None if plain is None else (plain.length, plain.keep_alive)) == expected


async def test_a_gated_connection_closed_by_its_client_ends_quietly(
        nursery: trio.Nursery, capsys: pytest.CaptureFixture[str]) -> None:
    sc = await scene(nursery, hold=False)
    gate, client = sc.gate, sc.client
    await client.send(tx(b"Q-one"))
    assert (await client.reply()).status == 200
    await client.stream.aclose()
    await trio.testing.wait_all_tasks_blocked()
    assert "connection_error" not in capsys.readouterr().err
    assert gate.admission.admitted == 0
