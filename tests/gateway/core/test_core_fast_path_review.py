"""Differential review of the core's fast paths: stored answers (z2), expiry shortcuts, whole pipeline.

Two cores over the same region answer the same request stream, one as it runs and one with every
shortcut switched off (protocol decoders, canonical packing, stored-answer packing, the expiry
short-circuits); every result (status, exact answer bytes, journal record) must be identical,
replays must return the first answer byte for byte, and the memories must match models that
expire by brute force.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import pathlib
import random
import struct
import tempfile
import zlib
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core_world import ADMDVS, T0_MS, World, card, line
from gateway.core import Core, idempotency
from gateway.core.idempotency import IdempotencyStore, TimedKeys, pack_response, unpack_response
from gateway.core.settlements import STATUS_SETTLED, Settlement, SettlementStore
from protocol import (
    AUTH_MAC, REQ_DOMAIN, ErrCode, Frame, TerminalSession, canonical, decode_frame, decode_response_envelope,
    encode_frame, envelope, frames, inputs, mac,
)
from protocol._msgpack import unpack_unchecked

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


# -- stored answers --------------------------------------------------------------------------------

def _z1_pack(response: bytes) -> bytes:
    """The z1 packer as it was shipped: raw DEFLATE, level 1, 4 KiB window, the key dictionary."""
    packer = zlib.compressobj(1, zlib.DEFLATED, -12, 4, zlib.Z_DEFAULT_STRATEGY, idempotency._Z1_DICTIONARY)
    return packer.compress(response) + packer.flush()


def _template_like(rng: random.Random) -> bytes:
    """A frame that shares long runs with the z2 dictionary's templates, with random edits."""
    dictionary = idempotency._Z2_DICTIONARY
    start = rng.randrange(len(dictionary))
    piece = bytearray(dictionary[start:start + rng.randrange(1, 1200)])
    for _ in range(rng.randrange(4)):
        if piece:
            piece[rng.randrange(len(piece))] = rng.randrange(256)
    return bytes(piece) + rng.randbytes(rng.choice([0, 1, 63, 64, 65]))


@settings(max_examples=400, derandomize=True, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.binary(min_size=4000, max_size=9000),
                 st.randoms(use_true_random=False).map(_template_like)))
def test_z2_and_z1_round_trip_any_bytes(response: bytes) -> None:
    packed = pack_response(response)
    assert unpack_response(packed) == response
    assert unpack_response(packed, "z2") == response
    assert unpack_response(_z1_pack(response), "z1") == response


def test_z2_round_trip_of_huge_and_repetitive_answers() -> None:
    for response in (b"", b"\x00" * 65_536, idempotency._Z2_DICTIONARY, idempotency._Z2_DICTIONARY * 20,
                     bytes(range(256)) * 300, random.Random(5).randbytes(70_000)):
        assert unpack_response(pack_response(response)) == response


@settings(max_examples=60, derandomize=True, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["plain", "z1", "z2"]), st.binary(max_size=2000)), max_size=8))
def test_snapshot_rows_of_any_codec_restore_and_snapshot_again(rows_spec: list[tuple[str, bytes]]) -> None:
    rows = []
    for index, (codec, answer) in enumerate(rows_spec):
        stored = {"plain": answer, "z1": _z1_pack(answer), "z2": pack_response(answer)}[codec]
        row = [f"M{index}", bytes([index]) * 32, stored, index + 1, "2102", 1_000 + index, f"S{index}"]
        rows.append(row if codec == "plain" else [*row, codec])
    store = IdempotencyStore(20)
    store.restore(rows)
    assert [store.get(f"M{n}").response for n in range(len(rows))] == [answer for _, answer in rows_spec]
    again = IdempotencyStore(20)
    again.restore(msgpack.unpackb(msgpack.packb(store.snapshot(), use_bin_type=True), raw=False))
    assert again.snapshot() == store.snapshot()
    assert [again.get(f"M{n}").response for n in range(len(rows))] == [answer for _, answer in rows_spec]


# -- expiry shortcuts against brute-force models ---------------------------------------------------

