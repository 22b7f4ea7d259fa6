"""The server's event log: the process-wide `gateway.logs` logger (re-exported for server modules).

Server modules call `log_event("name", field=value)`; lines are sanitised (no secrets, card numbers
masked) and share the format of the journal's and the admin API's lines.
"""

from __future__ import annotations

from gateway.logs import LOGGER, log_event

__all__ = ["LOGGER", "log_event"]
