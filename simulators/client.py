"""A small trio HTTP/1.1 keep-alive client (h11) for the gateway's data listener.

One client is one connection, reused for every request of one simulated terminal; a connection
the server closed (idle timeout, drain) is reopened once and the request resent, which is safe for
the gateway because every state change is idempotent by msgid (SPEC section 6).
"""

from __future__ import annotations

import base64
import json
import time
import urllib.parse

import h11
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

DEFAULT_TIMEOUT_S = 10.0
RECEIVE_CHUNK_BYTES = 64 * 1024
# Errors after which the byte stream is in an unknown state: close, reopen, resend once.
_TRANSPORT_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError,
                     ConnectionError)


class GatewayClient:
    """Keep-alive HTTP client: `post_frame` for /fsi/v1/tx, `keys` for /fsi/v1/keys."""

    def __init__(self, url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"gateway url must be http://host:port, got {url!r}")
        self.host, self.port = parsed.hostname, parsed.port or 80
        self.timeout_s = timeout_s
        self._stream: trio.SocketStream | None = None
        self._http: h11.Connection | None = None

    async def aclose(self) -> None:
        """Close the kept-alive connection, if any."""
        stream, self._stream, self._http = self._stream, None, None
        if stream is not None:
            await stream.aclose()

    async def _send(self, method: str, path: str, body: bytes | None,
                    headers_extra: tuple[tuple[str, str], ...] = ()) -> tuple[int, bytes, float]:
        if self._stream is None or self._http is None:
            self._stream = await trio.open_tcp_stream(self.host, self.port)
            self._http = h11.Connection(h11.CLIENT)
        stream, http = self._stream, self._http
        payload = body or b""
        headers = [("host", f"{self.host}:{self.port}"), ("content-length", str(len(payload))), *headers_extra]
        if body is not None and not any(name == "content-type" for name, _ in headers_extra):
            headers.append(("content-type", "application/msgpack"))
        started = time.perf_counter()
        await stream.send_all(http.send(h11.Request(method=method, target=path, headers=headers))
                              + http.send(h11.Data(data=payload)) + http.send(h11.EndOfMessage()))
        status, chunks = 0, []
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                http.receive_data(await stream.receive_some(RECEIVE_CHUNK_BYTES))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("the gateway closed the connection mid-answer")
        latency_s = time.perf_counter() - started
        if http.our_state is h11.DONE and http.their_state is h11.DONE:
            http.start_next_cycle()
        else:
            await self.aclose()
        return status, b"".join(chunks), latency_s

    async def request(self, method: str, path: str, body: bytes | None = None,
                      headers: tuple[tuple[str, str], ...] = ()) -> tuple[int, bytes, float]:
        """Send one request (`headers`: extra ones); return (status, body, latency_s).

        A kept-alive connection the server has closed is reopened once and the request resent.

        Raises:
            ConnectionError: the gateway is unreachable or silent past the timeout (also on the second try).
        """
        try:
            return await self._attempt(method, path, body, headers)
        except (*_TRANSPORT_ERRORS, trio.TooSlowError):
            await self.aclose()
        try:
            return await self._attempt(method, path, body, headers)
        except (*_TRANSPORT_ERRORS, trio.TooSlowError) as error:
            await self.aclose()
            raise ConnectionError(f"{self.host}:{self.port}: {error or type(error).__name__}") from None

    async def _attempt(self, method: str, path: str, body: bytes | None,
                       headers: tuple[tuple[str, str], ...] = ()) -> tuple[int, bytes, float]:
        with trio.fail_after(self.timeout_s):
            return await self._send(method, path, body, headers)

    async def post_frame(self, frame: bytes) -> tuple[int, bytes, float]:
        """POST a request Frame to /fsi/v1/tx."""
        return await self.request("POST", "/fsi/v1/tx", frame)

    async def keys(self) -> dict[str, Ed25519PublicKey]:
        """Fetch GET /fsi/v1/keys as kid -> public key (active and retired keys both verify)."""
        status, body, _ = await self.request("GET", "/fsi/v1/keys")
        if status != 200:
            raise ConnectionError(f"GET /fsi/v1/keys answered {status}")
        return {k["kid"]: Ed25519PublicKey.from_public_bytes(base64.b64decode(k["public_key"]))
                for k in json.loads(body)["keys"]}

    async def ready(self) -> bool:
        """True when GET /readyz answers 200."""
        try:
            return (await self.request("GET", "/readyz"))[0] == 200
        except OSError:
            return False