@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 40)), max_size=60))
def test_timed_keys_expire_as_a_brute_force_model(ops: list[tuple[bool, int]]) -> None:
    keys, model = TimedKeys(1_000), {}
    for serial, (is_put, at_ms) in enumerate(ops):
        if is_put:
            keys.put(f"k{serial}", at_ms, serial)
            model[f"k{serial}"] = at_ms
        else:  # times go backwards too (a test clock set back): nothing live may be dropped
            keys.expire(at_ms)
            model = {key: at for key, at in model.items() if at >= at_ms}
        assert sorted((at, key) for at, key, _ in keys.items()) == sorted((at, key) for key, at in model.items())
        assert all((key in keys) for key in model) and len(keys) == len(model)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 30), st.sampled_from(["I1", "I2"])), max_size=60),
       st.integers(1, 4))
def test_settlement_days_expire_as_a_brute_force_model(ops: list[tuple[bool, int, str]], days_kept: int) -> None:
    store, model = SettlementStore(1_000, days_kept), {}
    for serial, (is_add, day, institution) in enumerate(ops):
        if is_add:
            setl_id = f"S{serial:06d}"
            store.add(Settlement(setl_id=setl_id, msgid="M" + setl_id, infno="2102", institution=institution,
                                 psn_no="P", insutype="310", insuplc_admdvs="510100", setl_time=0, day=day,
                                 month=1, medfee_sumamt=1, fund_pay_sumamt=0, psn_cash_pay=1, otc_pay=0, rx_pay=0,
                                 status=STATUS_SETTLED, cancel_msgid=None))
            model[setl_id] = (day, institution)
        else:
            store.expire(day)
            model = {key: value for key, value in model.items() if value[0] > day - days_kept}
        assert len(store) == len(model) and all(store.get(key) is not None for key in model)
        for institution_ in ("I1", "I2"):
            for day_ in range(31):
                assert store.day_ids(institution_, day_) == sorted(
                    key for key, value in model.items() if value == (day_, institution_))


# -- the whole pipeline, fast against reference ----------------------------------------------------

def _reference_timed_expire(self: TimedKeys, before_ms: int) -> None:
    while self._index and self._index[0][0] < before_ms:
        _, key = self._index.pop(0)
        del self._values[key]


def _reference_settlement_expire(self: SettlementStore, today: int) -> None:
    while self._by_day and self._by_day.peekitem(0)[0] <= today - self.days_kept:
        _, per_institution = self._by_day.popitem(0)
        for ids in per_institution.values():
            for setl_id in ids:
                del self._by_id[setl_id]


@contextlib.contextmanager
def fast_paths_off() -> Iterator[None]:
    """Every shortcut of the commit replaced by the walk or storage it shortcuts."""
    from gateway.core import machine
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(machine, "decode_frame", lambda data: frames._frame_checked(
            unpack_unchecked(data, ErrCode.MALFORMED_FRAME, "frame")))
        patch.setattr(envelope, "is_plain", lambda value, depth=0: False)
        patch.setattr(inputs, "_bill_line", lambda raw, index: inputs._bill_line_checked(raw, f"input.items[{index}]"))
        patch.setattr(inputs, "_credential", inputs._credential_checked)
        patch.setattr(canonical, "_in_canonical_order", lambda obj: False)
        patch.setattr(idempotency, "pack_response", bytes)
        patch.setattr(idempotency, "unpack_response", lambda packed, codec="z2": bytes(packed))
        patch.setattr(TimedKeys, "expire", _reference_timed_expire)
        patch.setattr(SettlementStore, "expire", _reference_settlement_expire)
        yield


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


