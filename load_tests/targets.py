"""Simple targets: fixed-body POSTs, for the baseline server or any Frame-answering endpoint."""

from __future__ import annotations

import dataclasses
import os

import msgpack

from load_tests.http import HttpConnection, HttpResponse
from load_tests.openloop import Request

TX_PATH = "/fsi/v1/tx"
MSGPACK = "application/msgpack"
# About the size of a 3-line 2102 request Frame, so the floor reads and decodes a realistic body.
FIXED_BODY_BYTES = 600


def fixed_request_body(size_bytes: int = FIXED_BODY_BYTES) -> bytes:
    """A msgpack Frame-shaped request `[1, "mac", key_id, body, tag]` of about `size_bytes`."""
    filler = os.urandom(max(0, size_bytes - 60))
    return msgpack.packb([1, "mac", "baseline-load", filler, os.urandom(32)], use_bin_type=True)


@dataclasses.dataclass(frozen=True)
class FixedSlot:
    """Sends the same request each time; success is HTTP 200."""

    request: Request

    def build(self) -> Request:
        return self.request

    def error_kind(self, response: HttpResponse) -> str | None:
        return None if response.status == 200 else f"http_{response.status}"


@dataclasses.dataclass(frozen=True)
class FixedTarget:
    """POST one fixed msgpack body to `path` on every request (the baseline's traffic)."""

    name: str = "baseline"
    path: str = TX_PATH
    body: bytes = dataclasses.field(default_factory=fixed_request_body)

    async def open_slot(self, index: int, conn: HttpConnection) -> FixedSlot:
        return FixedSlot(Request("POST", self.path, self.body, MSGPACK))
