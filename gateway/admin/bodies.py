"""Strict parsing of admin request bodies and query strings: a bad value is a 400 naming the field."""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Collection
from typing import Any

__all__ = ["ApiError", "json_body", "json_object", "query_int", "query_params", "reason_of"]

REASON_CHARS_MAX = 500


class ApiError(Exception):
    """An answer other than success: HTTP `status` with {"error": msg, "field": field}."""

    def __init__(self, status: int, msg: str, field: str | None = None,
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(msg)
        self.status = status
        self.msg = msg
        self.field = field
        self.headers = headers

    def payload(self) -> dict[str, Any]:
        """The JSON answer body."""
        payload: dict[str, Any] = {"error": self.msg}
        if self.field is not None:
            payload["field"] = self.field
        return payload


def json_body(payload: Any) -> bytes:
    """The JSON bytes of an answer body (compact, UTF-8): every admin answer and `report --format json`."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_object(body: bytes, allowed: Collection[str] | None) -> dict[str, Any]:
    """Decode a JSON object body (empty body = {}); `allowed` None accepts any field names.

    Raises ApiError(400) for malformed JSON, a non-object, NaN/Infinity, or an unknown field.
    """
    if not body.strip():
        return {}
    try:
        payload = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ApiError(400, f"malformed JSON: {str(exc)[:120]}", "body") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "the body must be a JSON object", "body")
    if allowed is not None:
        for key in payload:
            if key not in allowed:
                raise ApiError(400, f"unknown field {key!r}", key)
    return payload


def reason_of(payload: dict[str, Any]) -> str:
    """The optional "reason" (a string of at most REASON_CHARS_MAX characters)."""
    reason = payload.get("reason", "")
    if not isinstance(reason, str) or len(reason) > REASON_CHARS_MAX:
        raise ApiError(400, f"reason: must be a string of at most {REASON_CHARS_MAX} characters", "reason")
    return reason


def query_params(query: str, allowed: Collection[str]) -> dict[str, str]:
    """Parse a query string; unknown or repeated parameters are a 400."""
    params: dict[str, str] = {}
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if name not in allowed:
            raise ApiError(400, f"unknown query parameter {name!r}", name)
        if name in params:
            raise ApiError(400, f"query parameter {name!r} given twice", name)
        params[name] = value
    return params


def query_int(params: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high]."""
    text = params.get(name)
    if text is None:
        return default
    if not re.fullmatch(r"[0-9]{1,19}", text) or not low <= int(text) <= high:
        raise ApiError(400, f"{name}: must be an integer within [{low}, {high}]", name)
    return int(text)
