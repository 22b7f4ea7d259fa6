"""Raw HTTP abuses over a real loopback socket: the status each gets and whether the connection stays.

Each row is the gateway's explicit answer (docs/protocol.md, "HTTP framing"): some come from h11's
parser, the others from the connection's own checks (marked "gateway" below). A row whose
connection is kept is checked by a further GET /healthz answered 200 on it; a row whose connection
is closed is checked by reading EOF with no byte after the expected answers.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import AsyncIterator

import pytest
import trio

from gateway.config import HostPort, LimitsConfig
from gateway.server.data import DataApp
from gateway.server.listener import Listener
from gateway.server.runtime import http_limits
from http_client import RawClient, request
from server_fakes import make_runtime

HEAD_BYTES_MAX = 1024
BODY_BYTES_MAX = 1000
READ_TIMEOUT_S = 0.5
# Longer than any row takes (a read timeout, then the answer), shorter than the idle timeout:
# a kept connection can never pass as closed because the idle timeout closed it.
CASE_DEADLINE_S = 3.0
LIMITS = LimitsConfig(header_bytes_max=HEAD_BYTES_MAX, body_bytes_max=BODY_BYTES_MAX,
                      read_timeout_s=READ_TIMEOUT_S, idle_timeout_s=10.0, write_timeout_s=2.0)

TX_HEAD = b"POST /fsi/v1/tx HTTP/1.1\r\nhost: t\r\ncontent-type: application/msgpack\r\n"
CHUNKED_TX = TX_HEAD + b"transfer-encoding: chunked\r\n\r\n"


def head_of(size: int, start: bytes = b"GET /healthz HTTP/1.1\r\nhost: t\r\n") -> bytes:
    """A head of exactly `size` bytes (request line to blank line): `start` and one padding field."""
    start, end = start + b"x-pad: ", b"\r\n\r\n"
    return start + b"p" * (size - len(start) - len(end)) + end


def tx_with(headers: bytes, body: bytes = b"Q-body") -> bytes:
    """A transaction request with extra header lines (each ending in CRLF) and a raw body."""
    return TX_HEAD + headers + b"\r\n" + body


@dataclasses.dataclass(frozen=True)
class Abuse:
    name: str
    raw: bytes
    statuses: tuple[int, ...]
    kept: bool
    half_close: bool = False   # the client shuts its sending side after `raw`


KEPT, CLOSED = True, False
ABUSES = [
    # Pipelining and connection management.
    Abuse("pipelined two requests in one write",
          request("GET", "/healthz") + tx_with(b"content-length: 6\r\n"), (200, 200), KEPT),
    Abuse("HTTP/1.0 without keep-alive", b"GET /healthz HTTP/1.0\r\n\r\n", (200,), CLOSED),
    Abuse("HTTP/1.0 with connection: keep-alive",
          b"GET /healthz HTTP/1.0\r\nconnection: keep-alive\r\n\r\n", (200,), CLOSED),
    Abuse("HTTP/1.1 with connection: close",
          b"GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n", (200,), CLOSED),
    # Body framing (gateway: both framings at once, and chunked in HTTP/1.0).
    Abuse("transfer-encoding and content-length",
          tx_with(b"transfer-encoding: chunked\r\ncontent-length: 6\r\n", b"6\r\nQ-body\r\n0\r\n\r\n"),
          (400,), CLOSED),
    Abuse("content-length and transfer-encoding",
          tx_with(b"content-length: 11\r\ntransfer-encoding: chunked\r\n", b"0\r\n\r\nQ-body"),
          (400,), CLOSED),
    Abuse("chunked in HTTP/1.0",
          b"POST /fsi/v1/tx HTTP/1.0\r\ncontent-type: application/msgpack\r\n"
          b"transfer-encoding: chunked\r\n\r\n6\r\nQ-body\r\n0\r\n\r\n", (400,), CLOSED),
    Abuse("transfer-encoding gzip, chunked",
          tx_with(b"transfer-encoding: gzip, chunked\r\n", b"0\r\n\r\n"), (501,), CLOSED),
    # Chunked edge cases.
    Abuse("chunk extensions are ignored",
          CHUNKED_TX + b"2;name=value\r\nQ-\r\n4;x\r\nbody\r\n0;last\r\n\r\n", (200,), KEPT),
    Abuse("chunked with trailer fields", CHUNKED_TX + b"6\r\nQ-body\r\n0\r\nx-trailer: 1\r\n\r\n",
          (200,), KEPT),
    Abuse("bad chunk size", CHUNKED_TX + b"zz\r\nQ-body\r\n0\r\n\r\n", (400,), CLOSED),
    Abuse("negative chunk size", CHUNKED_TX + b"-6\r\nQ-body\r\n0\r\n\r\n", (400,), CLOSED),
    Abuse("chunk data longer than its size", CHUNKED_TX + b"2\r\nQ-body\r\n0\r\n\r\n", (400,), CLOSED),
    Abuse("missing final chunk, then silence", CHUNKED_TX + b"6\r\nQ-body\r\n", (408,), CLOSED),
    Abuse("missing final chunk, then half-close", CHUNKED_TX + b"6\r\nQ-body\r\n", (400,), CLOSED,
          half_close=True),
    Abuse("endless chunk extension", CHUNKED_TX + b"6;" + b"e" * (2 * HEAD_BYTES_MAX), (400,), CLOSED),
    Abuse("chunks over body_bytes_max", CHUNKED_TX + (b"1f4\r\n" + b"Q" * 500 + b"\r\n") * 3,
          (413,), CLOSED),
    # Content-Length mismatches and malformed values.
    Abuse("body shorter than content-length, then half-close",
          tx_with(b"content-length: 10\r\n", b"Q-body"), (400,), CLOSED, half_close=True),
    Abuse("body shorter than content-length, then silence",
          tx_with(b"content-length: 10\r\n", b"Q-body"), (408,), CLOSED),
    Abuse("body longer than content-length",
          tx_with(b"content-length: 6\r\n", b"Q-body\x00\xff garbage\r\n\r\n"), (200, 400), CLOSED),
    Abuse("negative content-length", tx_with(b"content-length: -6\r\n"), (400,), CLOSED),
    Abuse("garbage content-length", tx_with(b"content-length: six\r\n"), (400,), CLOSED),
    Abuse("content-length with a plus sign", tx_with(b"content-length: +6\r\n"), (400,), CLOSED),
    Abuse("content-length of 30 digits", tx_with(b"content-length: " + b"9" * 30 + b"\r\n"),
          (400,), CLOSED),
    Abuse("duplicate differing content-length",
          tx_with(b"content-length: 6\r\ncontent-length: 7\r\n"), (400,), CLOSED),
    Abuse("differing content-length list", tx_with(b"content-length: 6, 7\r\n"), (400,), CLOSED),
    Abuse("duplicate identical content-length",
          tx_with(b"content-length: 6\r\ncontent-length: 6\r\n"), (200,), KEPT),
    Abuse("content-length over body_bytes_max", tx_with(b"content-length: 1001\r\n", b""),
          (413,), CLOSED),
    # Header floods (gateway: the exact cap on the head).
    Abuse("head exactly at header_bytes_max", head_of(HEAD_BYTES_MAX), (200,), KEPT),
    Abuse("head one byte over header_bytes_max", head_of(HEAD_BYTES_MAX + 1), (431,), CLOSED),
    Abuse("head at the cap, its body in the same write",
          head_of(HEAD_BYTES_MAX, TX_HEAD + b"content-length: 6\r\n") + b"Q-body", (200,), KEPT),
    Abuse("many small headers within the cap",
          b"GET /healthz HTTP/1.1\r\nhost: t\r\n" + b"x-a: 1\r\n" * 100 + b"\r\n", (200,), KEPT),
    Abuse("many small headers over the cap",
          b"GET /healthz HTTP/1.1\r\nhost: t\r\n" + b"x-a: 1\r\n" * 1000 + b"\r\n", (431,), CLOSED),
    Abuse("one huge header", b"GET /healthz HTTP/1.1\r\nhost: t\r\nx-huge: " + b"h" * 65536 + b"\r\n\r\n",
          (431,), CLOSED),
    Abuse("request line over the cap", b"GET /" + b"a" * 2048 + b" HTTP/1.1\r\nhost: t\r\n\r\n",
          (431,), CLOSED),
    # Header syntax (gateway: obs-fold).
    Abuse("obs-fold continuation line",
          b"GET /healthz HTTP/1.1\r\nhost: t\r\nx-folded: a\r\n b\r\n\r\n", (400,), CLOSED),
    Abuse("obs-fold hiding transfer-encoding",
          tx_with(b"content-length: 6\r\ntransfer-encoding:\r\n chunked\r\n"), (400,), CLOSED),
    Abuse("space before the colon", b"GET /healthz HTTP/1.1\r\nhost : t\r\n\r\n", (400,), CLOSED),
    Abuse("no host in HTTP/1.1", b"GET /healthz HTTP/1.1\r\n\r\n", (400,), CLOSED),
    Abuse("NUL in a header value", b"GET /healthz HTTP/1.1\r\nhost: t\x00\r\n\r\n", (400,), CLOSED),
    Abuse("bare LF line ends", b"GET /healthz HTTP/1.1\nhost: t\n\n", (200,), KEPT),
    # Request line.
    Abuse("empty line before the request line", b"\r\nGET /healthz HTTP/1.1\r\nhost: t\r\n\r\n",
          (400,), CLOSED),
    Abuse("bad method token", b"G@T /healthz HTTP/1.1\r\nhost: t\r\n\r\n", (400,), CLOSED),
    Abuse("unknown method", b"BREW /healthz HTTP/1.1\r\nhost: t\r\n\r\n", (405,), KEPT),
    Abuse("lower-case method", b"get /healthz HTTP/1.1\r\nhost: t\r\n\r\n", (405,), KEPT),
    Abuse("absolute-form target", b"GET http://gw.example/healthz HTTP/1.1\r\nhost: gw.example\r\n\r\n",
          (200,), KEPT),
    Abuse("absolute-form target with a query",
          b"GET HTTP://gw.example:8600/fsi/v1/keys?x=1 HTTP/1.1\r\nhost: gw.example\r\n\r\n",
          (200,), KEPT),
    Abuse("HTTP/2.0 request line", b"GET /healthz HTTP/2.0\r\nhost: t\r\n\r\n", (505,), CLOSED),
    Abuse("TLS handshake on the plain port", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\r\n\r\n",
          (400,), CLOSED),
    # Expectations (gateway): only 100-continue is known.
    Abuse("unknown expectation", tx_with(b"content-length: 6\r\nexpect: teapot\r\n"), (417,), CLOSED),
]


@pytest.fixture
async def port(nursery: trio.Nursery) -> int:
    """A data listener on loopback over the fake core (read-only "Q" transactions need no journal)."""
    runtime = make_runtime(limits=LIMITS)
    app = DataApp(runtime)
    listener = Listener("data", HostPort("127.0.0.1", 0), app, http_limits(LIMITS), runtime.drain, 8,
                        app.overflow_refusal, lambda delta: None)
    bound: int = await nursery.start(listener.run)
    return bound


@contextlib.asynccontextmanager
async def connect(port: int) -> AsyncIterator[RawClient]:
    """A raw client on a fresh connection, closed on the way out, everything within the deadline."""
    with trio.fail_after(CASE_DEADLINE_S):
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            yield RawClient(stream)


async def assert_kept(client: RawClient) -> None:
    await client.send(request("GET", "/healthz"))
    assert (await client.reply()).status == 200


@pytest.mark.parametrize("case", ABUSES, ids=[case.name for case in ABUSES])
async def test_abuse(port: int, case: Abuse) -> None:
    async with connect(port) as client:
        await client.send(case.raw)
        if case.half_close:
            await client.stream.send_eof()
        statuses = tuple([(await client.reply()).status for _ in case.statuses])
        assert statuses == case.statuses
        if case.kept:
            await assert_kept(client)
        else:
            assert await client.closed()


async def test_expect_100_continue_is_answered_before_the_body(port: int) -> None:
    async with connect(port) as client:
        await client.send(tx_with(b"content-length: 6\r\nexpect: 100-continue\r\n", b""))
        assert (await client.reply()).status == 100
        await client.send(b"Q-body")
        reply = await client.reply()
        assert reply.status == 200 and reply.headers["content-type"] == "application/msgpack"
        await assert_kept(client)


async def test_expect_100_continue_over_the_body_limit_is_413_without_100(port: int) -> None:
    async with connect(port) as client:
        await client.send(tx_with(b"content-length: 1001\r\nexpect: 100-continue\r\n", b""))
        assert (await client.reply()).status == 413
        assert await client.closed()


async def test_expect_100_continue_body_sent_anyway_is_read(port: int) -> None:
    # A client may stop waiting for 100 and send its body (RFC 9110 10.1.1): the answer is the same.
    async with connect(port) as client:
        await client.send(tx_with(b"content-length: 6\r\nexpect: 100-continue\r\n"))
        assert [(await client.reply()).status for _ in range(2)] == [100, 200]
        await assert_kept(client)
