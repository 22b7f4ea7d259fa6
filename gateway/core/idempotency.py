"""Time-bounded memories of the core: idempotency records, reversal tombstones, used e-vouchers.

Each memory is a dict plus a time-ordered index (sortedcontainers) so that expiry pops from the
front. Expiry runs only inside commits, driven by the record's own time, so replaying the journal
reproduces exactly the same contents. Every memory has a cap; a full memory refuses new entries
(the core answers OVERLOADED) rather than forgetting something it promised to remember.
"""

from __future__ import annotations

import collections
import zlib
from collections.abc import Callable
from typing import Any

import msgpack
from sortedcontainers import SortedList

# Idempotency records and tombstones are kept at least 25 h (SPEC section 6); one more hour of margin.
IDEMPOTENCY_RETENTION_MS = 26 * 3_600_000
# A used voucher can never be accepted again once its exp has passed; keep it 10 min beyond.
VOUCHER_RETENTION_AFTER_EXP_MS = 600_000


# Stored answers are kept compressed: they are ~1 KiB of msgpack whose map keys repeat in every
# answer, and the store holds millions. Both codecs are raw DEFLATE (level 1, 4 KiB window: an
# answer is far smaller) with a preset dictionary; the round trip is lossless, so a replay returns
# the exact bytes that were sent, whichever key signed them. A dictionary is part of the stored
# format: never edit one; add a codec name instead (snapshots name the codec of every answer).
#   "z1": the map keys of the answers (plus the frame's "sig" and kid prefix) as the dictionary.
#   "z2": whole template answers as the dictionary, so a typical answer is mostly one long match
#         (a 3-line 2102 answer of ~910 bytes packs to ~225 instead of ~350, and DEFLATE spends
#         less time on long matches than on short ones); the last 64 bytes (the Ed25519
#         signature, which no compressor can shrink) are kept as they are after the stream.
#   "z3": as z2, with the settlement answer of settlement v2 (SPEC 13: its output keys are
#         always there) as the nearest template: a 3-line 2102 answer of ~1180 bytes packs to
#         ~230 instead of ~400 with z2, whose templates predate those keys.
RESPONSE_CODEC = "z3"
_DEFLATE_LEVEL = 1
_DEFLATE_WBITS = -12        # negative: raw DEFLATE (no zlib header and checksum), 2**12 window
_DEFLATE_MEMLEVEL = 4
_Z1_DICTIONARY = b"".join(msgpack.packb(word) for word in (
    "sig", "gw-", "infcode", "err_code", "err_msg", "inf_refmsgid", "respond_time", "warnings", "msgid",
    "output", "setl_id", "cancel_time", "medfee_sumamt", "fund_pay_sumamt", "psn_cash_pay", "otc_pay",
    "rx_pay", "reversed", "already_reversed", "original_found", "detlcutinfo", "feedetl_sn", "cut_reason",
    "fulamt_ownpay_amt", "preselfpay_amt", "inscp_scp_amt", "setlinfo", "psn_no", "insutype",
    "insuplc_admdvs", "setl_time", "acct_pay", "crt_payb_lmt_amt", "person_day_remaining",
    "institution_month_remaining", "bound_by", "medins_setl_id", "mdtrt_id",
))
_Z2_RAW_TAIL_BYTES = 64     # the signature closes every sealed answer


def _z2_answer(output: dict[str, Any]) -> bytes:
    """A template answer frame without its signature, as the gateway seals it (keys in canonical order)."""
    body = msgpack.packb({
        "err_code": "", "err_msg": "", "inf_refmsgid": "510100202403151230450000012345", "infcode": 0,
        "msgid": "H51010100001202403151230450001", "output": output, "respond_time": 1_710_477_045_123,
        "warnings": [],
    }, use_bin_type=True)
    return msgpack.packb([1, "sig", "gw-0123456789abcdef", body], use_bin_type=True) + b"\xc4\x40"


def _z2_cut(feedetl_sn: str, ownpay_fen: int, preselfpay_fen: int, inscp_fen: int) -> dict[str, Any]:
    return {"cut_reason": "", "feedetl_sn": feedetl_sn, "fulamt_ownpay_amt": ownpay_fen,
            "inscp_scp_amt": inscp_fen, "preselfpay_amt": preselfpay_fen}


