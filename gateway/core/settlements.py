"""Settlements that stand (or were cancelled/reversed) and the reconciliation index for 3201/3202.

setl_ids are allocated in increasing order, so each (institution, business day) list of setl_ids is
already in setl_id order: appending keeps it sorted and 3202 pages with bisect. Days older than the
retention are dropped through a time-ordered index.

A region holds millions of settlements for `settlement_days_kept` days, and after its commit a
settlement is read again only by a cancellation, a reversal, a 3202 page or a snapshot. So the
store keeps each as one msgpack bytes object (its fields but the setl_id, in _FIELDS order: ~180
bytes for what an object of 28 slots, its numbers and its strings took ~560), and hands out a
`Settlement` built from it. Bytes are not scanned by the garbage collector either: a full
collection's pause does not grow with the settlements held (docs/benchmarks.md, "Memory per
settlement"). A settlement handed out is a copy: a change is kept by `update`.

Settlements are found by the number in their setl_id (`setl_id_of`: admdvs, "1", 13 digits), see
SettlementStore; a setl_id of any other form names no settlement held.
"""

from __future__ import annotations

import array
import bisect
import functools
import itertools
import operator
from typing import Any

import msgpack
from sortedcontainers import SortedDict

STATUS_SETTLED = "settled"
STATUS_CANCELLED = "cancelled"
STATUS_REVERSED = "reversed"
SETL_ID_NUMBER_DIGITS = 13
# After the admdvs, the kind of a numbered id: "1" a setl_id, "2" an mdtrt_id.
_SETL_ID_KIND, _MDTRT_ID_KIND = "1", "2"


def _numbered_id(admdvs: str, kind: str, number: int) -> str:
    assert 0 < number < 10**SETL_ID_NUMBER_DIGITS
    return f"{admdvs}{kind}{number:0{SETL_ID_NUMBER_DIGITS}d}"


def setl_id_of(admdvs: str, number: int) -> str:
    """The region's `number`-th setl_id: admdvs + "1" + 13 digits, so ids sort in allocation order."""
    return _numbered_id(admdvs, _SETL_ID_KIND, number)


def mdtrt_id_of(admdvs: str, number: int) -> str:
    """The visit (mdtrt_id) of the region's `number`-th settlement: admdvs + "2" + 13 digits."""
    return _numbered_id(admdvs, _MDTRT_ID_KIND, number)


_FIELDS = ("setl_id", "msgid", "infno", "institution", "psn_no", "insutype", "insuplc_admdvs",
           "setl_time", "day", "month", "medfee_sumamt", "fund_pay_sumamt", "psn_cash_pay", "otc_pay",
           "rx_pay", "status", "cancel_msgid",
           # Since settlement v2 and who pays (SPEC 13) and supervision (SPEC 14; see
           # gateway/core/supervision.py): records and snapshots from before lack them, so each has a default.
           "overlmt_amt", "acct_pay", "trace_codes",
           # Who pays: the deductible it used and whose account paid acct_pay.
           "act_pay_dedc", "acct_payer_psn_no",
           "opter", "cert_type", "bound_by", "fulamt_ownpay_amt", "preselfpay_amt", "doctors")


_ALL_FIELDS = operator.attrgetter(*_FIELDS)   # one C call reads every field, in _FIELDS order
_KEPT_FIELDS = operator.attrgetter(*_FIELDS[1:])   # what the store keeps: all but the setl_id
_unpack_kept = functools.partial(msgpack.unpackb, use_list=False)


