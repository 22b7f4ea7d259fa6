"""Protective actions: immediate, journaled, effective on the next request, surviving restart."""

from __future__ import annotations

from typing import Any

import pytest

from admin_world import P1, T0_MS, AdminWorld, aw, card, line  # noqa: F401
from gateway.journal.errors import JournalFailed, JournalFull


async def _settle_err(aw: AdminWorld, who: dict[str, str] | None = None, opter: str = "OP1",
                      dev_no: str = "T1") -> str:
    term = aw.world.sign_in(dev_no, opter, aw.now_ms)
    _, env = aw.world.settle(term, [line("1", 100)], who or card("PSN1"), now_ms=aw.now_ms)
    await aw.flush()
    return str(env.err_code)


async def test_institution_suspend_then_resume(aw: AdminWorld) -> None:
    term = await aw.sign_in("T1", "OP1")
    status, answer = await aw.call("POST", f"/admin/v1/institutions/{P1}/suspend", "operator", {"reason": "fraud probe"})
    assert status == 200
    assert (answer["before"], answer["after"], answer["reason"]) == ({"status": "active"}, {"status": "suspended"},
                                                                     "fraud probe")
    assert aw.runtime is not None and aw.runtime.journal.durable_op >= answer["op"]
    # The very next request on an already open session sees it.
    _, env = aw.world.settle(term, [line("1", 100)], card("PSN1"), now_ms=aw.now_ms)
    assert env.err_code == "INSTITUTION_SUSPENDED"
    await aw.flush()
    await aw.restart()
    assert await _settle_err(aw) == "INSTITUTION_SUSPENDED"
    assert (await aw.call("POST", f"/admin/v1/institutions/{P1}/resume", "policy", {}))[0] == 200
    assert await _settle_err(aw) == ""


async def test_operator_suspend_and_resume(aw: AdminWorld) -> None:
    assert (await aw.call("POST", "/admin/v1/operators/OP1/suspend", "operator", {"reason": "left"}))[0] == 200
    with pytest.raises(AssertionError):   # 9001 itself answers OPERATOR_SUSPENDED
        aw.world.sign_in("T1", "OP1", aw.now_ms)
    await aw.flush()
    await aw.restart()
    with pytest.raises(AssertionError):
        aw.world.sign_in("T1", "OP1", aw.now_ms)
    await aw.flush()
    assert (await aw.call("POST", "/admin/v1/operators/OP1/resume", "operator"))[0] == 200
    assert await _settle_err(aw) == ""


async def test_terminal_revoke_ends_open_sessions(aw: AdminWorld) -> None:
    term = await aw.sign_in("T5", "OP1")
    assert (await aw.call("POST", "/admin/v1/terminals/T5/revoke", "operator", {"reason": "stolen"}))[0] == 200
    _, env = aw.world.send(term, "1101", aw.world.card_fields(term, aw.world.next_msgid(P1, aw.now_ms), "1101", 0,
                                                               card("PSN1")), aw.now_ms)
    assert env.err_code == "TERMINAL_REVOKED"
    await aw.flush()
    await aw.restart()
    _, view = await aw.call("GET", "/admin/v1/terminals/T5", "viewer")
    assert view["status"] == "revoked"


async def test_card_block_unblock(aw: AdminWorld) -> None:
    who = card("PSN2")
    assert (await aw.call("POST", f"/admin/v1/cards/{who['card_no']}/block", "operator", {"reason": "lost"}))[0] == 200
    assert await _settle_err(aw, who) == "CARD_BLOCKED"
    await aw.restart()
    assert await _settle_err(aw, who) == "CARD_BLOCKED"
    assert (await aw.call("POST", f"/admin/v1/cards/{who['card_no']}/unblock", "operator"))[0] == 200
    assert await _settle_err(aw, who) == ""


async def test_person_block_unblock(aw: AdminWorld) -> None:
    who = card("PSN3")
    assert (await aw.call("POST", "/admin/v1/persons/PSN3/block", "operator", {"reason": "deceased"}))[0] == 200
    assert await _settle_err(aw, who) == "PERSON_INELIGIBLE"
    await aw.restart()
    assert await _settle_err(aw, who) == "PERSON_INELIGIBLE"
    _, answer = await aw.call("POST", "/admin/v1/persons/PSN3/unblock", "operator")
    assert (answer["before"], answer["after"]) == ({"blocked": True}, {"blocked": False})
    assert await _settle_err(aw, who) == ""


