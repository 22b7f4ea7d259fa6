"""Authentication, roles, routing, look-ups and bad input of the admin API (AdminApi.handle)."""

from __future__ import annotations

import pytest

from admin_world import C1, P1, P2, AdminWorld, aw, card, line  # noqa: F401


@pytest.mark.parametrize("who", [None, "wrong-token", "Basic xyz"])
async def test_missing_or_wrong_token_is_401(aw: AdminWorld, who: str | None) -> None:
    status, body = await aw.call("GET", f"/admin/v1/institutions/{P1}", who)
    assert status == 401 and body["error"].startswith("unauthorized")


async def test_basic_scheme_is_401(aw: AdminWorld) -> None:
    assert aw.api is not None
    status, _, _ = await aw.api.handle("GET", "/admin/v1/audit", {"authorization": "Basic tok-policy"}, b"")
    assert status == 401


ROUTES = [
    ("GET", f"/admin/v1/institutions/{P1}", "viewer"), ("GET", "/admin/v1/persons/PSN1", "viewer"),
    ("GET", "/admin/v1/terminals/T1", "viewer"), ("GET", "/admin/v1/operators/OP1", "viewer"),
    ("GET", "/admin/v1/cards/C1", "viewer"), ("GET", "/admin/v1/changes", "viewer"),
    ("GET", "/admin/v1/audit", "viewer"), ("GET", "/admin/v1/keys", "viewer"),
    ("POST", f"/admin/v1/institutions/{P1}/suspend", "operator"),
    ("POST", f"/admin/v1/institutions/{P1}/resume", "operator"),
    ("POST", "/admin/v1/operators/OP1/suspend", "operator"), ("POST", "/admin/v1/operators/OP1/resume", "operator"),
    ("POST", "/admin/v1/terminals/T5/revoke", "operator"), ("POST", "/admin/v1/cards/C9/block", "operator"),
    ("POST", "/admin/v1/cards/C9/unblock", "operator"), ("POST", "/admin/v1/persons/P9/block", "operator"),
    ("POST", "/admin/v1/persons/P9/unblock", "operator"), ("POST", "/admin/v1/snapshot", "operator"),
    ("POST", "/admin/v1/keys/rotate", "operator"), ("POST", "/admin/v1/changes", "policy"),
]
RANK = {"viewer": 0, "operator": 1, "policy": 2}


@pytest.mark.parametrize(("method", "path", "needed"), ROUTES)
async def test_every_route_enforces_its_role(aw: AdminWorld, method: str, path: str, needed: str) -> None:
    body = {"kind": "institution.grade", "institution": P2, "grade": "B"} if path.endswith("/changes") else None
    for who in ("viewer", "operator", "policy"):
        status, answer = await aw.call(method, path, who, body)
        if RANK[who] < RANK[needed]:
            assert status == 403 and needed in answer["error"], (who, answer)
        else:
            assert status in (200, 201), (who, answer)


async def test_decisions_need_policy_role(aw: AdminWorld) -> None:
    status, proposal = await aw.call("POST", "/admin/v1/changes", "policy",
                                     {"kind": "institution.grade", "institution": P2, "grade": "B"})
    assert status == 201
    for verb in ("approve", "reject"):
        status, _ = await aw.call("POST", f"/admin/v1/changes/{proposal['id']}/{verb}", "operator")
        assert status == 403


async def test_unknown_path_404_and_wrong_method_405(aw: AdminWorld) -> None:
    assert (await aw.call("GET", "/admin/v1/nothing", "viewer"))[0] == 404
    assert (await aw.call("POST", f"/admin/v1/institutions/{P1}/explode", "operator"))[0] == 404
    assert aw.api is not None
    status, headers, _ = await aw.api.handle("DELETE", "/admin/v1/audit", {"authorization": "Bearer tok-viewer"}, b"")
    assert status == 405 and ("allow", "GET") in headers


async def test_institution_lookup_shows_month_ledger(aw: AdminWorld) -> None:
    env = await aw.settle([line("1", 5000)], card("PSN1"), dev_no="T2")
    fund_fen = env.output["setlinfo"]["fund_pay_sumamt"]
    assert fund_fen > 0
    status, view = await aw.call("GET", f"/admin/v1/institutions/{P2}", "viewer")
    assert status == 200
    assert (view["kind"], view["grade"], view["status"], view["monthly_cap_fen"]) == ("pharmacy", "C", "active", 20_000)
    assert view["month"] == "202403" and view["month_used_fen"] == fund_fen
    assert view["month_room_fen"] == 20_000 - fund_fen and view["otc_allowance_day_fen"] == 6000
    assert view["terminals"] == ["T2"]
    status, clinic = await aw.call("GET", f"/admin/v1/institutions/{C1}", "viewer")
    assert clinic["grade"] is None and clinic["otc_allowance_day_fen"] == 0
    assert (await aw.call("GET", "/admin/v1/institutions/P00000000000", "viewer"))[0] == 404


async def test_person_lookup_shows_days_and_block(aw: AdminWorld) -> None:
    env = await aw.settle([line("1", 3000)], card("PSN7"))
    status, view = await aw.call("GET", "/admin/v1/persons/PSN7", "viewer")
    assert status == 200 and view["blocked"] is False
    assert view["days"][-1] == {"date": "2024-03-15", "otc_used_fen": env.output["setlinfo"]["otc_pay"]}
    assert view["days"][0]["otc_used_fen"] == 0
    status, blocked = await aw.call("GET", "/admin/v1/persons/PBLK", "viewer")
    assert blocked["blocked"] is True
    status, filed = await aw.call("GET", "/admin/v1/persons/X001", "viewer")
    assert filed["filings"] == [{"admdvs": "51", "valid_from": "2024-01-01", "valid_to": "2024-03-31"}]


