"""Stored answers (codecs z1, z2 and z3) and the cheap expiry checks of the core's memories."""

from __future__ import annotations

import gc
import hashlib
import random
import zlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core import idempotency
from gateway.core.idempotency import IdempotencyStore, IdemEntry, TimedKeys, pack_response, unpack_response
from gateway.core.settlements import STATUS_SETTLED, Settlement, SettlementStore, setl_id_of

ADMDVS = "510100"

# The dictionaries are part of the stored format: a changed byte would make old snapshots unreadable.
Z1_DICTIONARY_SHA256 = "06fb03d53061c33d8714f39b260c0e11697c4c3f537abcedbfde44704e60e716"
Z2_DICTIONARY_SHA256 = "e81db0d476eb130e20cdadf6b3fc20d706b67f14feb14dafe6b680ea45c2a43d"
Z3_DICTIONARY_SHA256 = "504fc74248000a66b3ed139c2fe81573d08468179727343bdb3cdcca0f77f423"


def test_dictionaries_never_change() -> None:
    assert hashlib.sha256(idempotency._Z1_DICTIONARY).hexdigest() == Z1_DICTIONARY_SHA256
    assert hashlib.sha256(idempotency._Z2_DICTIONARY).hexdigest() == Z2_DICTIONARY_SHA256
    assert hashlib.sha256(idempotency._Z3_DICTIONARY).hexdigest() == Z3_DICTIONARY_SHA256
    for dictionary in (idempotency._Z2_DICTIONARY, idempotency._Z3_DICTIONARY):
        assert len(dictionary) < 2**12 - 262, "the dictionary must fit the DEFLATE window"


def _answer_like(rng: random.Random, body_bytes: int) -> bytes:
    body = msgpack.packb({"err_code": "", "output": {"setl_id": str(rng.getrandbits(60))}, "pad": rng.randbytes(body_bytes)},
                         use_bin_type=True)
    return msgpack.packb([1, "sig", "gw-" + rng.randbytes(8).hex(), body, rng.randbytes(64)], use_bin_type=True)


@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 128, 5000])
def test_z2_round_trip_of_any_bytes(size: int) -> None:
    data = random.Random(size).randbytes(size)
    assert unpack_response(pack_response(data)) == data


def test_z2_round_trip_of_answers_and_their_size() -> None:
    rng = random.Random(7)
    for body_bytes in (0, 10, 400):
        answer = _answer_like(rng, body_bytes)
        packed = pack_response(answer)
        assert unpack_response(packed) == answer
        assert packed.endswith(answer[-64:])  # the signature is kept as it is


def test_a_corrupt_stored_answer_is_refused() -> None:
    packed = pack_response(_answer_like(random.Random(1), 10))
    with pytest.raises(AssertionError):
        unpack_response(packed[:20] + b"\x00" * 100, "z2")


def _z1_pack(response: bytes) -> bytes:
    """The z1 packer as it was written (raw DEFLATE, level 1, 4 KiB window, the key dictionary)."""
    packer = zlib.compressobj(1, zlib.DEFLATED, -12, 4, zlib.Z_DEFAULT_STRATEGY, idempotency._Z1_DICTIONARY)
    return packer.compress(response) + packer.flush()


def _z2_pack(response: bytes) -> bytes:
    """The z2 packer as it was written: z1's, with the z2 dictionary and the raw 64-byte tail."""
    packer = zlib.compressobj(1, zlib.DEFLATED, -12, 4, zlib.Z_DEFAULT_STRATEGY, idempotency._Z2_DICTIONARY)
    return packer.compress(response[:-64]) + packer.flush() + response[-64:]


def test_snapshot_rows_of_every_codec_restore_to_the_same_answers() -> None:
    rng = random.Random(3)
    answers = [_answer_like(rng, n) for n in (5, 50, 500, 300)]
    rows = [["M0", b"f" * 32, answers[0], 1, "2102", 1_000, "S0"],                        # plain (7 fields)
            ["M1", b"g" * 32, _z1_pack(answers[1]), 2, "2103", 2_000, "S1", "z1"],         # z1
            ["M2", b"h" * 32, _z2_pack(answers[2]), 3, "2601", 3_000, "S2", "z2"],         # z2
            ["M3", b"i" * 32, pack_response(answers[3]), 4, "2102", 4_000, "S3", "z3"]]    # z3
    store = IdempotencyStore(10)
    store.restore(rows)
    assert [store.get(f"M{n}").response for n in range(4)] == answers
    snapshot = store.snapshot()
    assert [row[-1] for row in snapshot] == ["z3"] * 4
    again = IdempotencyStore(10)
    again.restore(snapshot)
    assert again.snapshot() == snapshot


def test_an_unknown_codec_is_refused() -> None:
    with pytest.raises(AssertionError):
        IdempotencyStore(10).restore([["M0", b"f" * 32, b"x", 1, "2102", 1_000, "S0", "q9"]])


