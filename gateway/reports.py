"""`yibao-gateway report monthly|alerts|clearing`: SPEC section 14's bodies, offline, from a data directory.

The data directory (the live one, a copy or a backup) is read without writing anything there: the
newest valid snapshot and the journal after it are replayed into a fresh core in memory, a torn
journal tail is left as it is and not used (`Journal.read_only`). The body is then exactly what
the admin API answers for the same state (`--format json`, the default), or CSV.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import Any

from gateway.admin.bodies import json_body
from gateway.config import GatewayConfig
from gateway.core import Core, from_wire
from gateway.core import supervision_report
from gateway.journal import Journal

__all__ = ["FORMATS", "REPORTS", "check_params", "recovered_core", "render", "report_body"]

FORMATS = ("json", "csv")
# The public key a report's core publishes: it signs nothing, so any 32 bytes do (the region's
# signing key is not read).
_UNUSED_PUBLIC_RAW = bytes(32)

# report name -> (its parameters, in the body builder's order; the body builder)
REPORTS: dict[str, tuple[tuple[str, ...], Callable[..., dict[str, Any]]]] = {
    "monthly": (("month", "by"), supervision_report.monthly_body),
    "alerts": (("date",), supervision_report.alerts_body),
    "clearing": (("month",), supervision_report.clearing_body),
}


def recovered_core(config: GatewayConfig) -> Core:
    """The region's core rebuilt in memory from its data directory, read-only.

    Raises:
        StartupError: a region file cannot be read (one line).
        JournalCorrupt: no data here, or damage a torn write cannot explain (one line).
        ValueError: a journaled record this build does not know.
    """
    from gateway.server.app import fresh_core, load_files

    recovery = Journal(config.paths.data_dir).read_only()
    core = fresh_core(config, load_files(config), _UNUSED_PUBLIC_RAW)
    core.rebuild(recovery.snapshot, [from_wire(record) for record in recovery.records], None)
    return core


def report_body(core: Core, report: str, params: dict[str, str | None]) -> dict[str, Any]:
    """The body of `report` for `params` (raises FieldError naming a bad one)."""
    names, build = REPORTS[report]
    return build(core.state, *(params.get(name) for name in names))


def check_params(report: str, params: dict[str, str | None]) -> None:
    """Refuse bad parameters before any file is read (raises FieldError naming the field)."""
    validators = {"month": supervision_report.parse_month, "date": supervision_report.parse_date,
                  "by": supervision_report.parse_by}
    for name in REPORTS[report][0]:
        validators[name](params.get(name))


def render(body: dict[str, Any], fmt: str) -> bytes:
    """The bytes `report` prints: the admin API's JSON body, or CSV (header row first), each ending in a newline."""
    if fmt == "json":
        return json_body(body) + b"\n"
    assert fmt == "csv", fmt
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerows(supervision_report.csv_rows(body))
    return out.getvalue().encode("utf-8")
