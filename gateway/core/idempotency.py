"""Time-bounded memories of the core: idempotency records, reversal tombstones, used e-vouchers.

Each memory is a dict plus a time-ordered index (sortedcontainers) so that expiry pops from the
front. Expiry runs only inside commits, driven by the record's own time, so replaying the journal
reproduces exactly the same contents. Every memory has a cap; a full memory refuses new entries
(the core answers OVERLOADED) rather than forgetting something it promised to remember.
"""

from __future__ import annotations

import zlib
from typing import Any

import msgpack
from sortedcontainers import SortedList

# Idempotency records and tombstones are kept at least 25 h (SPEC section 6); one more hour of margin.
IDEMPOTENCY_RETENTION_MS = 26 * 3_600_000
# A used voucher can never be accepted again once its exp has passed; keep it 10 min beyond.
VOUCHER_RETENTION_AFTER_EXP_MS = 600_000


# Stored answers are kept compressed: they are ~1 KiB of msgpack whose map keys repeat in every
# answer, and the store holds millions. Raw DEFLATE with a preset dictionary of those keys (plus
# the frame's "sig" and kid prefix) shrinks a 3-line 2102 answer from ~900 to ~350 bytes. The
# round trip is lossless, so a replay returns the exact bytes that were sent, whichever key signed
# them. Level 1 and a 4 KiB window (an answer is far smaller) keep the compressor's set-up cheap.
# The dictionary is part of the stored format: never edit it; add a new codec name instead.
RESPONSE_CODEC = "z1"
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


def pack_response(response: bytes) -> bytes:
    """The compact stored form of an answer (codec RESPONSE_CODEC); `unpack_response` inverts it."""
    packer = zlib.compressobj(_DEFLATE_LEVEL, zlib.DEFLATED, _DEFLATE_WBITS, _DEFLATE_MEMLEVEL,
                              zlib.Z_DEFAULT_STRATEGY, _Z1_DICTIONARY)
    return packer.compress(response) + packer.flush()


def unpack_response(packed: bytes) -> bytes:
    """The exact answer bytes `pack_response` was given."""
    unpacker = zlib.decompressobj(_DEFLATE_WBITS, _Z1_DICTIONARY)
    response = unpacker.decompress(packed) + unpacker.flush()
    assert unpacker.eof and not unpacker.unused_data, "a stored answer is corrupt"
    return response


class IdemEntry:
    """One remembered answer: who asked what (fingerprint), what was answered (exact bytes), when.

    The answer is held in its packed form (see pack_response); `response` restores the bytes.
    """

    __slots__ = ("fingerprint", "packed_response", "op", "infno", "created_ms", "subject")

    def __init__(self, fingerprint: bytes, response: bytes, op: int, infno: str, created_ms: int,
                 subject: str, *, packed: bool = False) -> None:
        self.fingerprint = fingerprint
        self.packed_response = response if packed else pack_response(response)
        self.op = op
        self.infno = infno
        self.created_ms = created_ms
        self.subject = subject  # setl_id for settle/cancel, omsgid for a reversal

    @property
    def response(self) -> bytes:
        """The exact answer bytes that were sent."""
        return unpack_response(self.packed_response)

    def to_list(self) -> list[Any]:
        """Msgpack-able form (for snapshots): the answer stays packed, tagged with its codec."""
        return [self.fingerprint, self.packed_response, self.op, self.infno, self.created_ms, self.subject,
                RESPONSE_CODEC]


class TimedKeys:
    """A dict key -> value with a (time, key) index; the base of the three memories below."""

    def __init__(self, entries_max: int) -> None:
        assert entries_max > 0
        self.entries_max = entries_max
        self._values: dict[str, Any] = {}
        self._index: SortedList = SortedList()

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: str) -> bool:
        return key in self._values

    def get(self, key: str) -> Any:
        """The value stored under `key`, or None."""
        return self._values.get(key)

    def has_room(self) -> bool:
        """False when a new entry would exceed the cap."""
        return len(self._values) < self.entries_max

    def put(self, key: str, at_ms: int, value: Any) -> None:
        """Store `value` under `key`, indexed at `at_ms`; the key must be new and there must be room."""
        assert key not in self._values and self.has_room()
        self._values[key] = value
        self._index.add((at_ms, key))

    def expire(self, before_ms: int) -> None:
        """Drop every entry indexed strictly before `before_ms`."""
        while self._index and self._index[0][0] < before_ms:
            _, key = self._index.pop(0)
            del self._values[key]

    def items(self) -> list[tuple[int, str, Any]]:
        """Entries as (at_ms, key, value) in time order."""
        return [(at_ms, key, self._values[key]) for at_ms, key in self._index]