async def test_unknown_entities_are_404_with_nothing_applied(aw: AdminWorld) -> None:
    before = aw.core.last_op
    for path in ("/admin/v1/institutions/P99999999999/suspend", "/admin/v1/operators/NOPE/suspend",
                 "/admin/v1/terminals/NOPE/revoke"):
        assert (await aw.call("POST", path, "operator", {}))[0] == 404
    assert aw.core.last_op == before


class _FailingJournal:
    """Wraps the real journal; fails check_room or the durability wait as told."""

    def __init__(self, inner: Any, fail_at: str, error: type[Exception]) -> None:
        self.inner, self.fail_at, self.error = inner, fail_at, error
        self.appended: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def check_room(self) -> None:
        if self.fail_at == "check_room":
            raise self.error("no room")

    def append(self, record: dict[str, Any]) -> None:
        self.appended.append(record)

    async def wait_durable(self, op: int) -> None:
        raise self.error("disk on fire")


@pytest.mark.parametrize(("error", "status"), [(JournalFull, 503), (JournalFailed, 500)])
async def test_no_room_refuses_before_the_core(aw: AdminWorld, error: type[Exception], status: int) -> None:
    assert aw.runtime is not None
    aw.runtime.journal = _FailingJournal(aw.runtime.journal, "check_room", error)  # type: ignore[assignment]
    before = aw.core.snapshot()
    answer = await aw.call("POST", f"/admin/v1/institutions/{P1}/suspend", "operator", {})
    assert answer[0] == status
    assert aw.core.snapshot() == before and aw.failures == 0


async def test_journal_failure_is_500_and_hands_over_to_rebuild(aw: AdminWorld) -> None:
    assert aw.runtime is not None
    real = aw.runtime.journal
    aw.runtime.journal = _FailingJournal(real, "wait", JournalFailed)  # type: ignore[assignment]
    status, answer = await aw.call("POST", f"/admin/v1/institutions/{P1}/suspend", "operator", {})
    assert status == 500 and "not applied" in answer["error"]
    assert aw.failures == 1
    # What a rebuild from disk sees: the change never became durable.
    aw.runtime.journal = real
    await aw.restart()
    _, view = await aw.call("GET", f"/admin/v1/institutions/{P1}", "viewer")
    assert view["status"] == "active"


async def test_not_writable_while_rebuilding_is_503(aw: AdminWorld) -> None:
    assert aw.runtime is not None
    aw.runtime.rebuilding = True
    status, _ = await aw.call("POST", f"/admin/v1/institutions/{P1}/suspend", "operator", {})
    assert status == 503


async def test_audit_records_every_action_and_pages(aw: AdminWorld) -> None:
    aw.now_ms = T0_MS + 5
    await aw.call("POST", f"/admin/v1/institutions/{P1}/suspend", "operator", {"reason": "r1"})
    await aw.call("POST", "/admin/v1/cards/CX/block", "policy", {"reason": "r2"})
    await aw.call("POST", "/admin/v1/persons/PX/block", "operator", {"reason": "r3"})
    _, page = await aw.call("GET", "/admin/v1/audit?limit=2", "viewer")
    assert [e["seq"] for e in page["entries"]] == [1, 2] and page["next"] == 2
    first = page["entries"][0]
    assert (first["actor"], first["role"], first["action"], first["at_ms"], first["reason"]) == (
        "otto", "operator", "institution.suspend", T0_MS + 5, "r1")
    assert first["target"] == {"institution": P1} and first["after"] == {"status": "suspended"}
    assert page["entries"][1]["actor"] == "paula"
    _, rest = await aw.call("GET", "/admin/v1/audit?after=2&limit=2", "viewer")
    assert [e["action"] for e in rest["entries"]] == ["person.block"] and rest["next"] is None
    await aw.restart()
    _, again = await aw.call("GET", "/admin/v1/audit?after=0&limit=100", "viewer")
    assert again["entries"][:2] == page["entries"]
