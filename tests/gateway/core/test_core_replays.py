"""The core's idempotent replays over random request streams (SPEC section 6).

A stream of settlements, retries (some changed), cancellations, reversals, reconciliations and clock
jumps goes to one core, each request written with non-canonical msgpack encodings and keys in any
order. Every retry of a recorded success within the retention is answered with the first answer,
byte for byte, and a snapshot restores to the same state and the same stored answers.
"""

from __future__ import annotations

import copy
import datetime
import pathlib
import random
import struct
import tempfile
from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from core_world import ADMDVS, T0_MS, World, card, line
from gateway.core import Core
from protocol import AUTH_MAC, REQ_DOMAIN, Frame, TerminalSession, decode_frame, decode_response_envelope, encode_frame, mac

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


def _loose_packb(value: Any, rng: random.Random) -> bytes:
    """msgpack of `value` with wider-than-needed (still valid) encodings chosen at random."""
    if value is None or value is True or value is False or isinstance(value, float):
        return msgpack.packb(value)
    if isinstance(value, int):
        forms = [msgpack.packb(value)]
        if 0 <= value < 2**64:
            forms.append(b"\xcf" + struct.pack(">Q", value))
        if -(2**63) <= value < 2**63:
            forms.append(b"\xd3" + struct.pack(">q", value))
        return rng.choice(forms)
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return rng.choice([msgpack.packb(value), b"\xdb" + struct.pack(">I", len(raw)) + raw])
    if isinstance(value, bytes):
        return rng.choice([msgpack.packb(value, use_bin_type=True), b"\xc6" + struct.pack(">I", len(value)) + value])
    if isinstance(value, list):
        return b"\xdd" + struct.pack(">I", len(value)) + b"".join(_loose_packb(item, rng) for item in value)
    items = list(value.items())
    rng.shuffle(items)
    return b"\xdf" + struct.pack(">I", len(items)) + b"".join(
        _loose_packb(key, rng) + _loose_packb(item, rng) for key, item in items)


MUTANTS: list[Any] = [None, True, 0, -1, 2**63, 2**64 - 1, 1.0, "", "k" * 65, "x\n", b"\x00" * 16, [], {}, "02"]