class IdempotencyStore:
    """Answers to state-changing requests by msgid (its first 12 chars are the institution code)."""

    def __init__(self, entries_max: int) -> None:
        self._entries = TimedKeys(entries_max)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, msgid: str) -> IdemEntry | None:
        """The remembered answer for `msgid`, or None."""
        return self._entries.get(msgid)

    def has_room(self) -> bool:
        """False when the cap is reached (the core then refuses state changes with OVERLOADED)."""
        return self._entries.has_room()

    def put(self, msgid: str, entry: IdemEntry) -> None:
        """Remember an answer; `msgid` must be new."""
        self._entries.put(msgid, entry.created_ms, entry)

    def expire(self, now_ms: int) -> None:
        """Forget answers older than the retention."""
        self._entries.expire(now_ms - IDEMPOTENCY_RETENTION_MS)

    def snapshot(self) -> list[list[Any]]:
        """Msgpack-able contents in time order."""
        return [[msgid, *entry.to_list()] for _, msgid, entry in self._entries.items()]

    def restore(self, rows: list[list[Any]]) -> None:
        """Load `snapshot()` output into an empty store.

        Rows of 7 fields (written before answers were packed) carry the plain answer bytes; rows
        of 8 end with the codec of a packed answer.
        """
        for msgid, fingerprint, response, op, infno, created_ms, subject, *codec in rows:
            assert codec in ([], [RESPONSE_CODEC]), f"unknown stored-answer codec {codec}"
            self.put(msgid, IdemEntry(fingerprint, response, op, infno, created_ms, subject, packed=bool(codec)))


class Tombstones:
    """Msgids reversed by 2601 (applied or not yet seen), by msgid."""

    def __init__(self, entries_max: int) -> None:
        self._entries = TimedKeys(entries_max)

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
            self._entries.put(msgid, now_ms, True)

    def expire(self, now_ms: int) -> None:
        """Forget tombstones older than the idempotency retention."""
        self._entries.expire(now_ms - IDEMPOTENCY_RETENTION_MS)

    def snapshot(self) -> list[list[Any]]:
        """Msgpack-able contents in time order."""
        return [[at_ms, msgid] for at_ms, msgid, _ in self._entries.items()]

    def restore(self, rows: list[list[Any]]) -> None:
        """Load `snapshot()` output into an empty memory."""
        for at_ms, msgid in rows:
            self._entries.put(msgid, at_ms, True)


def voucher_key(issuer_kid: str, tid: str) -> str:
    """The identity of a voucher: its issuer and its token id."""
    return f"{issuer_kid}\x00{tid}"


class UsedVouchers:
    """E-vouchers that paid for a settlement, kept until they could no longer be valid anyway."""

    def __init__(self, entries_max: int) -> None:
        self._entries = TimedKeys(entries_max)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def has_room(self) -> bool:
        """False when the cap is reached."""
        return self._entries.has_room()

    def add(self, key: str, exp_ms: int) -> None:
        """Mark a voucher used; `exp_ms` is its expiry."""
        self._entries.put(key, exp_ms, True)

    def expire(self, now_ms: int) -> None:
        """Forget vouchers that expired long enough ago."""
        self._entries.expire(now_ms - VOUCHER_RETENTION_AFTER_EXP_MS)

    def snapshot(self) -> list[list[Any]]:
        """Msgpack-able contents in time order."""
        return [[exp_ms, key] for exp_ms, key, _ in self._entries.items()]

    def restore(self, rows: list[list[Any]]) -> None:
        """Load `snapshot()` output into an empty memory."""
        for exp_ms, key in rows:
            self._entries.put(key, exp_ms, True)