async def test_terminal_operator_card_lookups(aw: AdminWorld) -> None:
    assert (await aw.call("GET", "/admin/v1/terminals/T4", "viewer"))[1] == {
        "dev_no": "T4", "institution": P1, "status": "revoked"}
    assert (await aw.call("GET", "/admin/v1/operators/DR1", "viewer"))[1]["status"] == "suspended"
    assert (await aw.call("GET", "/admin/v1/cards/CBLK", "viewer"))[1] == {"card_no": "CBLK", "blocked": True}
    assert (await aw.call("GET", "/admin/v1/terminals/NOPE", "viewer"))[0] == 404
    assert (await aw.call("GET", "/admin/v1/operators/NOPE", "viewer"))[0] == 404


BAD = [
    (f"/admin/v1/institutions/{P1}/suspend", None, b"{not json", "body"),
    (f"/admin/v1/institutions/{P1}/suspend", None, b"[1, 2]", "body"),
    (f"/admin/v1/institutions/{P1}/suspend", {"reason": "x", "extra": 1}, None, "extra"),
    (f"/admin/v1/institutions/{P1}/suspend", {"reason": 5}, None, "reason"),
    (f"/admin/v1/institutions/{P1}/suspend", {"reason": "x" * 501}, None, "reason"),
    ("/admin/v1/cards/bad%20card/block", {}, None, "card_no"),
    ("/admin/v1/changes", {"kind": "institution.monthly_cap", "institution": P1, "monthly_cap_fen": -1}, None,
     "monthly_cap_fen"),
    ("/admin/v1/changes", {"kind": "institution.monthly_cap", "institution": P1, "monthly_cap_fen": 1.5}, None,
     "monthly_cap_fen"),
    ("/admin/v1/changes", {"kind": "institution.grade", "institution": P1, "grade": "Z"}, None, "grade"),
    ("/admin/v1/changes", {"kind": "institution.grade", "institution": C1, "grade": "A"}, None, "institution"),
    ("/admin/v1/changes", {"kind": "institution.grade", "institution": P1}, None, "grade"),
    ("/admin/v1/changes", {"kind": "institution.grade", "institution": P1, "grade": "A", "x": 1}, None, "x"),
    ("/admin/v1/changes", {"kind": "nope"}, None, "kind"),
    ("/admin/v1/changes", {"grade": "A"}, None, "kind"),
    ("/admin/v1/changes", {"kind": "institution.suspend", "institution": P1}, None, "kind"),
    ("/admin/v1/changes", {"kind": "institution.grade", "institution": P1, "grade": "A", "actor": "me"}, None,
     "actor"),
    ("/admin/v1/changes", {"kind": "policy.coverage", "insutype": "310", "coverage_permille": 1001}, None,
     "coverage_permille"),
    ("/admin/v1/changes", {"kind": "policy.otc_allowance", "grade": "A", "otc_allowance_fen": True}, None,
     "otc_allowance_fen"),
    ("/admin/v1/changes", {"kind": "terminal.enrol", "dev_no": "T9", "institution": P1, "public_key": "AAAA"},
     None, "public_key"),
    ("/admin/v1/changes", {"kind": "terminal.enrol", "dev_no": "T1", "institution": P1,
                           "public_key": "A" * 43 + "="}, None, "dev_no"),
    ("/admin/v1/changes", {"kind": "operator.enrol", "code": "OP1", "institution": P1}, None, "code"),
    ("/admin/v1/changes", {"kind": "filing.add", "psn_no": "Z1", "admdvs": "5101", "valid_from": "2024-01-01",
                           "valid_to": "2024-02-01"}, None, "admdvs"),
    ("/admin/v1/changes", {"kind": "filing.add", "psn_no": "Z1", "admdvs": "51", "valid_from": "2024-02-30",
                           "valid_to": "2024-03-01"}, None, "valid_from"),
    ("/admin/v1/changes", {"kind": "filing.add", "psn_no": "Z1", "admdvs": "51", "valid_from": "2024-03-01",
                           "valid_to": "2024-02-01"}, None, "valid_to"),
    ("/admin/v1/changes", None, b'{"kind": NaN}', "body"),
    ("/admin/v1/keys/rotate", {"force": True}, None, "force"),
]


@pytest.mark.parametrize(("path", "body", "raw", "field"), BAD)
async def test_bad_input_is_400_naming_the_field_and_applies_nothing(
        aw: AdminWorld, path: str, body: object, raw: bytes | None, field: str) -> None:
    before = aw.core.snapshot()
    status, answer = await aw.call("POST", path, "policy", body, raw)
    assert status == 400, answer
    assert answer["field"] == field and answer["error"]
    assert aw.core.snapshot() == before


@pytest.mark.parametrize(("query", "field"), [("limit=0", "limit"), ("limit=1001", "limit"), ("after=-1", "after"),
                                              ("after=x", "after"), ("page=2", "page"), ("limit=1&limit=2", "limit"),
                                              ("limit=%C2%B2", "limit")])
async def test_bad_audit_query_is_400(aw: AdminWorld, query: str, field: str) -> None:
    status, answer = await aw.call("GET", f"/admin/v1/audit?{query}", "viewer")
    assert (status, answer["field"]) == (400, field)


async def test_bad_changes_filter_is_400(aw: AdminWorld) -> None:
    status, answer = await aw.call("GET", "/admin/v1/changes?status=done", "viewer")
    assert (status, answer["field"]) == (400, "status")


async def test_lookup_ids_are_validated(aw: AdminWorld) -> None:
    status, answer = await aw.call("GET", "/admin/v1/persons/a%20b", "viewer")
    assert (status, answer["field"]) == (400, "id")
