"""The admin API (SPEC section 11): JSON over the admin listener, bearer tokens, three roles.

Every state-changing route follows the data path's discipline: `journal.check_room()` before the
core decides, the core validates and returns one typed record (or refuses with nothing applied),
the record is committed and goes through the same commit gate as the data path
(`Runtime.make_durable`): the answer waits until it is durable. Every read waits until the state
it reads is durable (`Runtime.reads_settled`). A journal failure answers 500 and hands the process
to its rebuild (memory is rolled back to what is durable), so a change is never reported as done
unless it survives a crash. See docs/admin.md for every route.
"""

from __future__ import annotations

import pathlib
import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.admin import keyfiles, views
from gateway.admin.bodies import ApiError, json_body, json_object, query_int, query_params, reason_of
from gateway.core.governance import REFUSED_CONFLICT, REFUSED_SEPARATION, REFUSED_UNKNOWN, AdminRefusal, FieldError
from gateway.core import supervision_report
from gateway.core.records import Record
from gateway.core.registry import ID, Admin
from protocol import public_raw
from gateway.journal.errors import JournalFailed, JournalFull
from gateway.admin.auth import authenticate
from gateway.logs import log_event
from gateway.runtime import Runtime

__all__ = ["AdminApi", "ROLE_RANK"]

ROLE_RANK = {"viewer": 0, "operator": 1, "policy": 2}
AUDIT_PAGE_MAX = 1000
AUDIT_PAGE_DEFAULT = 100
RETRY_AFTER_S = "1"
_JSON = ("content-type", "application/json")
_SEG = r"([^/]+)"
# (entity path segment, verb) -> (change kind, the change's field naming the entity)
PROTECTIVE_ROUTES = {
    ("institutions", "suspend"): ("institution.suspend", "institution"),
    ("institutions", "resume"): ("institution.resume", "institution"),
    ("operators", "suspend"): ("operator.suspend", "operator"),
    ("operators", "resume"): ("operator.resume", "operator"),
    ("terminals", "revoke"): ("terminal.revoke", "dev_no"),
    ("cards", "block"): ("card.block", "card_no"),
    ("cards", "unblock"): ("card.unblock", "card_no"),
    ("persons", "block"): ("person.block", "psn_no"),
    ("persons", "unblock"): ("person.unblock", "psn_no"),
    ("institutions", "hold"): ("institution.hold", "institution"),
    ("institutions", "release"): ("institution.release", "institution"),
}
_EXISTING = {"institutions": "institutions", "operators": "operators", "terminals": "terminals"}


# The admin shell's HTTP status for each reason the core refuses an admin request.
REFUSAL_STATUS = {REFUSED_UNKNOWN: 404, REFUSED_SEPARATION: 403, REFUSED_CONFLICT: 409}


