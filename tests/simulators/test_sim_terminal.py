"""SimTerminal against a scripted gateway: signatures, session loss, unknown outcomes, clock, 3202 pages."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sim_helpers import signin_output, small_region

from protocol import (
    RequestEnvelope,
    ResponseEnvelope,
    decode_frame,
    decode_request_envelope,
    gateway_kid,
    public_raw,
    seal_response,
)
from simulators.oracle import Oracle, Totals
from simulators.region import Region
from simulators.report import Stats
from simulators.terminal import MsgidSource, SimTerminal

Script = Callable[[RequestEnvelope, int], ResponseEnvelope]


def answer(req: RequestEnvelope, infcode: int = 0, err_code: str = "", output: dict | None = None) -> ResponseEnvelope:
    return ResponseEnvelope(infcode, err_code, err_code, req.msgid, "5101822025112312000000000001", 0,
                            output if infcode == 0 else None)


class ScriptedGateway:
    """Answers each POST with `script(request, how many of this infno came before)`."""

    def __init__(self, script: Script, signer: Ed25519PrivateKey) -> None:
        self.script, self.signer = script, signer
        self.sent: list[RequestEnvelope] = []
        self.sign_time_ms = 0

    async def post_frame(self, frame: bytes) -> tuple[int, bytes, float]:
        req = decode_request_envelope(decode_frame(frame).body)
        seen = sum(r.infno == req.infno for r in self.sent)
        self.sent.append(req)
        if req.infno == "9001":
            output = signin_output(f"SIGN{len(self.sent)}", self.sign_time_ms)
            return 200, seal_response(self.signer, answer(req, output=output)), 0.001
        return 200, seal_response(self.signer, self.script(req, seen)), 0.001

    async def aclose(self) -> None:
        """Nothing to close."""


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Region:
    return small_region(tmp_path_factory.mktemp("terminal"))


def clinic_terminal(region: Region, gateway: ScriptedGateway, published: Ed25519PrivateKey) -> SimTerminal:
    spec = next(t for t in region.terminals if region.institutions[t.institution].kind == "clinic")
    keys = {gateway_kid(public_raw(published.public_key())): published.public_key()}
    oracle = Oracle({}, {c: i.monthly_cap_fen for c, i in region.institutions.items()})
    return SimTerminal(spec, region, gateway, keys, oracle, Stats(), MsgidSource())  # type: ignore[arg-type]


def bill(fee_fen: int) -> dict:
    return {"seq": 1, "credential": "card", "retries": 0, "items": [
        {"feedetl_sn": "1", "med_list_codg": "XA01", "chrgitm_lv": "01", "otc": False, "cnt": 1,
         "pric": fee_fen, "det_item_fee_sumamt": fee_fen, "bilg_dr_codg": "C51018200001-DR01"}]}


def settled(req: RequestEnvelope, fee_fen: int) -> ResponseEnvelope:
    info = {"setl_id": "S1", "psn_no": req.input["psn_no"], "setl_time": req.inf_time, "medfee_sumamt": fee_fen,
            "fund_pay_sumamt": fee_fen // 2, "psn_cash_pay": fee_fen - fee_fen // 2, "otc_pay": 0,
            "rx_pay": fee_fen // 2, "crt_payb_lmt_amt": 0}
    return answer(req, output={"setlinfo": info})


async def test_answer_signed_by_an_unpublished_key_is_a_violation(region: Region) -> None:
    gateway = ScriptedGateway(lambda req, _: settled(req, 1000), Ed25519PrivateKey.generate())
    terminal = clinic_terminal(region, gateway, Ed25519PrivateKey.generate())
    assert await terminal.settle(bill(1000), region.persons[0]) is None
    assert len(terminal.oracle.violations) == 1 and "unverifiable" in terminal.oracle.violations[0]


async def test_lost_session_and_unknown_outcome_resend_the_same_msgid(region: Region) -> None:
    def script(req: RequestEnvelope, seen: int) -> ResponseEnvelope:
        if req.infno == "2207" and seen == 0:
            return answer(req, -2, "SESSION_UNKNOWN")
        if req.infno == "2207" and seen == 1:
            return answer(req, -1, "INTERNAL")
        return settled(req, 1000)

    key = Ed25519PrivateKey.generate()
    gateway = ScriptedGateway(script, key)
    terminal = clinic_terminal(region, gateway, key)
    result = await terminal.settle(bill(1000), region.persons[0])
    assert result is not None and terminal.oracle.violations == []
    settles = [r for r in gateway.sent if r.infno == "2207"]
    assert len(settles) == 3 and len({r.msgid for r in settles}) == 1
    assert [r.infno for r in gateway.sent].count("9001") == 2
    assert settles[0].sign_no != settles[2].sign_no


async def test_outcome_unknown_after_all_attempts_is_reversed(region: Region,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("simulators.terminal.RETRY_PAUSE_S", 0.0)

    def script(req: RequestEnvelope, _: int) -> ResponseEnvelope:
        if req.infno == "2207":
            return answer(req, -1, "INTERNAL")
        if req.infno == "2601":
            return answer(req, output={"reversed": True, "original_found": True})
        return settled(req, 1000)

    key = Ed25519PrivateKey.generate()
    gateway = ScriptedGateway(script, key)
    terminal = clinic_terminal(region, gateway, key)
    assert await terminal.settle(bill(1000), region.persons[0]) is None
    reversal = next(r for r in gateway.sent if r.infno == "2601")
    first_settle = next(r for r in gateway.sent if r.infno == "2207")
    assert reversal.input == {"omsgid": first_settle.msgid, "oinfno": "2207"}
    assert terminal.oracle.violations == []


async def test_sign_in_syncs_the_clock_with_the_gateway(region: Region) -> None:
    key = Ed25519PrivateKey.generate()
    gateway = ScriptedGateway(lambda req, _: settled(req, 1000), key)
    gateway.sign_time_ms = int(time.time() * 1000) + 6 * 3_600_000  # a gateway clock moved 6 h ahead
    terminal = clinic_terminal(region, gateway, key)
    assert await terminal.sign_in()
    assert abs(terminal.clock.now_ms() - gateway.sign_time_ms) < 5_000
    await terminal.settle(bill(1000), region.persons[0])
    assert abs(gateway.sent[-1].inf_time - gateway.sign_time_ms) < 5_000


async def test_detail_follows_next_until_nil(region: Region) -> None:
    def script(req: RequestEnvelope, seen: int) -> ResponseEnvelope:
        rows = [{"setl_id": f"S{seen}{n:03d}"} for n in range(200 if seen < 2 else 7)]
        return answer(req, output={"rows": rows, "next": rows[-1]["setl_id"] if seen < 2 else None})

    key = Ed25519PrivateKey.generate()
    gateway = ScriptedGateway(script, key)
    pages = await clinic_terminal(region, gateway, key).detail("20251123")
    assert pages is not None and [len(p["rows"]) for p in pages] == [200, 200, 7]
    asked = [r.input for r in gateway.sent if r.infno == "3202"]
    assert [a.get("after") for a in asked] == [None, "S0199", "S1199"]
    assert all(a["stmt_date"] == "20251123" for a in asked)


def reversing_gateway(resend: Callable[[RequestEnvelope], ResponseEnvelope],
                      found: bool = True) -> tuple[ScriptedGateway, Ed25519PrivateKey]:
    """Settles the first 2207, reverses on 2601 (original_found `found`), answers a resend with `resend`."""
    def script(req: RequestEnvelope, seen: int) -> ResponseEnvelope:
        if req.infno == "2207":
            return settled(req, 1000) if seen == 0 else resend(req)
        if req.infno == "2601":
            return answer(req, output={"reversed": True, "original_found": found})
        return settled(req, 1000)

    key = Ed25519PrivateKey.generate()
    return ScriptedGateway(script, key), key


def timed_out_bill() -> dict:
    return {**bill(1000), "retries": 1, "timeout": True}


async def test_timed_out_settlement_is_reversed_not_counted_and_its_resend_refused(region: Region) -> None:
    gateway, key = reversing_gateway(lambda req: answer(req, -2, "ORIGINAL_REVERSED"))
    terminal = clinic_terminal(region, gateway, key)
    assert await terminal.settle(timed_out_bill(), region.persons[0]) is None
    assert [r.infno for r in gateway.sent if r.infno != "9001"] == ["2206", "2207", "2601", "2207"]
    first, reversal, resend = (r for r in gateway.sent if r.infno in ("2207", "2601"))
    assert reversal.input == {"omsgid": first.msgid, "oinfno": "2207"} and resend.msgid == first.msgid
    oracle = terminal.oracle
    assert oracle.violations == [] and oracle.settlements == {}
    assert list(oracle.reversed) == [(terminal.institution.code, "S1")]
    assert oracle.reversals == {("2207", "original found"): 1}
    day = oracle.reversed[terminal.institution.code, "S1"].day
    assert oracle.standing_totals(terminal.institution.code, day) == Totals()


async def test_resend_after_reversal_answered_with_the_original_is_a_violation(region: Region) -> None:
    gateway, key = reversing_gateway(lambda req: settled(req, 1000))
    terminal = clinic_terminal(region, gateway, key)
    await terminal.settle(timed_out_bill(), region.persons[0])
    [violation] = terminal.oracle.violations
    assert "resend of reversed" in violation and "expected -2 'ORIGINAL_REVERSED'" in violation


async def test_reversal_that_misses_an_applied_original_is_a_violation(region: Region) -> None:
    gateway, key = reversing_gateway(lambda req: answer(req, -2, "ORIGINAL_REVERSED"), found=False)
    terminal = clinic_terminal(region, gateway, key)
    await terminal.settle(timed_out_bill(), region.persons[0])
    assert len(terminal.oracle.violations) == 1
    assert "original_found False, but the original was applied" in terminal.oracle.violations[0]


async def test_timed_out_settlement_that_was_refused_leaves_a_tombstone(region: Region) -> None:
    def script(req: RequestEnvelope, seen: int) -> ResponseEnvelope:
        if req.infno == "2207":
            return answer(req, -2, "CARD_BLOCKED" if seen == 0 else "ORIGINAL_REVERSED")
        if req.infno == "2601":
            return answer(req, output={"reversed": True, "original_found": False})
        return settled(req, 1000)

    key = Ed25519PrivateKey.generate()
    gateway = ScriptedGateway(script, key)
    terminal = clinic_terminal(region, gateway, key)
    assert await terminal.settle(timed_out_bill(), region.persons[0]) is None
    oracle = terminal.oracle
    assert oracle.violations == [] and oracle.reversed == {} and oracle.settlements == {}
    assert oracle.reversals == {("2207", "original not found"): 1}
