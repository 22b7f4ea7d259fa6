"""A small synchronous HTTP/1.1 keep-alive client for the gateway's data listener.

One connection is reused for every request; a connection the server closed (idle timeout, drain)
is reopened once and the request resent, which is safe for the gateway because every state change
is idempotent by msgid (SPEC section 6).
"""

from __future__ import annotations

import base64
import http.client
import json
import time
import urllib.parse

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

DEFAULT_TIMEOUT_S = 10.0


class GatewayClient:
    """Keep-alive HTTP client: `post_frame` for /fsi/v1/tx, `keys` for /fsi/v1/keys."""

    def __init__(self, url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"gateway url must be http://host:port, got {url!r}")
        self.host, self.port = parsed.hostname, parsed.port or 80
        self.timeout_s = timeout_s
        self._connection: http.client.HTTPConnection | None = None

    def close(self) -> None:
        """Close the kept-alive connection, if any."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _send(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes, float]:
        if self._connection is None:
            self._connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        headers = {"content-type": "application/msgpack"} if body is not None else {}
        started = time.perf_counter()
        self._connection.request(method, path, body=body, headers=headers)
        response = self._connection.getresponse()
        data = response.read()
        latency_s = time.perf_counter() - started
        if (response.getheader("connection") or "").lower() == "close":
            self.close()
        return response.status, data, latency_s

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes, float]:
        """Send one request; return (status, body, latency_s).

        A kept-alive connection the server has closed is reopened once and the request resent.

        Raises:
            OSError: the gateway is unreachable (also on the second try).
        """
        try:
            return self._send(method, path, body)
        except (http.client.HTTPException, ConnectionError):
            self.close()
        try:
            return self._send(method, path, body)
        except (http.client.HTTPException, ConnectionError) as error:
            self.close()
            raise ConnectionError(f"{self.host}:{self.port}: {error}") from None

    def post_frame(self, frame: bytes) -> tuple[int, bytes, float]:
        """POST a request Frame to /fsi/v1/tx."""
        return self.request("POST", "/fsi/v1/tx", frame)

    def keys(self) -> dict[str, Ed25519PublicKey]:
        """Fetch GET /fsi/v1/keys as kid -> public key (active and retired keys both verify)."""
        status, body, _ = self.request("GET", "/fsi/v1/keys")
        if status != 200:
            raise ConnectionError(f"GET /fsi/v1/keys answered {status}")
        return {k["kid"]: Ed25519PublicKey.from_public_bytes(base64.b64decode(k["public_key"]))
                for k in json.loads(body)["keys"]}

    def ready(self) -> bool:
        """True when GET /readyz answers 200."""
        try:
            return self.request("GET", "/readyz")[0] == 200
        except OSError:
            return False