# Literal templates, furthest first: the settlement answer, by far the most frequent, is nearest.
_Z2_DICTIONARY = _Z1_DICTIONARY + b"".join(_z2_answer(output) for output in (
    {"original_found": True, "reversed": True},
    {"cancel_time": 1_710_477_045_123, "fund_pay_sumamt": -5066, "medfee_sumamt": -9000, "otc_pay": -3000,
     "psn_cash_pay": -3934, "rx_pay": -2066, "setl_id": "51010010000000000123"},
    {"detlcutinfo": [_z2_cut("1", 0, 0, 3000), _z2_cut("2", 0, 300, 2700), _z2_cut("3", 3000, 0, 0)],
     "setlinfo": {
         "acct_pay": 0, "bound_by": [], "crt_payb_lmt_amt": 50000, "fulamt_ownpay_amt": 3000,
         "fund_pay_sumamt": 5066, "inscp_scp_amt": 5700, "institution_month_remaining": 99_999_994_934,
         "insuplc_admdvs": "510100", "insutype": "310", "mdtrt_id": "51010020000000000123",
         "medfee_sumamt": 9000, "medins_setl_id": "H51010100001202403151230450001", "otc_pay": 3000,
         "person_day_remaining": 47000, "preselfpay_amt": 300, "psn_cash_pay": 3934, "psn_no": "P0000000123",
         "rx_pay": 2066, "setl_id": "51010010000000000123", "setl_time": 1_710_477_045_123}},
))


