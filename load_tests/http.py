"""A small HTTP/1.1 keep-alive client on raw trio streams, tuned for load generation.

One `HttpConnection` carries one request at a time and is reused across requests. Responses must
be framed by `Content-Length` (every server this project measures answers that way); a chunked or
close-delimited response is refused with `HttpProtocolError`, because a load generator that guessed
where a body ended would report nonsense. The parser is a hand-written loop over a bytearray rather
than h11: on the generator's single core every microsecond spent here is a microsecond not spent
keeping the arrival schedule, and the response shapes we accept are narrow.
"""

from __future__ import annotations

import dataclasses
import urllib.parse

import trio

HEAD_BYTES_MAX = 64 * 1024
BODY_BYTES_MAX = 16 * 1024 * 1024
RECEIVE_CHUNK_BYTES = 64 * 1024
# Statuses that never carry a body (RFC 9110 section 6.4.1).
_BODILESS_STATUSES = frozenset({204, 304})


class HttpProtocolError(Exception):
    """The peer sent something this client does not accept (bad status line, no length, too big)."""


class ConnectionLost(Exception):
    """The peer closed the connection before a whole response arrived."""


@dataclasses.dataclass(frozen=True, slots=True)
class HttpResponse:
    """One response: status code, headers (lower-case names, last value wins) and the body."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Endpoint:
    """Where to connect: host, port and the Host header value."""

    host: str
    port: int

    @property
    def host_header(self) -> str:
        return f"{self.host}:{self.port}"


def parse_url(url: str) -> tuple[Endpoint, str]:
    """Split an `http://host:port/path` URL into its endpoint and path.

    Args:
        url: an absolute http URL; the path defaults to "/".
    Returns:
        (Endpoint, path).
    Raises:
        ValueError: not http, or no host.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"not an http URL with a host: {url!r}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Endpoint(parts.hostname, parts.port or 80), path


class HttpConnection:
    """A keep-alive HTTP/1.1 client connection; one request in flight at a time.

    After a request is cancelled (a timeout) or fails, `reusable` is False: the byte stream is in
    an unknown state and the caller must `aclose()` it and open a new connection.
    """

    def __init__(self, stream: trio.abc.Stream, endpoint: Endpoint) -> None:
        self._stream = stream
        self._endpoint = endpoint
        self._buffer = bytearray()
        self.reusable = True

    @classmethod
    async def connect(cls, endpoint: Endpoint, local_address: str | None = None) -> HttpConnection:
        """Open a TCP connection (trio sets TCP_NODELAY on it) to `endpoint`, from `local_address`
        (a loopback address such as 127.0.0.2; None: the kernel's choice)."""
        stream = await trio.open_tcp_stream(endpoint.host, endpoint.port, local_address=local_address)
        return cls(stream, endpoint)

    async def aclose(self) -> None:
        """Close the connection; safe to call more than once."""
        self.reusable = False
        await self._stream.aclose()

    async def request(
        self, method: str, path: str, body: bytes = b"", content_type: str | None = None
    ) -> HttpResponse:
        """Send one request and read its whole response.

        Args:
            method: "GET", "POST" ...
            path: the request target, e.g. "/fsi/v1/tx".
            body: the request body (sent with Content-Length, also when empty on POST).
            content_type: the Content-Type header, if any.
        Returns:
            The response.
        Raises:
            ConnectionLost, HttpProtocolError, trio.BrokenResourceError; trio.Cancelled when the
            caller's deadline expires. After any of these the connection is not reusable.
        """
        if not self.reusable:
            raise ConnectionLost("connection is not reusable")
        self.reusable = False
        await self._stream.send_all(self._encode_request(method, path, body, content_type))
        response = await self._read_response(method)
        self.reusable = response.headers.get("connection", "").lower() != "close"
        return response

    def _encode_request(self, method: str, path: str, body: bytes, content_type: str | None) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self._endpoint.host_header}"]
        if content_type is not None:
            lines.append(f"Content-Type: {content_type}")
        if body or method not in ("GET", "HEAD"):
            lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
        return head + body

    async def _read_response(self, method: str) -> HttpResponse:
        head_end = await self._fill_until_head()
        head = bytes(self._buffer[:head_end])
        del self._buffer[: head_end + 4]
        status, headers = parse_head(head)
        length = body_length(status, headers, method)
        while len(self._buffer) < length:
            await self._receive()
        body = bytes(self._buffer[:length])
        del self._buffer[:length]
        return HttpResponse(status, headers, body)

    async def _fill_until_head(self) -> int:
        while True:
            head_end = self._buffer.find(b"\r\n\r\n")
            if head_end >= 0:
                return head_end
            if len(self._buffer) > HEAD_BYTES_MAX:
                raise HttpProtocolError(f"response head over {HEAD_BYTES_MAX} bytes")
            await self._receive()

    async def _receive(self) -> None:
        chunk = await self._stream.receive_some(RECEIVE_CHUNK_BYTES)
        if not chunk:
            raise ConnectionLost("peer closed the connection mid-response")
        self._buffer += chunk


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """Parse a response head (status line and header lines, without the blank line).

    Returns:
        (status code, headers with lower-cased names).
    Raises:
        HttpProtocolError: not an HTTP/1.x status line or a header line without a colon.
    """
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HttpProtocolError(f"bad status line {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise HttpProtocolError(f"bad header line {line!r}")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


def body_length(status: int, headers: dict[str, str], method: str) -> int:
    """Return how many body bytes follow a response head.

    Raises:
        HttpProtocolError: chunked, no Content-Length where a body may follow, or over the cap.
    """
    if method == "HEAD" or status in _BODILESS_STATUSES or 100 <= status < 200:
        return 0
    if "transfer-encoding" in headers:
        raise HttpProtocolError("chunked responses are not accepted")
    raw = headers.get("content-length")
    if raw is None or not raw.isdigit():
        raise HttpProtocolError("response without a valid Content-Length")
    length = int(raw)
    if length > BODY_BYTES_MAX:
        raise HttpProtocolError(f"response body of {length} bytes is over {BODY_BYTES_MAX}")
    return length
