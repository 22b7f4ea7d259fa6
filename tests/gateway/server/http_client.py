"""A minimal HTTP/1.1 response reader for tests that talk raw bytes to the server."""

from __future__ import annotations

import dataclasses

import trio


@dataclasses.dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


class RawClient:
    """Sends raw bytes and parses responses (Content-Length bodies only, as the server sends)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = b""
        self.eof = False

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            self.eof = True
        self.buffer += data

    async def reply(self) -> Reply:
        while b"\r\n\r\n" not in self.buffer:
            await self._fill()
            if self.eof and b"\r\n\r\n" not in self.buffer:
                raise EOFError(f"connection closed; got {self.buffer!r}")
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            await self._fill()
            if self.eof:
                raise EOFError("body cut short")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return Reply(status, headers, body)

    async def closed(self) -> bool:
        """True when the server closed the connection (reads EOF with nothing pending)."""
        while not self.eof:
            await self._fill()
        return self.buffer == b""


def request(method: str, path: str, body: bytes = b"", content_type: str | None = None,
            extra: str = "") -> bytes:
    """Encode one request with Content-Length."""
    head = f"{method} {path} HTTP/1.1\r\nhost: test\r\n"
    if content_type is not None:
        head += f"content-type: {content_type}\r\n"
    if body or method == "POST":
        head += f"content-length: {len(body)}\r\n"
    return (head + extra + "\r\n").encode() + body


def tx(body: bytes, content_type: str = "application/msgpack") -> bytes:
    return request("POST", "/fsi/v1/tx", body, content_type)
