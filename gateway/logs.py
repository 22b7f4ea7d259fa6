"""Structured logs: one JSON object per line, safe to ship to any log store.

Every line has the same shape, so a log pipeline can index it without parsing rules::

    {"ts": "2024-05-01T04:00:00.123Z", "level": "info", "event": "tx.answered",
     "msgid": "P51018200001202405011200000001", "fields": {"infno": "2102", "infcode": 0}}

``ts`` is ISO-8601 UTC with milliseconds, ``level`` one of ``LEVELS``, ``event`` a short dotted
name, ``msgid`` (present only when known) correlates every line of one request, and ``fields``
holds the rest. Fields live under their own key so that no field can overwrite ``ts`` or ``level``.

Two rules protect the people and keys behind the logs:

- Card numbers (``card_no``, ``mdtrt_cert_no``, ``card_sn``) are masked to their last four
  characters. An e-voucher token is a bearer credential, and masking it the same way makes it
  useless while keeping its tail for correlation with the terminal's own log.
- Fields whose names look like secrets (token, key, secret, mac, private, password ...) are
  replaced by ``"[REDACTED]"`` wherever they appear, nested maps and lists included. Raw bytes
  are never written; they appear as ``"<bin N bytes>"``.

This module is pure stdlib and imports nothing from prometheus or trio: it can be used from the
server, the journal and the CLI alike.
"""

from __future__ import annotations

import datetime
import json
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from typing import IO, Any

__all__ = [
    "LEVELS",
    "REDACTED",
    "JsonLogger",
    "format_ts",
    "is_secret_name",
    "mask_card_no",
    "sanitize",
]

LEVELS: dict[str, int] = {"debug": 10, "info": 20, "warning": 30, "error": 40}
REDACTED = "[REDACTED]"

# Name parts that mark a field as secret. Matching whole parts (split on "_", "-", ".", and
# camelCase) keeps "machine" or "monkey" loggable while "session_key", "card_mac",
# "token_sha256" and "privateKey" are not.
_SECRET_PARTS = frozenset({
    "token", "key", "keys", "secret", "secrets", "mac", "private", "password", "passwd",
    "authorization", "cookie", "seed", "signature", "sig", "tag", "hmac", "pem",
})
# Fields that carry a card number or an e-voucher token: masked, never shown whole.
_CARD_FIELDS = frozenset({"card_no", "mdtrt_cert_no", "card_sn"})
_CARD_VISIBLE_CHARS = 4
_NAME_SPLIT = re.compile(r"[_\-.\s]+|(?<=[a-z0-9])(?=[A-Z])")
# Nesting deeper than this is cut: a log line must stay bounded whatever a caller passes.
_DEPTH_MAX = 8