class Settlement:
    """One settlement (2102/2207) and its current status."""

    __slots__ = _FIELDS

    # Explicit parameters (keyword-only) rather than a loop of setattr: this runs once per
    # settlement, when the commit builds it from the record (whose "setl" map the 2102/2207
    # handler writes with exactly these keys).
    def __init__(self, *, setl_id: str, msgid: str, infno: str, institution: str, psn_no: str, insutype: str,
                 insuplc_admdvs: str, setl_time: int, day: int, month: int, medfee_sumamt: int,
                 fund_pay_sumamt: int, psn_cash_pay: int, otc_pay: int, rx_pay: int, status: str,
                 cancel_msgid: str | None, overlmt_amt: int = 0, acct_pay: int = 0,
                 trace_codes: tuple[str, ...] | list[str] = (), act_pay_dedc: int = 0,
                 acct_payer_psn_no: str | None = None,
                 opter: str = "", cert_type: str = "", bound_by: list[str] | tuple[()] | None = None,
                 fulamt_ownpay_amt: int = 0, preselfpay_amt: int = 0,
                 doctors: list[list[Any]] | tuple[()] | None = None) -> None:
        self.setl_id = setl_id
        self.msgid = msgid
        self.infno = infno
        self.institution = institution
        self.psn_no = psn_no
        self.insutype = insutype
        self.insuplc_admdvs = insuplc_admdvs
        self.setl_time = setl_time
        self.day = day
        self.month = month
        self.medfee_sumamt = medfee_sumamt
        self.fund_pay_sumamt = fund_pay_sumamt
        self.psn_cash_pay = psn_cash_pay
        self.otc_pay = otc_pay
        self.rx_pay = rx_pay
        self.status = status
        self.cancel_msgid = cancel_msgid
        self.overlmt_amt = overlmt_amt
        self.acct_pay = acct_pay
        self.trace_codes = tuple(trace_codes)      # the traceability codes it holds while it stands
        self.act_pay_dedc = act_pay_dedc
        self.acct_payer_psn_no = acct_payer_psn_no  # None: the account was not used
        # Who settled and how (supervision).
        self.opter = opter
        self.cert_type = cert_type
        # Read only once built; most are empty, and the one empty tuple costs nothing per settlement.
        self.bound_by = bound_by or ()
        self.fulamt_ownpay_amt = fulamt_ownpay_amt
        self.preselfpay_amt = preselfpay_amt
        self.doctors = doctors or ()   # [[bilg_dr_codg, medfee_fen, ownpay_fen], ...]

    def to_dict(self) -> dict[str, Any]:
        """Msgpack-able form."""
        return dict(zip(_FIELDS, _ALL_FIELDS(self)))