class Twins:
    """Two identical worlds: `fast` runs as shipped, `ref` with every shortcut off."""

    def __init__(self, root: pathlib.Path) -> None:
        (root / "fast").mkdir()
        (root / "ref").mkdir()
        self.fast = World(root / "fast")
        self.ref = World(root / "ref")
        self.now_ms = T0_MS
        self.serial = 0
        self.replays = 0
        # (session, infno, msgid, input, answer, sent at): every request sent, for retries and reversals.
        self.sent: list[tuple[TerminalSession, str, str, dict[str, Any], bytes, int]] = []
        self.setl_ids: list[tuple[str, str, str]] = []
        self.sign_in()

    def sign_in(self) -> None:
        self.terms = {}
        for dev_no in ("T1", "T3"):
            fast = self.fast.sign_in(dev_no, now_ms=self.now_ms)
            with fast_paths_off():
                ref = self.ref.sign_in(dev_no, now_ms=self.now_ms)
            assert (fast.sign_no, fast.session_key) == (ref.sign_no, ref.session_key)
            self.terms[dev_no] = fast

    def msgid(self, term: TerminalSession) -> str:
        self.serial += 1
        return f"{term.fixmedins_code}{_stamp(self.now_ms)}{self.serial:04d}"

    def send(self, term: TerminalSession, infno: str, mid: str, input_: dict[str, Any], rng: random.Random) -> Any:
        env = {"infno": infno, "msgid": mid, "fixmedins_code": term.fixmedins_code, "mdtrtarea_admvs": ADMDVS,
               "dev_no": term.dev_no, "opter": term.opter, "opter_type": "1", "sign_no": term.sign_no,
               "inf_time": self.now_ms, "input": input_}
        body = _loose_packb(env, rng)
        frame = encode_frame(Frame(1, AUTH_MAC, term.sign_no, body, mac(term.session_key, REQ_DOMAIN, body)))
        fast = self.fast.core.handle_tx(frame, self.now_ms)
        with fast_paths_off():
            ref = self.ref.core.handle_tx(frame, self.now_ms)
        assert fast == ref
        self.sent.append((term, infno, mid, input_, fast.response, self.now_ms))
        return fast


def _stamp(now_ms: int) -> str:
    moment = datetime.datetime.fromtimestamp(now_ms / 1000, datetime.timezone(datetime.timedelta(hours=8)))
    return moment.strftime("%Y%m%d%H%M%S")


def _answer(result: Any) -> Any:
    return decode_response_envelope(decode_frame(result.response).body)


def _settle_input(twins: Twins, term: TerminalSession, infno: str, mid: str, rng: random.Random) -> dict[str, Any]:
    items = [line(f"L{n}", rng.choice([100, 2500, 9000, 40_000]), lv=rng.choice(["01", "02", "03"]),
                  otc=rng.random() < 0.7, rxno=rng.choice([None, "", "RX1"]), cnt=rng.choice([1, 2, 5]),
                  dr=rng.choice(["OP1", "OP1", "DR1"])) for n in range(rng.randint(1, 3))]
    for item in items:
        item["det_item_fee_sumamt"] = item["cnt"] * item["pric"]
    medfee = sum(item["det_item_fee_sumamt"] for item in items)
    who = card(rng.choice(["PSN1", "PSN2", "PBLK", "X001"]), insutype=rng.choice(["310", "390"]))
    return {**twins.fast.card_fields(term, mid, infno, medfee, who), "medfee_sumamt": medfee, "items": items}


def _step(twins: Twins, rng: random.Random) -> None:
    action = rng.choice(["settle", "settle", "settle", "retry", "retry", "cancel", "reverse", "recon", "advance"])
    pharmacy = rng.random() < 0.6
    term = twins.terms["T1" if pharmacy else "T3"]
    if action == "settle":
        infno = rng.choice(["2101", "2102", "2102"] if pharmacy else ["2206", "2207", "2207"])
        mid = twins.msgid(term)
        input_ = _settle_input(twins, term, infno, mid, rng)
        result = twins.send(term, infno, mid, _mutated(input_, rng) if rng.random() < 0.3 else input_, rng)
        output = _answer(result).output
        if output is not None and "setl_id" in output["setlinfo"]:
            twins.setl_ids.append((term.dev_no, output["setlinfo"]["setl_id"], output["setlinfo"]["psn_no"]))
    elif action == "retry" and twins.sent:
        sender, infno, mid, input_, first, first_ms = rng.choice(twins.sent)
        term = twins.terms[sender.dev_no]        # a replay answers whichever session carries it
        changed = rng.random() < 0.3
        result = twins.send(term, infno, mid, _mutated(input_, rng) if changed else input_, rng)
        # Within the retention (SPEC: at least 25 h) a recorded answer is replayed; later it may be re-evaluated.
        kept = twins.now_ms - first_ms < 25 * HOUR_MS
        if _answer(result).infcode == 0 and infno in ("2102", "2103", "2207", "2208", "2601") and not changed and kept:
            answered = decode_response_envelope(decode_frame(first).body)
            if answered.infcode == 0:
                assert result.response == first    # a replay is the first answer, byte for byte
                twins.replays += 1
    elif action == "cancel" and twins.setl_ids:
        dev_no, setl_id, psn_no = rng.choice(twins.setl_ids)
        term = twins.terms[dev_no]
        twins.send(term, "2103" if dev_no == "T1" else "2208", twins.msgid(term),
                   {"setl_id": setl_id, "psn_no": psn_no}, rng)
    elif action == "reverse":
        known = [entry for entry in twins.sent
                 if entry[0].dev_no == term.dev_no and entry[1] in ("2102", "2103", "2207", "2208")]
        # omsgid and oinfno drawn apart: the original is found, found under another infno, or unknown.
        omsgid, oinfno = (rng.choice(known)[2], rng.choice(known)[1]) if known and rng.random() < 0.8 else (
            twins.msgid(term), "2102")
        twins.send(term, "2601", twins.msgid(term), {"omsgid": omsgid, "oinfno": oinfno}, rng)
    elif action == "recon":
        date = _stamp(twins.now_ms)[:8]
        if rng.random() < 0.5:
            twins.send(term, "3202", twins.msgid(term), {"stmt_date": date, "limit": rng.randint(1, 3)}, rng)
        else:
            twins.send(term, "3201", twins.msgid(term), {"stmt_date": date, "setl_cnt": 0, "medfee_sumamt": 0,
                                                         "fund_pay_sumamt": 0, "psn_cash_pay": 0}, rng)
    elif action == "advance":
        twins.now_ms += rng.choice([1_000, HOUR_MS, 13 * HOUR_MS, 25 * HOUR_MS, 27 * HOUR_MS, 3 * DAY_MS, 40 * DAY_MS])
        twins.sign_in()