def test_timed_keys_expire_exactly_what_is_older_whatever_the_put_order() -> None:
    keys = TimedKeys(100, lambda at_ms: at_ms)
    keys.put("b", 500)
    keys.expire(400)                 # nothing that old
    assert len(keys) == 1
    keys.put("a", 100)               # earlier than the front: must still expire on time
    keys.expire(101)
    assert "a" not in keys and "b" in keys
    keys.expire(500)
    assert "b" in keys               # strictly before only
    keys.expire(501)
    assert len(keys) == 0
    keys.put("c", 10)                # an emptied memory starts over
    keys.expire(11)
    assert len(keys) == 0
    for key, at_ms in (("d", 30), ("e", 20), ("f", 40), ("g", 20)):
        keys.put(key, at_ms)
    assert [key for _, key, _ in keys.items()] == ["e", "g", "d", "f"]   # (time, key) order
    keys.expire(31)
    assert [key for _, key, _ in keys.items()] == ["f"]


def _settlement(setl_id: str, day: int) -> Settlement:
    return Settlement(setl_id=setl_id, msgid="M" + setl_id, infno="2102", institution="I", psn_no="P",
                      insutype="310", insuplc_admdvs="510100", setl_time=0, day=day, month=197001,
                      medfee_sumamt=1, fund_pay_sumamt=0, psn_cash_pay=1, otc_pay=0, rx_pay=0,
                      status=STATUS_SETTLED, cancel_msgid=None)


def test_settlement_days_expire_exactly_whatever_the_add_order() -> None:
    store = SettlementStore(100, days_kept=2, admdvs=ADMDVS)
    s1, s2, s3 = (setl_id_of(ADMDVS, n) for n in (1, 2, 3))
    store.add(_settlement(s1, 10))
    store.expire(11)
    assert len(store) == 1
    store.add(_settlement(s2, 5))  # an older day than any held (a clock set back)
    store.expire(11)
    assert store.get(s2) is None and store.get(s1) is not None
    store.expire(12)
    assert len(store) == 0
    store.add(_settlement(s3, 20))
    store.expire(22)
    assert len(store) == 0


# -- the same properties over generated answers and operation sequences ------------------------------

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
    assert unpack_response(packed, idempotency.RESPONSE_CODEC) == response
    assert unpack_response(_z1_pack(response), "z1") == response


def test_z2_round_trip_of_huge_and_repetitive_answers() -> None:
    for response in (b"", b"\x00" * 65_536, idempotency._Z2_DICTIONARY, idempotency._Z2_DICTIONARY * 20,
                     bytes(range(256)) * 300, random.Random(5).randbytes(70_000)):
        assert unpack_response(pack_response(response)) == response


@settings(max_examples=60, derandomize=True, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["plain", "z1", "current"]), st.binary(max_size=2000)), max_size=8))
def test_snapshot_rows_of_any_codec_restore_and_snapshot_again(rows_spec: list[tuple[str, bytes]]) -> None:
    rows = []
    for index, (codec, answer) in enumerate(rows_spec):
        stored = {"plain": answer, "z1": _z1_pack(answer), "current": pack_response(answer)}[codec]
        row = [f"M{index}", bytes([index]) * 32, stored, index + 1, "2102", 1_000 + index, f"S{index}"]
        label = idempotency.RESPONSE_CODEC if codec == "current" else codec
        rows.append(row if codec == "plain" else [*row, label])
    store = IdempotencyStore(20)
    store.restore(rows)
    assert [store.get(f"M{n}").response for n in range(len(rows))] == [answer for _, answer in rows_spec]
    again = IdempotencyStore(20)
    again.restore(msgpack.unpackb(msgpack.packb(store.snapshot(), use_bin_type=True), raw=False))
    assert again.snapshot() == store.snapshot()
    assert [again.get(f"M{n}").response for n in range(len(rows))] == [answer for _, answer in rows_spec]


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 40)), max_size=60))
def test_timed_keys_expire_as_a_brute_force_model(ops: list[tuple[bool, int]]) -> None:
    keys, model = TimedKeys(1_000, time_of=lambda value: value[1]), {}
    for serial, (is_put, at_ms) in enumerate(ops):
        if is_put:
            keys.put(f"k{serial}", (serial, at_ms))
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
    store, model = SettlementStore(1_000, days_kept, ADMDVS), {}
    for serial, (is_add, day, institution) in enumerate(ops):
        if is_add:
            setl_id = setl_id_of(ADMDVS, serial + 1)
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


