"""The catalogue in the core: it decides each line, admin changes reach it, replay reproduces it."""

from __future__ import annotations

import pathlib

import msgpack
import pytest

from core_world import T0_MS, World, card, line
from gateway.core import AdminRefusal, FieldError

# X1: 甲类 OTC; X2: 乙类 prescription with its own 20 % self-pay share and a 15-yuan cap;
# X3: restricted 甲类 OTC; X4: ended before T0 (2024-03-15).
CATALOGUE = """med_list_codg,name,chrgitm_lv,otc,selfpay_prop_permille,pric_uplmt_fen,lmt_used,valid_from,valid_to
X1,维生素C片,01,1,,,0,2024-01-01,
X2,阿莫西林胶囊,02,0,200,1500,0,,
X3,限定药,01,1,,,1,,
X4,停用药,01,1,,,0,,2024-03-14
"""


@pytest.fixture
def cw(tmp_path: pathlib.Path) -> World:
    return World(tmp_path, catalogue_csv=CATALOGUE)


def _cuts(env) -> list[tuple]:
    return [(c["feedetl_sn"], c["cut_reason"], c["fulamt_ownpay_amt"], c["overlmt_amt"], c["preselfpay_amt"],
             c["inscp_scp_amt"], c["chrgitm_lv"], c["otc"]) for c in env.output["detlcutinfo"]]


def test_the_catalogue_decides_each_line(cw: World) -> None:
    t = cw.sign_in()
    lines = [line("1", 1000), line("2", 2000, lv="01", otc=True, rxno="R", cnt=1), line("3", 500),
             line("4", 700), line("9", 300)]
    r, env = cw.settle(t, lines)
    assert env.infcode == 0, env
    assert _cuts(env) == [
        ("1", "", 0, 0, 0, 1000, "01", True),
        ("2", "", 0, 500, 300, 1200, "02", False),          # cap 15 yuan; 20 % of 1500 self-pay first
        ("3", "RESTRICTED_USE", 500, 0, 0, 0, "01", True),
        ("4", "NOT_IN_CATALOGUE", 700, 0, 0, 0, "01", True),  # its row ended yesterday: the till's word
        ("9", "NOT_IN_CATALOGUE", 300, 0, 0, 0, "01", True)]
    assert env.warnings[:3] == ("RESTRICTED_USE", "NOT_IN_CATALOGUE", "CATALOGUE_OVERRIDE")
    info = env.output["setlinfo"]
    assert info["overlmt_selfpay"] == 500
    # OTC 1000 from the day's allowance; rx floor(1200 * 700 / 1000) = 840.
    assert (info["otc_pay"], info["rx_pay"], info["fund_pay_sumamt"]) == (1000, 840, 1840)
    assert r.facts.cut_reasons == ("RESTRICTED_USE", "NOT_IN_CATALOGUE", "NOT_IN_CATALOGUE")
    assert r.facts.overlmt_fen == 500


def test_without_a_catalogue_class_and_otc_are_required(tmp_path: pathlib.Path) -> None:
    world = World(tmp_path)
    t = world.sign_in()
    item = line("1", 1000)
    del item["chrgitm_lv"]
    env = world.settle(t, [item])[1]
    assert (env.err_code, env.infcode) == ("MALFORMED_INPUT", -2) and "chrgitm_lv" in env.err_msg


def _approve(world: World, change: dict, now_ms: int = T0_MS) -> None:
    proposal = world.commit(world.core.propose_change(change, now_ms, actor="alice", role="policy"))
    world.commit(world.core.approve_change(proposal.id, now_ms, actor="bob", role="policy"))