def format_ts(epoch_s: float) -> str:
    """Format a Unix time as ISO-8601 UTC with milliseconds, e.g. ``2024-05-01T04:00:00.123Z``.

    Args:
        epoch_s: seconds since the Unix epoch.
    Returns:
        The timestamp string; milliseconds are truncated, not rounded, so a line never claims
        a later time than the event.
    """
    epoch_ms = int(epoch_s * 1000)
    moment = datetime.datetime.fromtimestamp(epoch_ms // 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{epoch_ms % 1000:03d}Z"


def mask_card_no(card_no: str) -> str:
    """Mask all but the last four characters of a card number: ``************1234``.

    Args:
        card_no: the card number (or any credential string).
    Returns:
        A string of the same length; one of four characters or fewer is masked entirely, since
        its "last four" would be the whole number.
    """
    if len(card_no) <= _CARD_VISIBLE_CHARS:
        return "*" * len(card_no)
    hidden_len = len(card_no) - _CARD_VISIBLE_CHARS
    return "*" * hidden_len + card_no[hidden_len:]


def is_secret_name(name: str) -> bool:
    """Return True when a field name looks like it holds a secret (token, key, mac, ...)."""
    parts = (part.lower() for part in _NAME_SPLIT.split(name) if part)
    return any(part in _SECRET_PARTS for part in parts)


def sanitize(value: Any, name: str = "", depth: int = 0) -> Any:
    """Return a JSON-ready copy of ``value`` with secrets redacted and card numbers masked.

    Args:
        value: any value a caller wants to log.
        name: the field name ``value`` was given under ("" at the top).
        depth: the nesting level, used to bound the output.
    Returns:
        Plain JSON types only: dict, list, str, int, float, bool or None.
    """
    if name and is_secret_name(name):
        return REDACTED
    if depth > _DEPTH_MAX:
        return "<truncated>"
    if isinstance(value, Mapping):
        return {str(key): sanitize(item, str(key), depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [sanitize(item, name, depth + 1) for item in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<bin {len(value)} bytes>"
    if isinstance(value, str) and name in _CARD_FIELDS:
        return mask_card_no(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        # JSON has no NaN or Infinity; a log line must stay parseable by strict readers.
        return value if value == value and abs(value) != float("inf") else str(value)
    return str(value)


class JsonLogger:
    """Write structured events as JSON lines to a text stream (stderr by default).

    A logger may be bound to fields that every line carries, most usefully a request's msgid::

        log = JsonLogger()
        req_log = log.for_request(msgid, infno="2102")
        req_log.info("tx.answered", infcode=0, duration_ms=3)

    Writes are serialised by a lock (the journal may log from a worker thread) and never raise:
    a broken stream is counted in ``dropped_lines`` instead of taking a request down with it.
    """

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        level: str = "info",
        clock: Callable[[], float] = time.time,
        bound: Mapping[str, Any] | None = None,
        msgid: str | None = None,
    ) -> None:
        if level not in LEVELS:
            raise ValueError(f"unknown log level {level!r}; expected one of {sorted(LEVELS)}")
        self._stream = stream
        self._level_min = LEVELS[level]
        self._clock = clock
        self._bound = dict(bound or {})
        self._msgid = msgid
        self._shared = _SharedState()

    @property
    def dropped_lines(self) -> int:
        """How many lines could not be written because the stream failed."""
        return self._shared.dropped_lines

    def bind(self, **fields: Any) -> JsonLogger:
        """Return a logger sharing this one's stream whose lines also carry ``fields``."""
        child = self._child(self._msgid)
        child._bound.update(fields)
        return child

    def for_request(self, msgid: str, /, **fields: Any) -> JsonLogger:
        """Return a logger whose lines carry ``msgid`` at the top level, for correlation."""
        child = self._child(msgid)
        child._bound.update(fields)
        return child

    def enabled(self, level: str) -> bool:
        """Return True when lines at ``level`` would be written."""
        return LEVELS[level] >= self._level_min

    def log(self, level: str, event: str, /, **fields: Any) -> None:
        """Write one line for ``event`` at ``level`` with ``fields`` (sanitised)."""
        if level not in LEVELS:
            raise ValueError(f"unknown log level {level!r}")
        if not self.enabled(level):
            return
        self._write(self.render(level, event, fields))

    def debug(self, event: str, /, **fields: Any) -> None:
        """Write a debug line."""
        self.log("debug", event, **fields)

    def info(self, event: str, /, **fields: Any) -> None:
        """Write an info line."""
        self.log("info", event, **fields)

    def warning(self, event: str, /, **fields: Any) -> None:
        """Write a warning line."""
        self.log("warning", event, **fields)

    def error(self, event: str, /, **fields: Any) -> None:
        """Write an error line."""
        self.log("error", event, **fields)

    def exception(self, event: str, exc: BaseException, /, **fields: Any) -> None:
        """Write an error line describing ``exc``: its type, message and traceback text.

        The traceback goes to the operator's log only; it is never part of an answer.
        """
        details = {
            "exc_type": type(exc).__name__,
            "exc_msg": str(exc),
            "traceback": "".join(traceback.format_exception(exc)).rstrip(),
        }
        self.log("error", event, **fields, **details)

    def render(self, level: str, event: str, fields: Mapping[str, Any]) -> str:
        """Return the JSON line (without newline) that ``log`` would write."""
        merged = {**self._bound, **fields}
        msgid = merged.pop("msgid", self._msgid)
        line: dict[str, Any] = {"ts": format_ts(self._clock()), "level": level, "event": event}
        if msgid is not None:
            line["msgid"] = str(msgid)
        line["fields"] = sanitize(merged)
        return json.dumps(line, ensure_ascii=False, separators=(",", ":"), allow_nan=False)

    def _child(self, msgid: str | None) -> JsonLogger:
        child = JsonLogger.__new__(JsonLogger)
        child._stream = self._stream
        child._level_min = self._level_min
        child._clock = self._clock
        child._bound = dict(self._bound)
        child._msgid = msgid
        child._shared = self._shared
        return child

    def _write(self, line: str) -> None:
        # Resolve stderr at write time so that test harnesses which swap sys.stderr see the lines.
        stream = self._stream if self._stream is not None else sys.stderr
        with self._shared.lock:
            try:
                stream.write(line + "\n")
                stream.flush()
            except (OSError, ValueError):
                # ValueError: the stream was closed. Either way the request must not fail.
                self._shared.dropped_lines += 1


class _SharedState:
    """State shared by a logger and every logger bound from it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.dropped_lines = 0


# The process-wide event log of the shells (server, admin, journal wiring): one JSON line per event.
LOGGER = JsonLogger()


def log_event(event: str, /, **fields: Any) -> None:
    """Write one info line for `event` (a short snake_case name) with `fields`."""
    LOGGER.info(event, **fields)
