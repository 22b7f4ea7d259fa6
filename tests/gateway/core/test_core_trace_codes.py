"""Traceability codes (SPEC 13): a whole-package code is sold once while its settlement stands."""

from __future__ import annotations

import pathlib

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from core_world import P1, T0_MS, World, card, line
from gateway.core.supervision_report import alerts_body

DAY_MS = 86_400_000
CATALOGUE = """med_list_codg,name,chrgitm_lv,otc,selfpay_prop_permille,pric_uplmt_fen,lmt_used,valid_from,valid_to
X1,维生素C片,01,1,,,0,,
X2,布洛芬,02,1,,,0,,
"""


def traced(sn: str, fee: int, *codes: str, split: bool = False, cnt: int = 1) -> dict:
    item = line(sn, fee, cnt=cnt)
    item["drug_trac_codg"] = list(codes)
    if split:
        item["trdn_flag"] = "1"
    return item


@pytest.fixture
def cw(tmp_path: pathlib.Path) -> World:
    return World(tmp_path, catalogue_csv=CATALOGUE)


def test_a_code_is_sold_once_and_the_refusal_names_only_this_request(cw: World) -> None:
    t = cw.sign_in()
    first = cw.settle(t, [traced("1", 1000, "C0000000000000000001")], who=card("A1"))[1]
    assert first.infcode == 0 and first.output["detlcutinfo"][0]["drug_trac_codg"] == ["C0000000000000000001"]
    before = cw.core.snapshot()
    for infno in ("2101", "2102"):
        env = cw.settle(t, [traced("7", 500, "C0000000000000000002"), traced("8", 1000, "C0000000000000000001")],
                        who=card("A2"), infno=infno)[1]
        assert (env.infcode, env.err_code) == (-2, "TRACE_CODE_REUSED"), env
        assert "8" in env.err_msg and first.output["setlinfo"]["setl_id"] not in env.err_msg
    # Nothing is applied; the first refusal of the day only journals its supervision alert (SPEC 14).
    after = cw.core.snapshot()
    assert {k: v for k, v in after.items() if k not in ("supervision", "last_op")} == {
        k: v for k, v in before.items() if k not in ("supervision", "last_op")}
    assert after["last_op"] == before["last_op"] + 1
    (alert,) = alerts_body(cw.core.state, "20240315")["alerts"]
    assert (alert["code"], alert["subject"]) == ("TRACE_CODE_REUSE_ATTEMPT", P1)
    assert (alert["detail"]["infno"], alert["detail"]["feedetl_sn"], alert["detail"]["drug_trac_codg"]) == (
        "2101", "8", "C0000000000000000001")


def test_cancel_and_reversal_release_and_reinstatement_holds_again(cw: World) -> None:
    t = cw.sign_in()
    code = "C0000000000000000003"
    info = cw.settle(t, [traced("1", 1000, code)], who=card("B1"))[1].output["setlinfo"]
    cancel_mid = cw.next_msgid(P1, T0_MS)
    assert cw.send(t, "2103", {"setl_id": info["setl_id"], "psn_no": "B1"}, msgid_=cancel_mid)[1].infcode == 0
    assert cw.settle(t, [traced("1", 1000, code)], who=card("B2"), infno="2101")[1].infcode == 0
    # Re-instating the cancellation holds the code again, without a check.
    assert cw.send(t, "2601", {"omsgid": cancel_mid, "oinfno": "2103"})[1].output["original_found"] is True
    assert cw.settle(t, [traced("1", 1000, code)], who=card("B2"))[1].err_code == "TRACE_CODE_REUSED"
    mid = cw.next_msgid(P1, T0_MS)
    other = "C0000000000000000004"
    assert cw.settle(t, [traced("1", 1000, other)], who=card("B3"), msgid_=mid)[1].infcode == 0
    assert cw.send(t, "2601", {"omsgid": mid, "oinfno": "2102"})[1].infcode == 0
    assert cw.settle(t, [traced("1", 1000, other)], who=card("B4"))[1].infcode == 0