class AdminApi:
    """The `AdminHandler` of gateway.server.admin_routes (see module docstring)."""

    def __init__(self, runtime: Runtime, admins: Sequence[Admin], signing_key_path: pathlib.Path,
                 seal_key: Callable[[Ed25519PrivateKey], bytes] | None = None) -> None:
        """`seal_key` (cluster mode): a rotation journals its new key sealed by it, and writes no file."""
        self.runtime = runtime
        self.admins = tuple(admins)
        self.signing_key_path = pathlib.Path(signing_key_path)
        self.seal_key = seal_key
        self._rotation_lock = trio.Lock()
        # (method, compiled path, minimum role, handler(admin, match, body, query) -> (status, payload))
        self._routes: list[tuple[str, re.Pattern[str], str, Callable[..., Any]]] = [
            ("GET", re.compile(r"/admin/v1/audit"), "viewer", self._audit),
            ("GET", re.compile(r"/admin/v1/keys"), "viewer", self._keys),
            ("POST", re.compile(r"/admin/v1/keys/rotate"), "operator", self._rotate),
            ("POST", re.compile(r"/admin/v1/snapshot"), "operator", self._snapshot),
            ("GET", re.compile(r"/admin/v1/changes"), "viewer", self._list_changes),
            ("POST", re.compile(r"/admin/v1/changes"), "policy", self._propose),
            ("GET", re.compile(rf"/admin/v1/changes/{_SEG}"), "viewer", self._show_change),
            ("POST", re.compile(rf"/admin/v1/changes/{_SEG}/(approve|reject)"), "policy", self._decide),
            ("GET", re.compile(rf"/admin/v1/(institutions|operators|terminals|cards|persons)/{_SEG}"),
             "viewer", self._show),
            ("POST", re.compile(rf"/admin/v1/(institutions|operators|terminals|cards|persons)/{_SEG}/([a-z]+)"),
             "operator", self._protective),
            # Supervision (SPEC 14): any admin role reads.
            ("GET", re.compile(r"/admin/v1/reports/monthly"), "viewer", self._monthly),
            ("GET", re.compile(r"/admin/v1/alerts"), "viewer", self._alerts),
            ("GET", re.compile(r"/admin/v1/clearing"), "viewer", self._clearing),
        ]

    async def handle(self, method: str, path: str, headers: Mapping[str, str],
                     body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        """Answer one admin request (the AdminHandler seam); never raises for bad input."""
        path, _, query = path.partition("?")
        try:
            status, payload = await self._dispatch(method, path, query, headers, body)
        except ApiError as exc:
            if exc.status in (401, 403):
                log_event("admin_refused", status=exc.status, method=method, path=path[:200])
            return exc.status, [_JSON, *exc.headers], json_body(exc.payload())
        return status, [_JSON], json_body(payload)

    async def _dispatch(self, method: str, path: str, query: str, headers: Mapping[str, str],
                        body: bytes) -> tuple[int, Any]:
        admin = authenticate(headers, self.admins)
        if admin is None:
            raise ApiError(401, "unauthorized: missing or unknown bearer token",
                           headers=(("www-authenticate", "Bearer"),))
        allowed = []
        for route_method, pattern, role, handler in self._routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if route_method != method:
                allowed.append(route_method)
                continue
            if ROLE_RANK.get(admin.role, -1) < ROLE_RANK[role]:
                raise ApiError(403, f"forbidden: needs role {role}, {admin.name} is {admin.role}")
            groups = [urllib.parse.unquote(g) for g in match.groups()]
            if method == "GET":
                await self._settled()
            return await handler(admin, groups, body, query)
        if allowed:
            raise ApiError(405, "method not allowed", headers=(("allow", ", ".join(sorted(set(allowed)))),))
        raise ApiError(404, "not found")

    # -- the durable commit ----------------------------------------------------------------

    def _now_ms(self) -> int:
        return self.runtime.clock.now_ms()

    async def _commit(self, build: Callable[[Any, int], Record]) -> Record:
        """Run `build(core, now_ms)` (which returns one record or raises), commit it and make it durable."""
        runtime = self.runtime
        if not runtime.writable():
            raise ApiError(503, "not ready: the gateway is recovering its state", headers=(("retry-after", "2"),))
        journal = runtime.journal
        try:
            journal.check_room()
        except JournalFull:
            raise ApiError(503, "the journal is busy; retry", headers=(("retry-after", RETRY_AFTER_S),)) from None
        except JournalFailed:
            raise ApiError(500, "the journal has failed; nothing was applied") from None
        try:
            record = runtime.sealer.commit_record(runtime.core, build(runtime.core, self._now_ms()))
        except FieldError as exc:
            raise ApiError(400, str(exc), exc.field) from None
        except AdminRefusal as exc:
            raise ApiError(REFUSAL_STATUS[exc.reason], exc.msg, exc.field) from None
        try:
            await runtime.make_durable(record, record.op)
        except (JournalFull, JournalFailed):
            raise ApiError(500, "the journal failed: the change is not applied (outcome rolled back)") from None
        return record

    async def _settled(self) -> None:
        """Wait until the state a read is about to show is durable (nothing a crash could roll back)."""
        try:
            await self.runtime.reads_settled()
        except (JournalFull, JournalFailed):
            raise ApiError(503, "the journal failed; retry once the gateway has recovered",
                           headers=(("retry-after", "2"),)) from None

    def _last_audit(self) -> dict[str, Any]:
        return dict(self.runtime.core.state.governance.audit[-1])

    # -- protective actions and look-ups ---------------------------------------------------

    async def _protective(self, admin: Admin, groups: list[str], body: bytes, query: str) -> tuple[int, Any]:
        entity, key, verb = groups
        route = PROTECTIVE_ROUTES.get((entity, verb))
        if route is None:
            raise ApiError(404, "not found")
        kind, field = route
        payload = json_object(body, ("reason",))
        reason = reason_of(payload)
        table = _EXISTING.get(entity)
        if table is not None and key not in getattr(self.runtime.core.state.overlay, table):
            raise ApiError(404, f"no {entity[:-1]} {key!r}", field)
        change = {"kind": kind, field: key}
        record = await self._commit(lambda core, now_ms: core.admin_apply(
            change, now_ms, actor=admin.name, role=admin.role, reason=reason))
        entry = self._last_audit()
        return 200, {"op": record.op, "action": kind, field: key, "before": entry["before"],
                     "after": entry["after"], "reason": reason, "at_ms": record.now_ms}  # type: ignore[attr-defined]

    async def _show(self, admin: Admin, groups: list[str], body: bytes, query: str) -> tuple[int, Any]:
        entity, key = groups
        if not re.fullmatch(ID, key):
            raise ApiError(400, f"bad {entity[:-1]} id {key[:80]!r}", "id")
        core, now_ms = self.runtime.core, self._now_ms()
        if entity == "institutions":
            return 200, views.institution_view(core, key, now_ms)
        if entity == "persons":
            return 200, views.person_view(core, key, now_ms)
        if entity == "terminals":
            return 200, views.terminal_view(core, key)
        if entity == "operators":
            return 200, views.operator_view(core, key)
        return 200, {"card_no": key, "blocked": key in core.state.overlay.blocked_cards}

    # -- supervision (SPEC 14) ---------------------------------------------------------------

    def _report(self, query: str, names: tuple[str, ...], build: Callable[..., dict[str, Any]]) -> tuple[int, Any]:
        params = query_params(query, names)
        try:
            return 200, build(self.runtime.core.state, *(params.get(name) for name in names))
        except FieldError as exc:
            raise ApiError(400, str(exc), exc.field) from None

    async def _monthly(self, admin: Admin, groups: list[str], body: bytes, query: str) -> tuple[int, Any]:
        return self._report(query, ("month", "by"), supervision_report.monthly_body)

    async def _alerts(self, admin: Admin, groups: list[str], body: bytes, query: str) -> tuple[int, Any]:
        return self._report(query, ("date",), supervision_report.alerts_body)

    async def _clearing(self, admin: Admin, groups: list[str], body: bytes, query: str) -> tuple[int, Any]:
        return self._report(query, ("month",), supervision_report.clearing_body)

    # -- maker-checker ---------------------------------------------------------------------

    async def _propose(self, admin: Admin, groups: list[str], body: bytes, query: str) -> tuple[int, Any]:
        change = json_object(body, None)
        reason = reason_of(change)
        change.pop("reason", None)
        if "kind" not in change:
            raise ApiError(400, "kind: required", "kind")
        record = await self._commit(lambda core, now_ms: core.propose_change(
            change, now_ms, actor=admin.name, role=admin.role, reason=reason))
        proposal = self.runtime.core.state.governance.proposals[record.id]  # type: ignore[attr-defined]
        return 201, proposal.view(self._now_ms())

    async def _decide(self, admin: Admin, groups: list[str], body: bytes, query: str) -> tuple[int, Any]:
        change_id, verb = groups
        if verb == "approve":
            json_object(body, ())
            await self._commit(lambda core, now_ms: core.approve_change(
                change_id, now_ms, actor=admin.name, role=admin.role))
            entry = self._last_audit()
            extra = {"before": entry["before"], "after": entry["after"]}
        else:
            reason = reason_of(json_object(body, ("reason",)))
            await self._commit(lambda core, now_ms: core.reject_change(
                change_id, now_ms, actor=admin.name, role=admin.role, reason=reason))
            extra = {}
        proposal = self.runtime.core.state.governance.proposals[change_id]
        return 200, {**proposal.view(self._now_ms()), **extra}

    async def _list_changes(self, admin: Admin, groups: list[str], body: bytes, query: str) -> tuple[int, Any]:
        params = query_params(query, ("status",))
        status = params.get("status")
        if status not in (None, "proposed", "applied", "rejected", "expired"):
            raise ApiError(400, "status: one of proposed, applied, rejected, expired", "status")
        now_ms = self._now_ms()
        changes = [p.view(now_ms) for p in self.runtime.core.state.governance.proposals.values()]
        return 200, {"changes": [c for c in changes if status is None or c["status"] == status]}

    async def _show_change(self, admin: Admin, groups: list[str], body: bytes, query: str) -> tuple[int, Any]:
        proposal = self.runtime.core.state.governance.proposals.get(groups[0])
        if proposal is None:
            raise ApiError(404, f"no change {groups[0]!r}", "id")
        return 200, proposal.view(self._now_ms())

    # -- audit, keys, snapshot -------------------------------------------------------------

    async def _audit(self, admin: Admin, groups: list[str], body: bytes, query: str) -> tuple[int, Any]:
        params = query_params(query, ("after", "limit"))
        after = query_int(params, "after", 0, 0, 10**18)
        limit = query_int(params, "limit", AUDIT_PAGE_DEFAULT, 1, AUDIT_PAGE_MAX)
        entries, next_after = self.runtime.core.state.governance.audit_page(after, limit)
        return 200, {"entries": entries, "next": next_after}

    async def _keys(self, admin: Admin, groups: list[str], body: bytes, query: str) -> tuple[int, Any]:
        return 200, {"keys": self.runtime.core.public_keys()}

    async def _rotate(self, admin: Admin, groups: list[str], body: bytes, query: str) -> tuple[int, Any]:
        reason = reason_of(json_object(body, ("reason",)))
        if not self.runtime.writable():
            raise ApiError(503, "not ready: the gateway is recovering its state", headers=(("retry-after", "2"),))
        async with self._rotation_lock:
            new_key = Ed25519PrivateKey.generate()
            if self.seal_key is None:
                record = await self._rotate_in_files(admin, reason, new_key)
            else:
                record = await self._rotate_in_journal(admin, reason, new_key)
        log_event("key_rotated", kid=record.kid, retired_kid=record.retired_kid, admin=admin.name)
        return 200, {"op": record.op, "kid": record.kid, "retired_kid": record.retired_kid,
                     "keys": self.runtime.core.public_keys()}

    def _rotation(self, admin: Admin, reason: str, new_key: Ed25519PrivateKey,
                  sealed_key: bytes | None = None) -> Callable[[Any, int], Record]:
        return lambda core, now_ms: core.rotate_key(public_raw(new_key.public_key()), now_ms, actor=admin.name,
                                                    role=admin.role, reason=reason, sealed_key=sealed_key)

    async def _rotate_in_files(self, admin: Admin, reason: str, new_key: Ed25519PrivateKey) -> Record:
        """The embedded default: stage the key file, journal the rotation, install the file (keyfiles)."""
        try:
            await trio.to_thread.run_sync(keyfiles.stage_key, self.signing_key_path, new_key)
        except OSError as exc:
            raise ApiError(500, f"cannot write the new key file: {exc.strerror or exc}") from None
        try:
            record = await self._commit(self._rotation(admin, reason, new_key))
        except ApiError:
            # Refused before the core took it: the staged key is garbage. Otherwise (a journal
            # failure after the append) leave it to finish_pending_rotation at the next start.
            if self.runtime.core.state.governance.rotated_kid != keyfiles.key_kid(new_key):
                await trio.to_thread.run_sync(keyfiles.discard_staged, self.signing_key_path)
            raise
        # Durable: the rotation happened. Install the file first, so a journal-failure
        # rebuild (which re-reads the key file) keeps the new key, then start signing with it.
        try:
            await trio.to_thread.run_sync(keyfiles.install_staged, self.signing_key_path)
        except (OSError, keyfiles.KeyFileError) as exc:
            log_event("key_install_failed", kid=record.kid, detail=str(exc)[:200])
            self.runtime.sealer.activate(self.runtime.core, new_key)
            raise ApiError(500, f"rotation journaled (kid {record.kid}) but the key file was not "
                                f"replaced; it completes at the next start: {exc}") from None
        self.runtime.sealer.activate(self.runtime.core, new_key)
        return record

    async def _rotate_in_journal(self, admin: Admin, reason: str, new_key: Ed25519PrivateKey) -> Record:
        """Cluster mode: the record carries the key, sealed, so every process of the region gets it.

        The journal is the key's only durable home, so there is no file to stage: once the record
        is durable the key is the region's; if the journal fails first, the node that leads next
        finds the record in the journal (and signs with its key) or does not (and the old key stays).
        """
        assert self.seal_key is not None
        record = await self._commit(self._rotation(admin, reason, new_key, self.seal_key(new_key)))
        self.runtime.sealer.activate(self.runtime.core, new_key)
        return record

    async def _snapshot(self, admin: Admin, groups: list[str], body: bytes, query: str) -> tuple[int, Any]:
        reason = reason_of(json_object(body, ("reason",)))
        record = await self._commit(lambda core, now_ms: core.note_admin_action(
            "snapshot", now_ms, actor=admin.name, role=admin.role, reason=reason))
        runtime = self.runtime
        if runtime.snapshots is not None:
            written_before = runtime.snapshots.written
            await runtime.snapshots.take()
            if runtime.snapshots.written == written_before:
                raise ApiError(500, "the snapshot could not be written (see the gateway log)")
        else:
            try:
                await runtime.journal.snapshot_of(runtime.core)
            except (OSError, JournalFailed) as exc:
                raise ApiError(500, f"the snapshot could not be written: {exc}") from None
        # The snapshot covers at least every op up to this request's own record.
        return 200, {"snapshot_op": record.op}