def test_upsert_and_retire_through_maker_checker_change_the_next_settlement(cw: World) -> None:
    t = cw.sign_in()
    row = {"kind": "catalogue.upsert", "med_list_codg": "X9", "name": "新药", "chrgitm_lv": "03", "otc": "1",
           "selfpay_prop_permille": None, "pric_uplmt_fen": None, "lmt_used": "0", "valid_from": "2024-03-01",
           "valid_to": None}
    _approve(cw, row)
    env = cw.settle(t, [line("9", 300)])[1]
    assert _cuts(env) == [("9", "", 300, 0, 0, 0, "03", True)]
    _approve(cw, {"kind": "catalogue.retire", "med_list_codg": "X9", "valid_to": "2024-03-14"})
    assert cw.settle(t, [line("9", 300)])[1].output["detlcutinfo"][0]["cut_reason"] == "NOT_IN_CATALOGUE"
    audit = cw.core.state.governance.audit
    assert audit[-1]["action"] == "change.approve" and audit[-1]["after"]["rows"][0]["valid_to"] == "2024-03-14"
    assert cw.core.catalogue_rows == 5


@pytest.mark.parametrize("change, field", [
    ({"kind": "catalogue.upsert", "med_list_codg": "X1", "name": "n", "chrgitm_lv": "01", "otc": "1",
      "lmt_used": "0", "valid_from": "2024-02-01"}, "valid_from"),            # overlaps X1's open row
    ({"kind": "catalogue.upsert", "med_list_codg": "X8", "name": "n", "chrgitm_lv": "04", "otc": "1",
      "lmt_used": "0"}, "chrgitm_lv"),
    ({"kind": "catalogue.upsert", "med_list_codg": "X8", "name": "n", "chrgitm_lv": "01", "otc": 1,
      "lmt_used": "0"}, "otc"),
    ({"kind": "catalogue.upsert", "med_list_codg": "X8", "name": "n", "chrgitm_lv": "01", "otc": "1",
      "lmt_used": "0", "colour": "red"}, "colour"),
    ({"kind": "catalogue.retire", "med_list_codg": "X4", "valid_to": "2024-03-20"}, "valid_to"),
    ({"kind": "catalogue.retire", "med_list_codg": "X1", "valid_to": "2024-02-30"}, "valid_to"),
])
def test_bad_catalogue_changes_name_the_field(cw: World, change: dict, field: str) -> None:
    with pytest.raises(FieldError) as raised:
        cw.core.propose_change(change, T0_MS, actor="alice", role="policy")
    assert raised.value.field == field


def test_a_change_that_no_longer_applies_is_a_conflict_at_approval(cw: World) -> None:
    retire = {"kind": "catalogue.retire", "med_list_codg": "X1", "valid_to": "2024-03-20"}
    first = cw.commit(cw.core.propose_change(retire, T0_MS, actor="alice", role="policy"))
    second = cw.commit(cw.core.propose_change({**retire, "valid_to": "2024-03-25"}, T0_MS, actor="alice",
                                              role="policy"))
    cw.commit(cw.core.approve_change(first.id, T0_MS, actor="bob", role="policy"))
    with pytest.raises(AdminRefusal) as raised:
        cw.core.approve_change(second.id, T0_MS, actor="bob", role="policy")
    assert (raised.value.reason, raised.value.field) == ("conflict", "valid_to")


def test_the_catalogue_is_off_without_its_file(tmp_path: pathlib.Path) -> None:
    world = World(tmp_path)
    with pytest.raises(FieldError) as raised:
        world.core.propose_change({"kind": "catalogue.retire", "med_list_codg": "X1", "valid_to": "2024-03-20"},
                                  T0_MS, actor="alice", role="policy")
    assert raised.value.field == "kind"


def test_replay_and_snapshot_reproduce_catalogue_changes(cw: World) -> None:
    _approve(cw, {"kind": "catalogue.retire", "med_list_codg": "X1", "valid_to": "2024-03-14"})
    t = cw.sign_in()
    cw.settle(t, [line("1", 1000)], who=card("R1"))
    cw.assert_replay_and_restore()
    restored = cw.make_core()
    restored.restore(msgpack.unpackb(msgpack.packb(cw.core.snapshot(), use_bin_type=True), raw=False))
    assert restored.state.catalogue.lookup("X1", restored.state.settlements.snapshot()[0]["day"]) is None
