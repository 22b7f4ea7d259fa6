"""The plain path (gateway/server/plain.py) reads and answers exactly as the strict h11 path does.

A connection with a gate reads a plain POST of the transaction path without h11; one without a
gate always goes through h11 and the strict checks. The same bytes sent to both must produce the
same requests at the app and the same bytes back, whatever the bytes are: the shortcut may decline
a request (h11 then reads it), never frame one differently.
"""

from __future__ import annotations

import h11
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.runtime import Drain
from gateway.server.admission import Admission
from gateway.server.http import Gate, HttpLimits, Request, Response, serve_connection
from gateway.server.plain import plain_post, render_response

TX = b"/fsi/v1/tx"
LIMITS = HttpLimits(body_bytes_max=64, header_bytes_max=256)


class Recorder:
    """An app answering each request with what it saw; also the gate's shedder (it never sheds)."""

    tx_path = TX

    def __init__(self) -> None:
        self.seen: list[Request] = []

    async def handle(self, request: Request) -> Response:
        self.seen.append(request)
        close = request.body.startswith(b"bye")
        return Response(200, (("content-type", "x/y"), ("x-n", str(len(self.seen)))), b"[" + request.body + b"]",
                        close)

    def body_too_large(self, request: Request) -> Response:
        self.seen.append(request)
        return Response(413, (), b"too large", True)

    def shed_bytes(self, waited_s: float, close: bool) -> bytes:
        raise AssertionError("nothing is shed here")

    def shed_response(self, request: Request, waited_s: float) -> Response:
        raise AssertionError("nothing is shed here")

    def closed_unanswered(self) -> None:
        raise AssertionError("nothing is shed here")


async def _serve(data: bytes, gated: bool) -> tuple[list[Request], bytes]:
    """What the app saw and what the client got back for `data` sent whole, then EOF."""
    app = Recorder()
    client, server = trio.testing.memory_stream_pair()
    received = bytearray()
    async with trio.open_nursery() as nursery:
        gate = None
        if gated:
            admission = Admission(limit_max=64, target_s=10.0, wait_max_s=10.0, sheds_per_answer=1.0,
                                  close_after_s=60.0)
            nursery.start_soon(admission.run)
            gate = Gate(admission, app)
        nursery.start_soon(serve_connection, server, app, LIMITS, Drain(), None, "", gate)
        await client.send_all(data)
        await client.send_eof()
        while chunk := await client.receive_some(65536):
            received += chunk
        nursery.cancel_scope.cancel()
    return app.seen, bytes(received)


async def _same_both_ways(data: bytes) -> None:
    assert await _serve(data, gated=True) == await _serve(data, gated=False)


def _post(headers: bytes, body: bytes = b"abc", target: bytes = TX, version: bytes = b"HTTP/1.1") -> bytes:
    return b"POST " + target + b" " + version + b"\r\n" + headers + b"\r\n" + body


PLAIN_HEAD = b"Host: t\r\nContent-Type: application/msgpack\r\nContent-Length: 3\r\n"