def test_a_stored_settlement_reads_back_every_field_as_given() -> None:
    # Each field a different value, so a field read from another's place shows (can fail: a
    # constructor that packs two fields in each other's place, or a property on the wrong index).
    given_ = {"setl_id": setl_id_of(ADMDVS, 123), "msgid": "H51010100001202403151230450001", "infno": "2207",
              "institution": "H51010100001", "psn_no": "5101820000000137", "insutype": "390",
              "insuplc_admdvs": "510182", "setl_time": 1_710_477_045_123, "day": 19_797, "month": 202_403,
              "medfee_sumamt": 11_188, "fund_pay_sumamt": 5_197, "psn_cash_pay": 5_991, "otc_pay": 4_000,
              "rx_pay": 1_197, "status": STATUS_SETTLED, "cancel_msgid": None, "overlmt_amt": 17,
              "acct_pay": 300, "trace_codes": ["81234567890123456789"], "act_pay_dedc": 19,
              "acct_payer_psn_no": "5101820000000138", "opter": "OP7", "cert_type": "03",
              "bound_by": ["person_day"], "fulamt_ownpay_amt": 5_562, "preselfpay_amt": 429,
              "doctors": [["D1", 11_000, 5_000], ["D2", 188, 991]]}
    arrays = {"trace_codes", "bound_by", "doctors"}
    as_stored = {key: (tuple(tuple(v) if isinstance(v, list) else v for v in value) if key in arrays else value)
                 for key, value in given_.items()}
    store = SettlementStore(10, days_kept=62, admdvs=ADMDVS)
    store.add(Settlement(**given_))
    assert all(type(kept) is bytes for kept in store._kept)   # one bytes object each
    settlement = store.get(given_["setl_id"])
    assert settlement is not None and settlement.to_dict() == as_stored
    assert {key: getattr(settlement, key) for key in given_} == as_stored
    again = SettlementStore(10, days_kept=62, admdvs=ADMDVS)
    again.restore(store.snapshot())
    assert again.get(given_["setl_id"]).to_dict() == as_stored   # type: ignore[union-attr]
    # A copy is handed out: a change stands once `update` keeps it.
    settlement.status, settlement.cancel_msgid = "cancelled", "C1"
    assert store.get(given_["setl_id"]).status == STATUS_SETTLED   # type: ignore[union-attr]
    store.update(settlement)
    assert store.get(given_["setl_id"]).to_dict() == {**as_stored, "status": "cancelled", "cancel_msgid": "C1"}  # type: ignore[union-attr]


def test_the_regions_setl_ids_are_found_by_number_and_no_lookalike_finds_one() -> None:
    # A settlement is kept in a list by its 13-digit number; an id that only looks like one of the
    # region's (another length, another kind digit, non-ASCII digits, another region, a sign or
    # a space) must find nothing (can fail: a number read without the prefix or length checks).
    store = SettlementStore(100, days_kept=62, admdvs=ADMDVS)
    own = [setl_id_of(ADMDVS, n) for n in (7, 8, 10, 11)]   # 9 was never committed: a gap
    for setl_id in own:
        store.add(_settlement(setl_id, 10))
    lookalikes = ["5101001" + "0" * 11 + "7", "5101001" + "0" * 13 + "7", "5101002" + "0" * 12 + "7",
                  "5101011" + "0" * 12 + "7", "5101001" + "０" * 12 + "7", "7", "", "0000000000007",
                  "5101001+00000000007", "5101001 00000000007", "5101001" + "0" * 12 + "7 ",
                  setl_id_of(ADMDVS, 9), setl_id_of(ADMDVS, 6), setl_id_of(ADMDVS, 12)]
    assert all(store.get(setl_id) is None for setl_id in lookalikes)
    assert [store.get(setl_id).setl_id for setl_id in own] == own   # type: ignore[union-attr]
    with pytest.raises(AssertionError):
        store.add(_settlement("S1", 10))    # not the region's: never stored
    with pytest.raises(AssertionError):
        store.add(_settlement(setl_id_of(ADMDVS, 11), 10))   # numbers only grow
    assert store.day_ids("I", 10) == own and len(store) == 4
    for after in [None, "", "5", *own, *lookalikes, "\uffff"]:   # 3202 pages in setl_id (str) order
        page, more = store.page("I", 10, after, 2)
        following = [setl_id for setl_id in own if after is None or setl_id > after]
        assert [s.setl_id for s in page] == following[:2] and more == (len(following) > 2)


def test_the_stores_hold_nothing_the_garbage_collector_scans() -> None:
    # A full collection walks every tracked object: were each settlement or remembered answer an
    # object, its pause would grow with the millions held (docs/benchmarks.md, "Memory per
    # settlement"). Bytes are not tracked, nor are dicts and arrays of untracked things (can
    # fail: a store that keeps Settlement or IdemEntry objects adds one or more per entry).
    settlements, answers = SettlementStore(2_000, days_kept=62, admdvs=ADMDVS), IdempotencyStore(2_000)
    gc.collect()
    tracked_before = len(gc.get_objects())
    for n in range(1_000):
        settlements.add(_settlement(setl_id_of(ADMDVS, n + 1), 10 + n // 500))
        answers.put(f"m{n:03d}", IdemEntry(bytes(32), b"answer", n, "2102", 1_000 + n, f"s{n:03d}"))
    gc.collect()
    assert len(gc.get_objects()) - tracked_before < 20     # a few per day held, none per entry
    assert answers.get("m003").subject == "s003" and settlements.get(setl_id_of(ADMDVS, 4)).day == 10  # type: ignore[union-attr]