def _stored(world: World) -> dict[str, bytes]:
    return {msgid: world.core.state.idempotency.get(msgid).response
            for _, msgid, _ in world.core.state.idempotency._entries.items()}


def _without_stored_answers(snapshot: dict[str, Any]) -> dict[str, Any]:
    return {**snapshot, "idempotency": [[*row[:2], *row[3:]] for row in snapshot["idempotency"]]}


@settings(max_examples=40, derandomize=True, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(8, 30))
def test_the_core_answers_every_stream_as_with_its_shortcuts_off(rng: random.Random, steps: int) -> None:
    with tempfile.TemporaryDirectory() as root:
        twins = Twins(pathlib.Path(root))
        for _ in range(steps):
            _step(twins, rng)
        fast_snapshot = twins.fast.core.snapshot()
        with fast_paths_off():
            ref_snapshot = twins.ref.core.snapshot()
        assert _without_stored_answers(fast_snapshot) == _without_stored_answers(ref_snapshot)
        with fast_paths_off():
            ref_stored = _stored(twins.ref)
        assert _stored(twins.fast) == ref_stored
        # A snapshot (through msgpack, as on disk) restores to the same answers.
        loaded = msgpack.unpackb(msgpack.packb(fast_snapshot, use_bin_type=True), raw=False, strict_map_key=False)
        restored = Core.from_snapshot(loaded, config=twins.fast.config, registry=twins.fast.registry,
                                      secrets=twins.fast.secrets, keyring=twins.fast.core.keyring,
                                      random_bytes=random.Random(0).randbytes)
        assert restored.snapshot() == fast_snapshot
        for msgid, answer in _stored(twins.fast).items():
            assert restored.state.idempotency.get(msgid).response == answer


def test_replays_of_reordered_and_reencoded_requests_are_the_first_answer(tmp_path: pathlib.Path) -> None:
    twins = Twins(tmp_path)
    rng = random.Random(11)
    term = twins.terms["T1"]
    mid = twins.msgid(term)
    items = [line("L1", 2500), line("L2", 900, lv="02", otc=False, rxno="RX1"), line("L3", 300, lv="03")]
    fields = twins.fast.card_fields(term, mid, "2102", 3700, card("PSN1"))
    input_ = {**fields, "medfee_sumamt": 3700, "items": items}
    first = twins.send(term, "2102", mid, input_, rng)
    assert _answer(first).infcode == 0
    for _ in range(5):
        again = twins.send(term, "2102", mid, copy.deepcopy(input_), rng)
        assert again.response == first.response and again.record is None
    flipped = copy.deepcopy(input_)
    flipped["items"][0]["cnt"] = True        # a bool is not the int 1: another request
    assert _answer(twins.send(term, "2102", mid, flipped, rng)).err_code == "MSGID_REUSED"