class SettlementStore:
    """Settlements by setl_id (each kept as bytes), with a per-(institution, day) index in setl_id order.

    Every settlement held is the region's own (`setl_id_of`), and the commit numbers them one after
    another (State.setl_counter), so the store is a list indexed by that number less the oldest
    one's: 8 bytes a settlement where a dict with its key objects took ~75. The per-(institution,
    day) index holds the numbers in arrays (8 bytes each, no object). Expiry drops whole days,
    oldest first; it empties their slots and cuts the empty ones off the front.
    """

    def __init__(self, entries_max: int, days_kept: int, admdvs: str) -> None:
        assert entries_max > 0 and days_kept > 0
        self.entries_max = entries_max
        self.days_kept = days_kept
        self._admdvs = admdvs
        self._prefix = f"{admdvs}{_SETL_ID_KIND}"
        self._kept: list[bytes | None] = []       # by number - _first_number; None: expired
        self._first_number = 0                      # the number of _kept[0]
        self._count = 0                             # slots that hold a settlement
        self._by_day: SortedDict = SortedDict()    # day -> {institution: array of numbers, ascending}
        # The oldest day held (None when empty): expiry, asked on every commit, nearly always finds
        # nothing to drop, which this answers without the sorted index.
        self._oldest_day: int | None = None

    def __len__(self) -> int:
        return self._count

    def get(self, setl_id: str) -> Settlement | None:
        """A copy of the settlement, or None (unknown or past retention)."""
        index = self._index(setl_id)
        kept = None if index is None else self._kept[index]
        return None if kept is None else _settlement(setl_id, kept)

    def has_room(self) -> bool:
        """False when the cap is reached (the core then refuses settlements with OVERLOADED).

        The cap counts slots, expired ones between held ones included (there are none unless a
        clock went backwards), so it bounds the memory as well as the settlements.
        """
        return len(self._kept) < self.entries_max

    def add(self, settlement: Settlement) -> None:
        """Store a new settlement: the region's own, numbered after every one held."""
        number = self._number(settlement.setl_id)
        assert number is not None, f"not a setl_id of this region: {settlement.setl_id!r}"
        assert self.has_room()
        if not self._kept:
            self._first_number = number
        gap = number - self._first_number - len(self._kept)
        assert gap >= 0, "settlements are added in setl_id order"
        self._kept.extend(itertools.repeat(None, gap))   # numbers never committed (none, in practice)
        self._kept.append(_kept(settlement))
        self._count += 1
        day_numbers = self._by_day.setdefault(settlement.day, {}).get(settlement.institution)
        if day_numbers is None:
            day_numbers = self._by_day[settlement.day][settlement.institution] = array.array("q")
        day_numbers.append(number)
        if self._oldest_day is None or settlement.day < self._oldest_day:
            self._oldest_day = settlement.day

    def update(self, settlement: Settlement) -> None:
        """Keep the changed status (and cancel_msgid) of a settlement handed out by `get`."""
        index = self._index(settlement.setl_id)
        assert index is not None and self._kept[index] is not None
        self._kept[index] = _kept(settlement)

    def day_ids(self, institution: str, day: int) -> list[str]:
        """The setl_ids of `institution` on Shanghai `day`, in setl_id order."""
        return [self._setl_id(number) for number in self._by_day.get(day, {}).get(institution, ())]

    def page(self, institution: str, day: int, after: str | None, limit: int) -> tuple[list[Settlement], bool]:
        """Up to `limit` settlements after `after` (exclusive) and whether more follow."""
        numbers = self._by_day.get(day, {}).get(institution, ())
        start = 0 if after is None else bisect.bisect_right(numbers, after, key=self._setl_id)
        return [self._stored(number) for number in numbers[start:start + limit]], start + limit < len(numbers)

    def expire(self, today: int) -> None:
        """Drop the days that fell out of retention as of `today`."""
        if self._oldest_day is None or self._oldest_day > today - self.days_kept:
            return
        kept, first = self._kept, self._first_number
        while self._by_day and self._by_day.peekitem(0)[0] <= today - self.days_kept:
            _, per_institution = self._by_day.popitem(0)
            for numbers in per_institution.values():
                for number in numbers:
                    kept[number - first] = None
                self._count -= len(numbers)
        held_from = next((index for index, slot in enumerate(kept) if slot is not None), len(kept))
        del kept[:held_from]
        self._first_number += held_from
        self._oldest_day = self._by_day.peekitem(0)[0] if self._by_day else None

    def standing(self) -> list[Settlement]:
        """Every settlement whose status is settled (for invariant checks)."""
        every = (_settlement(self._setl_id(self._first_number + index), kept)
                 for index, kept in enumerate(self._kept) if kept is not None)
        return [s for s in every if s.status == STATUS_SETTLED]

    def snapshot(self) -> list[dict[str, Any]]:
        """Msgpack-able contents in (day, institution, setl_id) order."""
        return [self._stored(number).to_dict() for per in self._by_day.values()
                for _, numbers in sorted(per.items()) for number in numbers]

    def restore(self, rows: list[dict[str, Any]]) -> None:
        """Load `snapshot()` output into an empty store."""
        for row in sorted(rows, key=operator.itemgetter("setl_id")):   # numbers ascending
            self.add(Settlement(**row))

    def _number(self, setl_id: str) -> int | None:
        """The number of a setl_id of the region's form (`setl_id_of`), else None."""
        number = setl_id[len(self._prefix):]
        if (len(number) == SETL_ID_NUMBER_DIGITS and setl_id.startswith(self._prefix) and number.isascii()
                and number.isdigit()):
            return int(number)
        return None

    def _index(self, setl_id: str) -> int | None:
        """Where the settlement `setl_id` would be in _kept, or None (not the region's, or not held)."""
        number = self._number(setl_id)
        if number is None or not 0 <= number - self._first_number < len(self._kept):
            return None
        return number - self._first_number

    def _setl_id(self, number: int) -> str:
        return setl_id_of(self._admdvs, number)

    def _stored(self, number: int) -> Settlement:
        kept = self._kept[number - self._first_number]
        assert kept is not None
        return _settlement(self._setl_id(number), kept)


def _kept(settlement: Settlement) -> bytes:
    """What the store keeps of `settlement`: its fields but the setl_id, one msgpack array."""
    return msgpack.packb(_KEPT_FIELDS(settlement))


def _settlement(setl_id: str, kept: bytes) -> Settlement:
    """The settlement the store keeps as `kept` (its arrays come back as tuples)."""
    return Settlement(**dict(zip(_FIELDS, (setl_id, *_unpack_kept(kept)))))