def _canonical(value: Any) -> Any:
    """`value` with every map's keys in sorted order, as the gateway's canonical msgpack packs them."""
    if isinstance(value, dict):
        return {key: _canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    return value


def _z3_cut(feedetl_sn: str, level: str, otc: bool, ownpay_fen: int, preselfpay_fen: int,
            inscp_fen: int) -> dict[str, Any]:
    return {**_z2_cut(feedetl_sn, ownpay_fen, preselfpay_fen, inscp_fen), "chrgitm_lv": level,
            "drug_trac_codg": [], "otc": otc, "overlmt_amt": 0}


_Z3_SETTLEMENT_V2 = _canonical({
    "detlcutinfo": [_z3_cut("1", "01", True, 0, 0, 1344), _z3_cut("2", "02", True, 0, 429, 3853),
                    _z3_cut("3", "03", False, 5562, 0, 0)],
    "setlinfo": {
        "acct_mulaid_pay": 0, "acct_pay": 0, "acct_payer_psn_no": None, "act_pay_dedc": 0, "balc": None,
        "bound_by": [], "crt_payb_lmt_amt": 12000, "fulamt_ownpay_amt": 5562, "fund_pay_sumamt": 5197,
        "inscp_scp_amt": 5197, "institution_month_remaining": 1_999_994_803, "insuplc_admdvs": "510182",
        "insutype": "310", "mdtrt_id": "51018220000000000001", "medfee_sumamt": 11188,
        "medins_setl_id": "P51018200001202403151000000000", "otc_pay": 5197, "overlmt_selfpay": 0,
        "person_day_remaining": 6803, "person_year_pool_remaining": None, "preselfpay_amt": 429,
        "psn_cash_pay": 5991, "psn_no": "5101820000000137", "psn_part_amt": 5991, "rx_pay": 0,
        "setl_id": "51018210000000000001", "setl_time": 1_710_468_000_000}})
# The key words, the reversal and cancellation templates of z2, then the v2 settlement, nearest.
_Z3_DICTIONARY = _Z1_DICTIONARY + b"".join(_z2_answer(output) for output in (
    {"original_found": True, "reversed": True},
    {"cancel_time": 1_710_477_045_123, "fund_pay_sumamt": -5066, "medfee_sumamt": -9000, "otc_pay": -3000,
     "psn_cash_pay": -3934, "rx_pay": -2066, "setl_id": "51010010000000000123"},
    _Z3_SETTLEMENT_V2,
))
_DICTIONARIES = {"z1": _Z1_DICTIONARY, "z2": _Z2_DICTIONARY, "z3": _Z3_DICTIONARY}


def pack_response(response: bytes) -> bytes:
    """The compact stored form of an answer (codec RESPONSE_CODEC); `unpack_response` inverts it."""
    split = max(0, len(response) - _Z2_RAW_TAIL_BYTES)
    packer = _PRIMED_PACKER.copy()
    return packer.compress(response[:split]) + packer.flush() + response[split:]


# A compressor with the codec's dictionary already loaded: copying it costs 1.7 µs, loading the
# dictionary into a new one 5.7 µs (of an 18 µs pack).
_PRIMED_PACKER = zlib.compressobj(_DEFLATE_LEVEL, zlib.DEFLATED, _DEFLATE_WBITS, _DEFLATE_MEMLEVEL,
                                  zlib.Z_DEFAULT_STRATEGY, _DICTIONARIES[RESPONSE_CODEC])


def unpack_response(packed: bytes, codec: str = RESPONSE_CODEC) -> bytes:
    """The exact answer bytes `pack_response` (of `codec`) was given."""
    unpacker = zlib.decompressobj(_DEFLATE_WBITS, _DICTIONARIES[codec])
    response = unpacker.decompress(packed) + unpacker.flush()
    assert unpacker.eof, "a stored answer is corrupt"
    if codec == "z1":
        assert not unpacker.unused_data, "a stored answer is corrupt"
        return response
    # z2, z3: whatever follows the DEFLATE stream is the raw tail.
    assert len(unpacker.unused_data) <= _Z2_RAW_TAIL_BYTES, "a stored answer is corrupt"
    return response + unpacker.unused_data


FINGERPRINT_BYTES = 32   # sha256
# What an entry keeps of a fingerprint: its first 16 bytes. A retry whose body differs has another
# fingerprint, and a 128-bit prefix of SHA-256 is as unforgeable for that purpose as all of it
# (a second preimage costs ~2**128); the 16 bytes dropped are 16 of ~480 a record takes.
FINGERPRINT_KEPT_BYTES = 16


class IdemEntry:
    """One remembered answer: who asked what (fingerprint), what was answered (exact bytes), when.

    All of it is one bytes object, `stored`: created_ms (8) | op (8) | fingerprint (16) | infno
    (1 + its length) | subject (1 + its length) | the packed answer (see pack_response). The
    store keeps only that object (no other per entry, and none the garbage collector scans) and
    wraps it again on `get`; `response` restores the answer's bytes.
    """

    __slots__ = ("stored",)

    def __init__(self, fingerprint: bytes, response: bytes, op: int, infno: str, created_ms: int,
                 subject: str, *, packed: bool = False) -> None:
        assert len(fingerprint) >= FINGERPRINT_KEPT_BYTES and 0 <= op < 2**63 and 0 <= created_ms < 2**63
        infno_utf8, subject_utf8 = infno.encode(), subject.encode()
        assert len(infno_utf8) < 256 and len(subject_utf8) < 256
        self.stored = b"".join((created_ms.to_bytes(_OP_BYTES, "big"), op.to_bytes(_OP_BYTES, "big"),
                                fingerprint[:FINGERPRINT_KEPT_BYTES],
                                bytes((len(infno_utf8),)), infno_utf8, bytes((len(subject_utf8),)), subject_utf8,
                                response if packed else pack_response(response)))

    @classmethod
    def wrap(cls, stored: bytes) -> IdemEntry:
        """The entry whose `stored` bytes these are."""
        entry = cls.__new__(cls)
        entry.stored = stored
        return entry

    @property
    def created_ms(self) -> int:
        """When the answer was made (its retention counts from then)."""
        return _created_ms(self.stored)

    @property
    def op(self) -> int:
        """The op of the record that made the answer (a replay waits for its durability)."""
        return int.from_bytes(self.stored[_OP_BYTES:2 * _OP_BYTES], "big")

    @property
    def fingerprint(self) -> bytes:
        """What is kept of the request's fingerprint (its first FINGERPRINT_KEPT_BYTES)."""
        return self.stored[2 * _OP_BYTES:_STRINGS_AT]

    def same_request(self, fingerprint: bytes) -> bool:
        """Whether a request of this `fingerprint` (a retry) is the one answered."""
        return self.fingerprint == fingerprint[:FINGERPRINT_KEPT_BYTES]

    @property
    def infno(self) -> str:
        return self._strings()[0]

    @property
    def subject(self) -> str:
        """setl_id for settle/cancel, omsgid for a reversal."""
        return self._strings()[1]

    @property
    def packed_response(self) -> bytes:
        return self.stored[self._strings()[2]:]

    @property
    def response(self) -> bytes:
        """The exact answer bytes that were sent."""
        return unpack_response(self.packed_response)

    def _strings(self) -> tuple[str, str, int]:
        """The infno, the subject, and where the packed answer starts."""
        stored = self.stored
        subject_at = _STRINGS_AT + 1 + stored[_STRINGS_AT]
        answer_at = subject_at + 1 + stored[subject_at]
        return stored[_STRINGS_AT + 1:subject_at].decode(), stored[subject_at + 1:answer_at].decode(), answer_at

    def to_list(self) -> list[Any]:
        """Msgpack-able form (for snapshots): the answer stays packed, tagged with its codec."""
        infno, subject, answer_at = self._strings()
        return [self.fingerprint, self.stored[answer_at:], self.op, infno, self.created_ms, subject, RESPONSE_CODEC]


_OP_BYTES = 8
_STRINGS_AT = 2 * _OP_BYTES + FINGERPRINT_KEPT_BYTES


class TimedKeys:
    """A dict key -> value, each entry with a time; expiry drops exactly the entries older than a time.

    Entries nearly always arrive in time order (commits carry the gateway's clock). Those are kept
    in a deque of keys, which costs one pointer each; the time of an entry is read from its value
    (`time_of`). An entry older than one already held (a clock set back, a voucher expiring
    sooner than the last) goes to a small sorted index instead. Expiry pops from the front of
    both, so it drops exactly what is older whatever the order of the puts.
    """

    def __init__(self, entries_max: int, time_of: Callable[[Any], int]) -> None:
        assert entries_max > 0
        self.entries_max = entries_max
        self._time_of = time_of
        self._values: dict[Any, Any] = {}
        self._in_order: collections.deque[Any] = collections.deque()   # keys, times non-decreasing
        self._latest_ms: int | None = None                              # time of the last in-order key
        self._out_of_order: SortedList = SortedList()                   # (at_ms, key)

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: Any) -> bool:
        return key in self._values

    def get(self, key: Any) -> Any:
        """The value stored under `key`, or None."""
        return self._values.get(key)

    def has_room(self) -> bool:
        """False when a new entry would exceed the cap."""
        return len(self._values) < self.entries_max

    def put(self, key: Any, value: Any) -> None:
        """Store `value` under `key` at the time `time_of(value)`; the key must be new, with room."""
        assert key not in self._values and self.has_room()
        self._values[key] = value
        at_ms = self._time_of(value)
        if self._latest_ms is None or at_ms >= self._latest_ms:
            self._in_order.append(key)
            self._latest_ms = at_ms
        else:
            self._out_of_order.add((at_ms, key))

    def expire(self, before_ms: int) -> None:
        """Drop every entry whose time is strictly before `before_ms`."""
        values, in_order, time_of = self._values, self._in_order, self._time_of
        while in_order and time_of(values[in_order[0]]) < before_ms:
            del values[in_order.popleft()]
        if not in_order:
            self._latest_ms = None
        out_of_order = self._out_of_order
        while out_of_order and out_of_order[0][0] < before_ms:
            del values[out_of_order.pop(0)[1]]

    def items(self) -> list[tuple[int, Any, Any]]:
        """Entries as (at_ms, key, value) in (time, key) order."""
        values, time_of = self._values, self._time_of
        return sorted((time_of(value), key, value) for key, value in values.items())