CASES = [
    _post(PLAIN_HEAD),
    _post(PLAIN_HEAD) * 3,                                              # pipelined
    _post(PLAIN_HEAD) + b"GET /x HTTP/1.1\r\nhost: t\r\n\r\n",
    _post(PLAIN_HEAD.replace(b"abc", b"") + b"Connection: close\r\n") + _post(PLAIN_HEAD),
    _post(PLAIN_HEAD + b"Connection: keep-alive, Close\r\n"),
    _post(PLAIN_HEAD + b"Connection: closed\r\n"),
    _post(PLAIN_HEAD, b"bye"),                                           # the app closes
    _post(PLAIN_HEAD.replace(b"3", b"03")),
    _post(PLAIN_HEAD.replace(b"3", b"3 ")),
    _post(PLAIN_HEAD.replace(b"Content-Length: 3", b"Content-Length: 3, 3")),
    _post(PLAIN_HEAD + b"Content-Length: 3\r\n"),
    _post(PLAIN_HEAD.replace(b"3\r\n", b"99\r\n"), b"a" * 99),            # over body_bytes_max
    _post(PLAIN_HEAD + b"Transfer-Encoding: chunked\r\n", b"3\r\nabc\r\n0\r\n\r\n"),
    _post(PLAIN_HEAD + b"Expect: 100-continue\r\n"),
    _post(PLAIN_HEAD + b"Expect: teapot\r\n"),
    _post(PLAIN_HEAD + b"X-A: b\r\n c\r\n"),                            # obs-fold
    _post(PLAIN_HEAD + b"X A: b\r\n"),
    _post(PLAIN_HEAD + b"X-A : b\r\n"),
    _post(PLAIN_HEAD + b"X-@: b\r\n"),
    _post(PLAIN_HEAD + b"X-A: b\x00c\r\n"),
    _post(PLAIN_HEAD + b"X-A: b\x7fc\xff\r\n"),
    _post(PLAIN_HEAD + b"X-A:\t b  c \t\r\n"),
    _post(PLAIN_HEAD + b"X-A: b\rc\r\n"),
    _post(PLAIN_HEAD + b"X-A: b\nHost: u\r\n"),
    _post(PLAIN_HEAD + b"X-A:\r\n"),
    _post(PLAIN_HEAD + b"Host: u\r\n"),
    _post(PLAIN_HEAD.replace(b"Host: t\r\n", b"")),
    _post(PLAIN_HEAD + b"X-Long: " + b"v" * 300 + b"\r\n"),             # over header_bytes_max
    _post(PLAIN_HEAD + b"X-Long: " + b"v" * 170 + b"\r\n"),             # just within it
    _post(PLAIN_HEAD, target=TX + b"?q=1"),
    _post(PLAIN_HEAD, target=b"http://t" + TX),
    _post(PLAIN_HEAD, target=b"/elsewhere"),
    _post(PLAIN_HEAD, version=b"HTTP/1.0"),
    _post(PLAIN_HEAD, version=b"HTTP/2.0"),
    _post(PLAIN_HEAD, body=b"ab"),                                       # body cut short by EOF
    _post(PLAIN_HEAD, body=b"abcd"),                                     # a stray byte after it
    _post(PLAIN_HEAD).replace(b"\r\n", b"\n"),
    b"",
]


@pytest.mark.parametrize("data", CASES)
async def test_the_plain_path_frames_as_h11_does(data: bytes, autojump_clock: trio.abc.Clock) -> None:
    await _same_both_ways(data)


async def test_a_plain_post_is_read_without_h11(autojump_clock: trio.abc.Clock) -> None:
    # Can fail: were every request read by h11, the two ways would agree trivially.
    assert plain_post(_post(PLAIN_HEAD), TX, LIMITS.header_bytes_max, LIMITS.body_bytes_max) is not None
    seen, answer = await _serve(_post(PLAIN_HEAD), gated=True)
    assert seen == [Request("POST", "/fsi/v1/tx", {"host": "t", "content-type": "application/msgpack",
                                                    "content-length": "3"}, b"abc")]
    assert answer == b"HTTP/1.1 200 \r\ncontent-length: 5\r\ncontent-type: x/y\r\nx-n: 1\r\n\r\n[abc]"


_HEADER_NAMES = st.sampled_from([b"Host", b"Content-Length", b"content-type", b"Connection", b"Expect",
                                 b"Transfer-Encoding", b"X-A", b"X A", b"", b"X-\xe9", b" Host"])
_HEADER_VALUES = st.one_of(st.sampled_from([b"3", b"t", b"close", b"keep-alive", b"chunked", b"100-continue",
                                            b"03", b"-3", b" 3 ", b"3,3"]),
                           st.binary(max_size=6))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(headers=st.lists(st.tuples(_HEADER_NAMES, st.sampled_from([b": ", b":", b" : ", b":\t"]), _HEADER_VALUES),
                        max_size=6),
       body=st.binary(max_size=8), cut=st.integers(min_value=0, max_value=200))
def test_any_head_frames_as_h11_does(headers: list[tuple[bytes, bytes, bytes]], body: bytes, cut: int) -> None:
    head = b"Host: t\r\n" + b"".join(name + sep + value + b"\r\n" for name, sep, value in headers)
    data = _post(head, body)
    data = data[:len(data) - cut % 3] if cut % 7 else data
    trio.run(_same_both_ways, data, clock=trio.testing.MockClock(autojump_threshold=0))


@pytest.mark.parametrize(("peer_closes", "close"), [(False, False), (False, True), (True, False), (True, True)])
def test_an_answer_is_rendered_as_h11_writes_it(peer_closes: bool, close: bool) -> None:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(_post(PLAIN_HEAD + (b"Connection: close\r\n" if peer_closes else b"")))
    assert isinstance(conn.next_event(), h11.Request)
    headers = (("content-type", "application/msgpack"), ("retry-after", "1"))
    wire = [(b"content-length", b"7")] + [(k.encode(), v.encode()) for k, v in headers]
    if close:
        wire.append((b"connection", b"close"))
    expected = conn.send(h11.Response(status_code=429, headers=wire)) + conn.send(h11.Data(data=b"payload"))
    assert render_response(429, headers, b"payload", close, peer_closes) == expected
