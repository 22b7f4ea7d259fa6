"""The runner: one concurrent POS per terminal, each sequential, intents dispatched by dev_no."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import trio
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
from simulators.region import Region
from simulators.runner import Runner
from simulators.traffic import TrafficModel

SERVICE_S = 0.02  # how long the fake gateway takes per request: long enough for requests to overlap


class SlowGateway:
    """A gateway that answers every request correctly (all cash) after SERVICE_S, and records
    how many requests were in flight at once, overall and per terminal."""

    def __init__(self, signer: Ed25519PrivateKey) -> None:
        self.signer = signer
        self.in_flight: dict[str, int] = {}
        self.max_total = 0
        self.max_per_terminal = 0
        self.sent: list[RequestEnvelope] = []
        self.medfee_by_setl_id: dict[str, int] = {}
        self.serials = itertools.count(1)

    def client(self, _url: str) -> SlowGateway:
        return self

    async def aclose(self) -> None:
        """Nothing to close."""

    async def post_frame(self, frame: bytes) -> tuple[int, bytes, float]:
        req = decode_request_envelope(decode_frame(frame).body)
        self.sent.append(req)
        self.in_flight[req.dev_no] = self.in_flight.get(req.dev_no, 0) + 1
        self.max_total = max(self.max_total, sum(self.in_flight.values()))
        self.max_per_terminal = max(self.max_per_terminal, self.in_flight[req.dev_no])
        try:
            await trio.sleep(SERVICE_S)
        finally:
            self.in_flight[req.dev_no] -= 1
        return 200, seal_response(self.signer, self.answer(req)), SERVICE_S

    def answer(self, req: RequestEnvelope) -> ResponseEnvelope:
        output: dict[str, Any]
        if req.infno == "9001":
            output = signin_output(f"SIGN{next(self.serials)}", req.inf_time)
        elif req.infno in ("2101", "2102", "2206", "2207"):
            medfee = req.input["medfee_sumamt"]
            output = {"setlinfo": {"psn_no": req.input["psn_no"], "setl_time": req.inf_time, "medfee_sumamt": medfee,
                                   "fund_pay_sumamt": 0, "psn_cash_pay": medfee, "otc_pay": 0, "rx_pay": 0,
                                   "crt_payb_lmt_amt": 0}}
            if req.infno in ("2102", "2207"):
                output["setlinfo"]["setl_id"] = f"S{next(self.serials):06d}"
                self.medfee_by_setl_id[output["setlinfo"]["setl_id"]] = medfee
        elif req.infno in ("2103", "2208"):
            medfee = self.medfee_by_setl_id[req.input["setl_id"]]
            output = {"setl_id": req.input["setl_id"], "medfee_sumamt": -medfee, "fund_pay_sumamt": 0,
                      "psn_cash_pay": -medfee}
        else:
            output = {}
        return ResponseEnvelope(0, "", "", req.msgid, "5101822025112312000000000001", 0, output)


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Region:
    return small_region(tmp_path_factory.mktemp("concurrency"))


def card_bills(region: Region, count: int) -> list[dict[str, Any]]:
    """`count` settle intents arriving at once, paid by card (the fake reads psn_no off the card)."""
    model = TrafficModel(region, 21, 50.0)
    bills = (model.next_intent(0.0) for _ in itertools.count())
    # The fake pays everything in cash: the bills ask for no account (SPEC 13's who pays).
    return [{**b, "credential": "card", "retries": 0, "timeout": False, "acct": False, "payer": None}
            for b in itertools.islice(
        (b for b in bills if b["kind"] == "settle"), count)]


async def dispatch(region: Region, intents: list[dict[str, Any]], concurrency: int | None) -> tuple[SlowGateway, Runner]:
    key = Ed25519PrivateKey.generate()
    gateway = SlowGateway(key)
    runner = Runner(region, "http://fake", {gateway_kid(public_raw(key.public_key())): key.public_key()},
                    concurrency, client_factory=gateway.client)
    await runner.dispatch(intents, 1.0, None)
    return gateway, runner


async def test_terminals_send_in_parallel_each_one_at_a_time(region: Region) -> None:
    intents = card_bills(region, 24)
    started = trio.current_time()
    gateway, runner = await dispatch(region, intents, None)
    elapsed_s = trio.current_time() - started
    assert runner.oracle.violations == []
    assert gateway.max_per_terminal == 1
    assert gateway.max_total >= 4
    # Serially, 24 bills of 3-4 requests at SERVICE_S each would take ≥ 1.4 s.
    assert elapsed_s < 24 * 3 * SERVICE_S / 2, elapsed_s
    for dev_no in {i["dev_no"] for i in intents}:
        theirs = [r for r in gateway.sent if r.dev_no == dev_no and r.infno in ("2102", "2207")]
        assert len(theirs) == sum(i["dev_no"] == dev_no for i in intents)


async def test_concurrency_one_sends_one_message_at_a_time(region: Region) -> None:
    gateway, runner = await dispatch(region, card_bills(region, 6), 1)
    assert runner.oracle.violations == [] and gateway.max_total == 1


async def test_a_cancel_goes_to_the_terminal_of_its_bill(region: Region) -> None:
    bills = card_bills(region, 6)
    cancel = {"kind": "cancel", "of_seq": bills[2]["seq"], "seq": 1000, "t_s": 0.0}
    gateway, runner = await dispatch(region, [*bills, cancel], None)
    cancels = [r for r in gateway.sent if r.infno in ("2103", "2208")]
    assert len(cancels) == 1 and cancels[0].dev_no == bills[2]["dev_no"]
    assert runner.oracle.violations == [] and sum(s.cancelled for s in runner.oracle.settlements.values()) == 1