def _created_ms(stored: bytes) -> int:
    return int.from_bytes(stored[:_OP_BYTES], "big")


def _itself(at_ms: int) -> int:
    return at_ms


class IdempotencyStore:
    """Answers to state-changing requests by msgid (its first 12 chars are the institution code).

    Keyed by the msgid's UTF-8 bytes: 64 bytes kept for a 30-character msgid, where its str takes
    80 (a million records hold 16 MB less); encoding is one-to-one, so no two msgids share a key.
    """

    def __init__(self, entries_max: int) -> None:
        self._entries = TimedKeys(entries_max, _created_ms)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, msgid: str) -> IdemEntry | None:
        """The remembered answer for `msgid`, or None."""
        stored = self._entries.get(msgid.encode())
        return None if stored is None else IdemEntry.wrap(stored)

    def has_room(self) -> bool:
        """False when the cap is reached (the core then refuses state changes with OVERLOADED)."""
        return self._entries.has_room()

    def put(self, msgid: str, entry: IdemEntry) -> None:
        """Remember an answer; `msgid` must be new."""
        self._entries.put(msgid.encode(), entry.stored)

    def expire(self, now_ms: int) -> None:
        """Forget answers older than the retention."""
        self._entries.expire(now_ms - IDEMPOTENCY_RETENTION_MS)

    def snapshot(self) -> list[list[Any]]:
        """Msgpack-able contents in time order."""
        return [[msgid.decode(), *IdemEntry.wrap(stored).to_list()] for _, msgid, stored in self._entries.items()]

    def restore(self, rows: list[list[Any]]) -> None:
        """Load `snapshot()` output into an empty store.

        Rows of 7 fields (written before answers were packed) carry the plain answer bytes; rows
        of 8 end with the codec of a packed answer ("z1" answers are re-packed as RESPONSE_CODEC).
        """
        for msgid, fingerprint, response, op, infno, created_ms, subject, *codec in rows:
            if codec and codec[0] != RESPONSE_CODEC:
                # An answer packed by an older codec is unpacked and packed again in the current one.
                assert codec[0] in _DICTIONARIES, f"unknown stored-answer codec {codec}"
                response, codec = unpack_response(response, codec[0]), []
            self.put(msgid, IdemEntry(fingerprint, response, op, infno, created_ms, subject, packed=bool(codec)))


