"""Routes of the admin listener: health, readiness, metrics, the test clock, and the admin API seam.

The admin API proper (gateway.admin) plugs in as an `AdminHandler`: every `/admin/v1/...` request
other than the test clock goes to its `handle` method. Without one, those paths answer 404.
"""

from __future__ import annotations

import json
from typing import Iterable, Mapping, Protocol

from gateway.server.clock import WallClock
from gateway.server.data import COMMON_PATHS, common_route
from gateway.server.http import Request, Response, plain_response
from gateway.server.logs import log_event
from gateway.admin.auth import AdminToken, authenticate
from gateway.runtime import Runtime

__all__ = ["AdminApp", "AdminHandler", "AdminToken", "authenticate"]

TEST_CLOCK_PATH = "/admin/v1/test/clock"
ADMIN_PREFIX = "/admin/v1/"
_CLOCK_ROLES = ("operator", "policy")
# Any Unix ms from 2000-01-01 to 2100-01-01: a wider value is a mistake, not a test.
_NOW_MS_MIN = 946_684_800_000
_NOW_MS_MAX = 4_102_444_800_000


class AdminHandler(Protocol):
    """The seam for gateway.admin: answers one admin request.

    Args:
        method: "GET", "POST" ...
        path: the request path starting with "/admin/v1/", with "?query" appended when the
            request had a query string (paging: GET /admin/v1/audit?after=N&limit=M).
        headers: lower-cased header names → values (Authorization included).
        body: the whole request body (at most body_bytes_max).
    Returns:
        (status, headers as (name, value) pairs, body bytes).
    """

    async def handle(self, method: str, path: str, headers: Mapping[str, str],
                     body: bytes) -> tuple[int, list[tuple[str, str]], bytes]: ...


def _json(status: int, payload: object) -> Response:
    return Response(status, (("content-type", "application/json"),),
                    json.dumps(payload, separators=(",", ":")).encode())


class AdminApp:
    """The `HttpApp` of the admin listener."""

    def __init__(self, runtime: Runtime, admins: Iterable[AdminToken],
                 handler: AdminHandler | None = None) -> None:
        self.runtime = runtime
        self.admins = tuple(admins)
        self.handler = handler

    async def handle(self, request: Request) -> Response:
        """Route one admin request."""
        common = common_route(self.runtime, request)
        if common is not None:
            return common
        if request.path in COMMON_PATHS:
            # The health, readiness and metrics paths exist here as on the data listener: another
            # method is 405 there and here (SPEC section 3), not 404.
            return plain_response(405, "method not allowed", ("allow", "GET"))
        if request.path == TEST_CLOCK_PATH:
            # SPEC section 10: without --test-clock the path does not exist, whoever asks
            # (no token included), so it must not reach the admin API's 401.
            if not self.runtime.clock.settable:
                return plain_response(404, "not found")
            return self._test_clock(request)
        if request.path.startswith(ADMIN_PREFIX) and self.handler is not None:
            target = f"{request.path}?{request.query}" if request.query else request.path
            status, headers, body = await self.handler.handle(
                request.method, target, request.headers, request.body)
            return Response(status, tuple(headers), body)
        return plain_response(404, "not found")

    def body_too_large(self, request: Request) -> Response:
        """Admin bodies are small JSON documents: plain 413."""
        return plain_response(413, "body too large")

    def overflow_refusal(self) -> Response:
        """The answer to a connection over the cap."""
        self.runtime.metrics.observe_shed("connections")
        return plain_response(503, "too many connections", ("retry-after", "1"), close=True)

    def _test_clock(self, request: Request) -> Response:
        if request.method != "POST":
            return plain_response(405, "method not allowed", ("allow", "POST"))
        admin = authenticate(request.headers, self.admins)
        if admin is None:
            return _json(401, {"error": "unauthorized"})
        if admin.role not in _CLOCK_ROLES:
            return _json(403, {"error": "forbidden", "role": admin.role})
        now_ms = _parse_now_ms(request.body)
        if now_ms is None:
            return _json(400, {"error": "bad request", "field": "now_ms"})
        clock: WallClock = self.runtime.clock
        clock.set(now_ms)  # type: ignore[attr-defined]
        log_event("test_clock_set", admin=admin.name, now_ms=now_ms)
        return _json(200, {"now_ms": now_ms})


def _parse_now_ms(body: bytes) -> int | None:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    value = payload.get("now_ms") if isinstance(payload, dict) else None
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if _NOW_MS_MIN <= value <= _NOW_MS_MAX else None