def _mutated(input_: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    input_ = copy.deepcopy(input_)
    target = input_
    items = input_.get("items")
    # A retry mutates an input that may already have lost its bill lines: only a list of lines
    # offers one to mutate.
    if isinstance(items, list) and items and all(isinstance(item, dict) for item in items) and rng.random() < 0.6:
        target = rng.choice(items)
    key = rng.choice(sorted(target) + ["extra"])
    if rng.random() < 0.2 and key in target:
        del target[key]
    else:
        target[key] = copy.deepcopy(rng.choice(MUTANTS))
    return input_


class Stream:
    """One world fed a request stream; remembers what it sent, for retries and reversals."""

    def __init__(self, root: pathlib.Path) -> None:
        self.world = World(root)
        self.now_ms = T0_MS
        self.serial = 0
        # (session, infno, msgid, input, answer, sent at): every request sent, for retries and reversals.
        self.sent: list[tuple[TerminalSession, str, str, dict[str, Any], bytes, int]] = []
        self.setl_ids: list[tuple[str, str, str]] = []
        self.sign_in()

    def sign_in(self) -> None:
        self.terms = {dev_no: self.world.sign_in(dev_no, now_ms=self.now_ms) for dev_no in ("T1", "T3")}

    def msgid(self, term: TerminalSession) -> str:
        self.serial += 1
        return f"{term.fixmedins_code}{_stamp(self.now_ms)}{self.serial:04d}"

    def send(self, term: TerminalSession, infno: str, mid: str, input_: dict[str, Any], rng: random.Random) -> Any:
        env = {"infno": infno, "msgid": mid, "fixmedins_code": term.fixmedins_code, "mdtrtarea_admvs": ADMDVS,
               "dev_no": term.dev_no, "opter": term.opter, "opter_type": "1", "sign_no": term.sign_no,
               "inf_time": self.now_ms, "input": input_}
        body = _loose_packb(env, rng)
        frame = encode_frame(Frame(1, AUTH_MAC, term.sign_no, body, mac(term.session_key, REQ_DOMAIN, body)))
        result = self.world.handle_tx(frame, self.now_ms)
        self.sent.append((term, infno, mid, input_, result.response, self.now_ms))
        return result


def _stamp(now_ms: int) -> str:
    moment = datetime.datetime.fromtimestamp(now_ms / 1000, datetime.timezone(datetime.timedelta(hours=8)))
    return moment.strftime("%Y%m%d%H%M%S")


def _answer(result: Any) -> Any:
    return decode_response_envelope(decode_frame(result.response).body)


def _settle_input(stream: Stream, term: TerminalSession, infno: str, mid: str, rng: random.Random) -> dict[str, Any]:
    items = [line(f"L{n}", rng.choice([100, 2500, 9000, 40_000]), lv=rng.choice(["01", "02", "03"]),
                  otc=rng.random() < 0.7, rxno=rng.choice([None, "", "RX1"]), cnt=rng.choice([1, 2, 5]),
                  dr=rng.choice(["OP1", "OP1", "DR1"])) for n in range(rng.randint(1, 3))]
    for item in items:
        item["det_item_fee_sumamt"] = item["cnt"] * item["pric"]
    medfee = sum(item["det_item_fee_sumamt"] for item in items)
    who = card(rng.choice(["PSN1", "PSN2", "PBLK", "X001"]), insutype=rng.choice(["310", "390"]))
    return {**stream.world.card_fields(term, mid, infno, medfee, who), "medfee_sumamt": medfee, "items": items}


def _step(stream: Stream, rng: random.Random) -> None:
    action = rng.choice(["settle", "settle", "settle", "retry", "retry", "cancel", "reverse", "recon", "advance"])
    pharmacy = rng.random() < 0.6
    term = stream.terms["T1" if pharmacy else "T3"]
    if action == "settle":
        infno = rng.choice(["2101", "2102", "2102"] if pharmacy else ["2206", "2207", "2207"])
        mid = stream.msgid(term)
        input_ = _settle_input(stream, term, infno, mid, rng)
        result = stream.send(term, infno, mid, _mutated(input_, rng) if rng.random() < 0.3 else input_, rng)
        output = _answer(result).output
        if output is not None and "setl_id" in output["setlinfo"]:
            stream.setl_ids.append((term.dev_no, output["setlinfo"]["setl_id"], output["setlinfo"]["psn_no"]))
    elif action == "retry" and stream.sent:
        sender, infno, mid, input_, first, first_ms = rng.choice(stream.sent)
        term = stream.terms[sender.dev_no]        # a replay answers whichever session carries it
        changed = rng.random() < 0.3
        result = stream.send(term, infno, mid, _mutated(input_, rng) if changed else input_, rng)
        # Within the retention (SPEC: at least 25 h) a recorded answer is replayed; later it may be re-evaluated.
        kept = stream.now_ms - first_ms < 25 * HOUR_MS
        if _answer(result).infcode == 0 and infno in ("2102", "2103", "2207", "2208", "2601") and not changed and kept:
            answered = decode_response_envelope(decode_frame(first).body)
            if answered.infcode == 0:
                assert result.response == first    # a replay is the first answer, byte for byte
    elif action == "cancel" and stream.setl_ids:
        dev_no, setl_id, psn_no = rng.choice(stream.setl_ids)
        term = stream.terms[dev_no]
        stream.send(term, "2103" if dev_no == "T1" else "2208", stream.msgid(term),
                    {"setl_id": setl_id, "psn_no": psn_no}, rng)
    elif action == "reverse":
        known = [entry for entry in stream.sent
                 if entry[0].dev_no == term.dev_no and entry[1] in ("2102", "2103", "2207", "2208")]
        # omsgid and oinfno drawn apart: the original is found, found under another infno, or unknown.
        omsgid, oinfno = (rng.choice(known)[2], rng.choice(known)[1]) if known and rng.random() < 0.8 else (
            stream.msgid(term), "2102")
        stream.send(term, "2601", stream.msgid(term), {"omsgid": omsgid, "oinfno": oinfno}, rng)
    elif action == "recon":
        date = _stamp(stream.now_ms)[:8]
        if rng.random() < 0.5:
            stream.send(term, "3202", stream.msgid(term), {"stmt_date": date, "limit": rng.randint(1, 3)}, rng)
        else:
            stream.send(term, "3201", stream.msgid(term), {"stmt_date": date, "setl_cnt": 0, "medfee_sumamt": 0,
                                                           "fund_pay_sumamt": 0, "psn_cash_pay": 0}, rng)
    elif action == "advance":
        stream.now_ms += rng.choice([1_000, HOUR_MS, 13 * HOUR_MS, 25 * HOUR_MS, 27 * HOUR_MS, 3 * DAY_MS, 40 * DAY_MS])
        stream.sign_in()


def _stored(world: World) -> dict[str, bytes]:
    return {msgid: world.core.state.idempotency.get(msgid).response
            for msgid, *_ in world.core.state.idempotency.snapshot()}


@settings(max_examples=40, derandomize=True, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(8, 30))
def test_every_stream_replays_byte_for_byte_and_restores_from_its_snapshot(rng: random.Random, steps: int) -> None:
    with tempfile.TemporaryDirectory() as root:
        stream = Stream(pathlib.Path(root))
        for _ in range(steps):
            _step(stream, rng)
        snapshot = stream.world.core.snapshot()
        # A snapshot (through msgpack, as on disk) restores to the same state and the same answers.
        loaded = msgpack.unpackb(msgpack.packb(snapshot, use_bin_type=True), raw=False, strict_map_key=False)
        restored = stream.world.make_core()
        restored.restore(loaded)
        assert restored.snapshot() == snapshot
        for msgid, answer in _stored(stream.world).items():
            assert restored.state.idempotency.get(msgid).response == answer


def test_replays_of_reordered_and_reencoded_requests_are_the_first_answer(tmp_path: pathlib.Path) -> None:
    stream = Stream(tmp_path)
    rng = random.Random(11)
    term = stream.terms["T1"]
    mid = stream.msgid(term)
    items = [line("L1", 2500), line("L2", 900, lv="02", otc=False, rxno="RX1"), line("L3", 300, lv="03")]
    fields = stream.world.card_fields(term, mid, "2102", 3700, card("PSN1"))
    input_ = {**fields, "medfee_sumamt": 3700, "items": items}
    first = stream.send(term, "2102", mid, input_, rng)
    assert _answer(first).infcode == 0
    for _ in range(5):
        again = stream.send(term, "2102", mid, copy.deepcopy(input_), rng)
        assert again.response == first.response and again.record is None
    flipped = copy.deepcopy(input_)
    flipped["items"][0]["cnt"] = True        # a bool is not the int 1: another request
    assert _answer(stream.send(term, "2102", mid, flipped, rng)).err_code == "MSGID_REUSED"


def _map_of_packed(pairs: list[tuple[str, bytes]]) -> bytes:
    """A msgpack map of already packed values, in the order given, so that a key may come twice."""
    return b"\xdf" + struct.pack(">I", len(pairs)) + b"".join(msgpack.packb(key) + value for key, value in pairs)


def _send_repeating(stream: Stream, term: TerminalSession, infno: str, mid: str, input_: dict[str, Any],
                    key: str, decoy: Any, in_envelope: bool = False) -> Any:
    """`input_` sent with `key` twice: the decoy first, the right value last (msgpack-python's pick)."""
    env = {"infno": infno, "msgid": mid, "fixmedins_code": term.fixmedins_code, "mdtrtarea_admvs": ADMDVS,
           "dev_no": term.dev_no, "opter": term.opter, "opter_type": "1", "sign_no": term.sign_no,
           "inf_time": stream.now_ms}
    packed = {name: msgpack.packb(value, use_bin_type=True) for name, value in input_.items()}
    input_bytes = _map_of_packed([(key, msgpack.packb(decoy, use_bin_type=True))] * (not in_envelope)
                                 + list(packed.items()))
    outer = [(name, msgpack.packb(value, use_bin_type=True)) for name, value in env.items()]
    body = _map_of_packed([(key, msgpack.packb(decoy))] * in_envelope + outer + [("input", input_bytes)])
    frame = encode_frame(Frame(1, AUTH_MAC, term.sign_no, body, mac(term.session_key, REQ_DOMAIN, body)))
    return stream.world.handle_tx(frame, stream.now_ms)


def test_a_repeated_key_is_malformed_and_never_replays_a_recorded_answer(tmp_path: pathlib.Path) -> None:
    stream = Stream(tmp_path)
    term = stream.terms["T1"]
    mid = stream.msgid(term)
    items = [line("L1", 2500)]
    input_ = {**stream.world.card_fields(term, mid, "2102", 2500, card("PSN1")), "medfee_sumamt": 2500, "items": items}
    fresh = _send_repeating(stream, term, "2102", mid, input_, "medfee_sumamt", 1)
    assert (fresh.http_status, _answer(fresh).err_code, fresh.record) == (200, "MALFORMED_INPUT", None)
    assert _answer(fresh).err_msg == "input: repeated key 'medfee_sumamt'"
    first = stream.send(term, "2102", mid, input_, random.Random(3))
    assert _answer(first).infcode == 0
    # The same msgid again, the recorded input as the last copy: not the recorded request.
    again = _send_repeating(stream, term, "2102", mid, input_, "medfee_sumamt", 1)
    assert (_answer(again).err_code, again.record) == ("MSGID_REUSED", None)
    envelope = _send_repeating(stream, term, "2102", stream.msgid(term), input_, "opter", "OTHER", in_envelope=True)
    assert (envelope.http_status, _answer(envelope).err_code) == (400, "MALFORMED_ENVELOPE")
    assert _answer(envelope).err_msg == "envelope: repeated key 'opter'"