class Tombstones:
    """Msgids reversed by 2601 (applied or not yet seen), by msgid (the value is the time)."""

    def __init__(self, entries_max: int) -> None:
        self._entries = TimedKeys(entries_max, _itself)

    def __contains__(self, msgid: str) -> bool:
        return msgid in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def has_room(self) -> bool:
        """False when the cap is reached."""
        return self._entries.has_room()

    def add(self, msgid: str, now_ms: int) -> None:
        """Remember that `msgid` is reversed (idempotent)."""
        if msgid not in self._entries:
            self._entries.put(msgid, now_ms)

    def expire(self, now_ms: int) -> None:
        """Forget tombstones older than the idempotency retention."""
        self._entries.expire(now_ms - IDEMPOTENCY_RETENTION_MS)

    def snapshot(self) -> list[list[Any]]:
        """Msgpack-able contents in time order."""
        return [[at_ms, msgid] for at_ms, msgid, _ in self._entries.items()]

    def restore(self, rows: list[list[Any]]) -> None:
        """Load `snapshot()` output into an empty memory."""
        for at_ms, msgid in rows:
            self._entries.put(msgid, at_ms)


def voucher_key(issuer_kid: str, tid: str) -> str:
    """The identity of a voucher: its issuer and its token id."""
    return f"{issuer_kid}\x00{tid}"


class UsedVouchers:
    """E-vouchers that paid for a settlement, kept until they could no longer be valid anyway
    (the value is the voucher's expiry)."""

    def __init__(self, entries_max: int) -> None:
        self._entries = TimedKeys(entries_max, _itself)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def has_room(self) -> bool:
        """False when the cap is reached."""
        return self._entries.has_room()

    def add(self, key: str, exp_ms: int) -> None:
        """Mark a voucher used; `exp_ms` is its expiry."""
        self._entries.put(key, exp_ms)

    def expire(self, now_ms: int) -> None:
        """Forget vouchers that expired long enough ago."""
        self._entries.expire(now_ms - VOUCHER_RETENTION_AFTER_EXP_MS)

    def snapshot(self) -> list[list[Any]]:
        """Msgpack-able contents in time order."""
        return [[exp_ms, key] for exp_ms, key, _ in self._entries.items()]

    def restore(self, rows: list[list[Any]]) -> None:
        """Load `snapshot()` output into an empty memory."""
        for exp_ms, key in rows:
            self._entries.put(key, exp_ms)
