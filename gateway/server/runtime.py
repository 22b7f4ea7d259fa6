"""The server's view of the shared runtime (gateway/runtime.py) and the per-connection HTTP limits."""

from __future__ import annotations

from gateway.config import LimitsConfig
from gateway.runtime import Drain, JournalLike, Runtime, SnapshotScheduler
from gateway.server.http import HttpLimits

__all__ = ["Drain", "JournalLike", "Runtime", "SnapshotScheduler", "http_limits"]


def http_limits(limits: LimitsConfig) -> HttpLimits:
    """The per-connection part of gateway.toml [limits]."""
    return HttpLimits(body_bytes_max=limits.body_bytes_max, header_bytes_max=limits.header_bytes_max,
                      read_timeout_s=limits.read_timeout_s, write_timeout_s=limits.write_timeout_s,
                      idle_timeout_s=limits.idle_timeout_s)