def test_split_packages_clinics_and_the_retention(cw: World) -> None:
    t = cw.sign_in()
    code = "C0000000000000000005"
    assert cw.settle(t, [traced("1", 1000, code, split=True)], who=card("C1"))[1].infcode == 0
    assert cw.settle(t, [traced("1", 1000, code, split=True)], who=card("C2"))[1].infcode == 0
    assert cw.settle(t, [traced("1", 1000, code)], who=card("C3"))[1].infcode == 0      # split ones were not held
    clinic = cw.sign_in("T3")
    assert cw.settle(clinic, [traced("1", 1000, code)], who=card("C4"), infno="2207")[1].infcode == 0
    retention_ms = cw.core.state.overlay.policy.trace_retention_days * DAY_MS
    late = T0_MS + retention_ms - 1
    t_late = cw.sign_in(now_ms=late)
    assert cw.settle(t_late, [traced("1", 1000, code)], who=card("C5"), now_ms=late)[1].err_code == \
        "TRACE_CODE_REUSED"
    later = T0_MS + retention_ms + 1
    t_later = cw.sign_in(now_ms=later)
    assert cw.settle(t_later, [traced("1", 1000, code)], who=card("C6"), now_ms=later)[1].infcode == 0


@pytest.mark.parametrize("items, field", [
    ([traced("1", 1000, "A", "B")], "drug_trac_codg"),                          # more codes than cnt
    ([traced("1", 1000, "A"), traced("2", 1000, "A")], "drug_trac_codg"),       # repeated among lines
    ([traced("1", 1000, "é")], "drug_trac_codg"),
    ([traced("1", 1000, "")], "drug_trac_codg"),
    ([traced("1", 1000, "x" * 65)], "drug_trac_codg"),
])
def test_bad_codes_are_malformed_input_naming_the_field(cw: World, items: list, field: str) -> None:
    t = cw.sign_in()
    env = cw.settle(t, items, who=card("D1"))[1]
    assert (env.err_code, env.infcode) == ("MALFORMED_INPUT", -2) and field in env.err_msg, env


def test_a_repeated_code_on_split_lines_is_allowed(cw: World) -> None:
    t = cw.sign_in()
    env = cw.settle(t, [traced("1", 1000, "A", split=True), traced("2", 1000, "A", split=True)],
                    who=card("D2"))[1]
    assert env.infcode == 0


def test_missing_codes_are_cut_from_the_required_day(tmp_path: pathlib.Path) -> None:
    world = World(tmp_path, catalogue_csv=CATALOGUE, trace_required_from="2024-03-15")
    t = world.sign_in()
    env = world.settle(t, [line("1", 1000), traced("2", 500, "Z1")], who=card("E1"))[1]
    assert [c["cut_reason"] for c in env.output["detlcutinfo"]] == ["TRACE_CODE_MISSING", ""]
    clinic = world.sign_in("T3")
    assert world.settle(clinic, [line("1", 1000)], who=card("E2"), infno="2207")[1].output[
        "detlcutinfo"][0]["cut_reason"] == ""


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["settle", "cancel", "reverse"]), st.integers(0, 5),
                          st.integers(0, 3)), min_size=1, max_size=25))
def test_held_codes_equal_the_codes_of_standing_settlements(tmp_path_factory: pytest.TempPathFactory,
                                                            commands: list) -> None:
    world = World(tmp_path_factory.mktemp("trace"), catalogue_csv=CATALOGUE)
    t = world.sign_in()
    sent: list[tuple[str, str, str]] = []          # (msgid, setl_id, psn_no) of answered 2102s
    for n, (kind, code_index, pick) in enumerate(commands):
        if kind == "settle":
            mid = world.next_msgid(P1, T0_MS)
            env = world.settle(t, [traced("1", 100, f"T{code_index:019d}")], who=card(f"H{n}"), msgid_=mid)[1]
            if env.infcode == 0:
                sent.append((mid, env.output["setlinfo"]["setl_id"], f"H{n}"))
        elif sent and kind == "cancel":
            _, setl_id, psn_no = sent[pick % len(sent)]
            world.send(t, "2103", {"setl_id": setl_id, "psn_no": psn_no})
        elif sent:
            world.send(t, "2601", {"omsgid": sent[pick % len(sent)][0], "oinfno": "2102"})
    standing = {code for s in world.core.state.settlements.standing() for code in s.trace_codes}
    held = {row[0] for row in world.core.state.trace.snapshot()}
    assert held == standing
    assert len(standing) == sum(len(s.trace_codes) for s in world.core.state.settlements.standing())
    world.assert_replay_and_restore()

