"""The server's event log: one JSON line per event through the process-wide `gateway.logs` logger.

Server modules call `log_event("name", field=value)`; lines are sanitised (no secrets, card numbers
masked) and share the format of the journal's and the admin API's lines.
"""

from __future__ import annotations

from typing import Any

from gateway.logs import JsonLogger

__all__ = ["LOGGER", "log_event"]

LOGGER = JsonLogger()


def log_event(event: str, /, **fields: Any) -> None:
    """Write one info line for `event` (a short snake_case name) with `fields`."""
    LOGGER.info(event, **fields)
