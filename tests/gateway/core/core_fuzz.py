"""Structured fuzzing of the core through `Sealer.answer`, under valid MACs.

Each case is one request from a signed-in terminal of the core test region: a well-formed
transaction of any infno, or one with fields of its input or envelope replaced by random values,
a random msgpack body, a broken tag, a replay of an earlier answer, a msgid reused with other
content, a cancellation or reversal of an earlier settlement, or time moving on. Every answer is
checked against the contract:

- it is a Frame `[1, "sig", kid, body, tag]` whose body decodes as a response envelope with every
  error key, and (on a sample) whose signature verifies with the gateway's key;
- its err_code, infcode and HTTP status agree with SPEC section 8's table (kept in wire_helpers.py, apart from
  the implementation's); `output` is there exactly on success; `respond_time` is the request's
  instant; inf_refmsgid is the region's, 30 characters, never seen before (a replay's bytes are
  the first answer's, byte for byte);
- the ledgers stay exact: every so many cases, today's person usage and this month's institution
  usage equal the sums over the standing settlements, and no cap is exceeded; at the end of a
  run, replaying every record into a fresh core, and restoring a snapshot, give the same state.

Runs are deterministic for a seed. `run_cases` is the whole of it; tests choose the counts.
"""

from __future__ import annotations

import collections
import dataclasses
import random
import time
from typing import Any

import msgpack

from core_world import C1, P1, P2, T0_MS, World, card, line
from wire_helpers import ERROR_KEYS, SPEC8
from gateway.core import from_wire
from gateway.core.clock import business_day, business_month
from gateway.core.settlements import STATUS_SETTLED
from protocol import (REQ_DOMAIN, RESP_DOMAIN, Frame, ProtocolError, decode_frame, decode_response_envelope,
                      encode_frame, gateway_kid, mac, public_raw)

# SPEC section 8 (tests/gateway/core/wire_helpers.py); a -1 code's status also depends on where
# the server answered it (OVERLOADED is 429, or 503 at the connection cap).
_SPEC8 = {code: expected for code, expected in SPEC8.items() if expected[0] != -1}
_SPEC8_SERVER = {"OVERLOADED": (-1, (429, 503)), "DRAINING": (-1, (503,)), "INTERNAL": (-1, (500,))}
assert set(_SPEC8_SERVER) == set(SPEC8) - set(_SPEC8)
FRESH_MS = 24 * 3_600_000
ALLOWANCE_FEN = {P1: 12000, P2: 6000}
CAP_FEN = {P1: 1_000_000, P2: 20_000, C1: 500_000}
PERSONS = ["H1", "H2", "H3", "H4", "X001", "PBLK"]
SETTLE_INFNOS = {"T1": ("2101", "2102"), "T2": ("2101", "2102"), "T3": ("2206", "2207")}
STATE_CHANGING = {"2102", "2103", "2207", "2208", "2601"}
LEAVES: tuple[Any, ...] = (None, True, False, 0, -1, 1, 2**63 - 1, -(2**63), 10**10, 10**10 + 1, 1.5, "",
                           "01", "02", "03", "2102", "x" * 40, b"", b"\x00" * 16, [], {})
# Case kinds and their weights.
KINDS = (("settle", 30), ("query", 8), ("cancel", 8), ("reverse", 5), ("replay", 8), ("reuse", 4),
         ("input", 15), ("envelope", 8), ("body", 4), ("tag", 3), ("advance", 2), ("voucher", 5))


class FuzzFailure(AssertionError):
    """An answer broke the contract; the message names the seed and the case."""


@dataclasses.dataclass
class FuzzStats:
    cases: int = 0
    seconds: float = 0.0
    by_kind: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    by_code: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    verified: int = 0

    @property
    def cases_per_s(self) -> float:
        return self.cases / self.seconds if self.seconds else 0.0

    def merge(self, other: FuzzStats) -> None:
        self.cases += other.cases
        self.seconds = max(self.seconds, other.seconds)
        self.by_kind.update(other.by_kind)
        self.by_code.update(other.by_code)
        self.verified += other.verified


@dataclasses.dataclass
class _Sent:
    """A request and what is known of it."""

    kind: str
    frame: bytes
    msgid: str | None = None          # the envelope's msgid when the envelope is untouched
    infno: str = ""
    term: str = ""
    input_: dict[str, Any] | None = None


class CoreFuzzer:
    """One core of the test region, its terminals, and the memory of what was answered."""

    def __init__(self, tmp_path: Any, seed: int, verify_every: int = 16, check_every: int = 500) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        # Sessions outlive the time a chunk advances (a year or so), so a broken tag is BAD_MAC.
        self.world = World(tmp_path, seed=seed, session_ttl_s=10**9)
        self.now_ms = T0_MS
        self.terms = {dev: self.world.sign_in(dev, now_ms=self.now_ms) for dev in SETTLE_INFNOS}
        self.verify_every = verify_every
        self.check_every = check_every
        self.public_key = self.world.gateway_key.public_key()
        self.kid = gateway_kid(public_raw(self.public_key))
        self.refids: set[str] = set()
        # (dev, msgid) -> (frame, response, instant answered), for replays
        self.answered: dict[tuple[str, str], tuple[bytes, bytes, int]] = {}
        self.settled: list[tuple[str, str, str, str]] = []                # (dev, msgid, setl_id, psn_no)
        self.stats = FuzzStats()
        # SPEC 7: reversing a cancellation re-instates the settlement without limit checks, so
        # its amounts may go over the limits: by (institution, month) and (psn_no, day), how much.
        self.cancelled: dict[tuple[str, str], str] = {}       # (dev, cancel msgid) -> setl_id
        self.over_cap: collections.Counter[tuple[str, int]] = collections.Counter()
        self.over_allowance: collections.Counter[tuple[str, int]] = collections.Counter()
        self._weights = [w for _, w in KINDS]
        self._kinds = [k for k, _ in KINDS]

    # -- one case ---------------------------------------------------------------------------

    def run(self, cases: int, deadline_s: float | None = None) -> FuzzStats:
        """Run `cases` cases (fewer if `deadline_s`, a time.monotonic() instant, passes first)."""
        started = time.monotonic()
        for index in range(cases):
            if deadline_s is not None and time.monotonic() > deadline_s:
                break
            kind = self.rng.choices(self._kinds, self._weights)[0]
            try:
                self._case(kind)
            except FuzzFailure:
                raise
            except Exception as exc:  # anything the core raised is a finding
                raise FuzzFailure(f"seed {self.seed} case {index} ({kind}): {type(exc).__name__}: {exc}") from exc
            self.stats.cases += 1
            self.stats.by_kind[kind] += 1
            if (index + 1) % self.check_every == 0:
                self.check_ledgers()
        self.check_ledgers()
        self.check_replay()
        self.stats.seconds = time.monotonic() - started
        return self.stats

    def _case(self, kind: str) -> None:
        if kind == "advance":
            self.now_ms += self.rng.choice([1, 1000, 3_600_000, 8 * 3_600_000, 86_400_000])
            return
        if kind == "replay":
            if self.answered:
                self._replay()
                return
            kind = "settle"
        sent = getattr(self, f"_make_{kind}")()
        result = self.world.handle_tx(sent.frame, self.now_ms)
        self.world.keep(result)
        envelope = self._check_answer(sent, result.http_status, result.response, replay=False)
        if (envelope.infcode == 0 and sent.msgid is not None and sent.infno in STATE_CHANGING):
            self.answered[(sent.term, sent.msgid)] = (sent.frame, result.response, self.now_ms)
            if sent.infno in ("2102", "2207"):
                setl = envelope.output["setlinfo"]
                self.settled.append((sent.term, sent.msgid, setl["setl_id"], setl["psn_no"]))
            elif sent.infno in ("2103", "2208"):
                self.cancelled[(sent.term, sent.msgid)] = envelope.output["setl_id"]
            elif sent.infno == "2601" and sent.input_ is not None and envelope.output.get("original_found"):
                self._note_reinstated(sent.term, sent.input_)

    def _note_reinstated(self, dev: str, input_: dict[str, Any]) -> None:
        setl_id = self.cancelled.get((dev, input_.get("omsgid", "")))
        if setl_id is None or input_.get("oinfno") not in ("2103", "2208"):
            return
        settlement = self.world.core.state.settlements.get(setl_id)
        if settlement is not None:
            self.over_cap[(settlement.institution, settlement.month)] += settlement.fund_pay_sumamt
            self.over_allowance[(settlement.psn_no, settlement.day)] += settlement.otc_pay

    def _replay(self) -> None:
        key = self.rng.choice(list(self.answered))
        frame, response, answered_ms = self.answered[key]
        before = self.world.core.snapshot() if self.rng.random() < 0.05 else None
        result = self.world.handle_tx(frame, self.now_ms)
        self.world.keep(result)
        envelope = self._check_answer(_Sent("replay", frame), result.http_status, result.response, replay=True)
        # Within the freshness window (inside the 25 h retention), and unless reversed since: the
        # same bytes, and nothing applied.
        if self.now_ms - answered_ms < FRESH_MS and envelope.err_code != "ORIGINAL_REVERSED":
            if result.response != response:
                raise self._fail(f"replay of {key} answered other bytes: {envelope.err_code}")
            if before is not None and self.world.core.snapshot() != before:
                raise self._fail(f"replay of {key} changed the state")

    # -- requests ---------------------------------------------------------------------------

    def _term(self) -> str:
        return self.rng.choice(list(self.terms))

    def _msgid(self, dev: str) -> str:
        return self.world.next_msgid(self.terms[dev].fixmedins_code, self.now_ms)

    def _items(self) -> list[dict[str, Any]]:
        items = []
        for n in range(self.rng.randint(1, 4)):
            fee = self.rng.choice([1, 99, 1000, 2500, 8000, 30000])
            cnt = self.rng.choice([1, 1, 2, 3])
            otc = self.rng.random() < 0.7
            rx = None if otc or self.rng.random() < 0.2 else f"RX{n}"
            items.append(line(str(n), fee * cnt, lv=self.rng.choice(["01", "02", "03"]), otc=otc, rxno=rx, cnt=cnt,
                              dr=self.rng.choice(["OP1", "OP1", "DR1"])))
        return items

    def _settle_input(self, dev: str, mid: str, infno: str) -> dict[str, Any]:
        items = self._items()
        medfee = sum(i["det_item_fee_sumamt"] for i in items)
        who = card(self.rng.choice(PERSONS), insutype=self.rng.choice(["310", "390"]))
        fields = self.world.card_fields(self.terms[dev], mid, infno, medfee, who)
        return {**fields, "medfee_sumamt": medfee, "items": items}

    def _framed(self, kind: str, dev: str, infno: str, input_: dict[str, Any], mid: str | None = None) -> _Sent:
        mid = mid or self._msgid(dev)
        frame = self.terms[dev].request_frame(infno, mid, input_, self.now_ms)
        return _Sent(kind, frame, mid, infno, dev, input_)

    def _make_settle(self) -> _Sent:
        dev = self._term()
        infno = self.rng.choice(SETTLE_INFNOS[dev])
        mid = self._msgid(dev)
        return self._framed("settle", dev, infno, self._settle_input(dev, mid, infno), mid)

    def _make_voucher(self) -> _Sent:
        dev = self._term()
        infno = self.rng.choice(SETTLE_INFNOS[dev])
        org = self.terms[dev].fixmedins_code if self.rng.random() < 0.8 else P2
        tid = f"tid-{self.rng.randrange(40)}"    # repeats: a used voucher is refused
        voucher = self.world.voucher(psn_no=self.rng.choice(PERSONS), org=org, now_ms=self.now_ms, tid=tid)
        items = self._items()
        medfee = sum(i["det_item_fee_sumamt"] for i in items)
        return self._framed("voucher", dev, infno, {**voucher, "medfee_sumamt": medfee, "items": items})

    def _make_query(self) -> _Sent:
        dev = self._term()
        infno = self.rng.choice(["1101", "3201", "3202"])
        mid = self._msgid(dev)
        if infno == "1101":
            input_ = self.world.card_fields(self.terms[dev], mid, "1101", 0, card(self.rng.choice(PERSONS)))
        else:
            stmt = time.strftime("%Y%m%d", time.gmtime((self.now_ms + 8 * 3_600_000) // 1000))
            input_ = ({"stmt_date": stmt, "setl_cnt": 0, "medfee_sumamt": 0, "fund_pay_sumamt": 0, "psn_cash_pay": 0}
                      if infno == "3201" else {"stmt_date": stmt, "limit": self.rng.choice([1, 50, 500])})
        return self._framed("query", dev, infno, input_, mid)

    def _make_cancel(self) -> _Sent:
        if not self.settled:
            return self._make_settle()
        dev, _, setl_id, psn_no = self.rng.choice(self.settled)
        if self.rng.random() < 0.2:
            dev = self._term()
        if self.rng.random() < 0.1:
            psn_no = "H9"
        infno = "2208" if dev == "T3" else "2103"
        return self._framed("cancel", dev, infno, {"setl_id": setl_id, "psn_no": psn_no})

    def _make_reverse(self) -> _Sent:
        dev = self._term()
        if self.answered and self.rng.random() < 0.8:
            dev, omsgid = self.rng.choice(list(self.answered))
        else:
            omsgid = self._msgid(dev)    # unknown yet: a tombstone
        oinfno = self.rng.choice(["2102", "2103", "2207", "2208", "2101"])
        return self._framed("reverse", dev, "2601", {"omsgid": omsgid, "oinfno": oinfno})

    def _make_reuse(self) -> _Sent:
        if not self.answered:
            return self._make_settle()
        dev, mid = self.rng.choice(list(self.answered))
        infno = self.rng.choice(SETTLE_INFNOS[dev])
        return self._framed("reuse", dev, infno, self._settle_input(dev, mid, infno), mid)

    def _make_input(self) -> _Sent:
        sent = self.rng.choice([self._make_settle, self._make_query, self._make_cancel, self._make_reverse])()
        assert sent.input_ is not None
        input_ = _replace_some(self.rng, sent.input_)
        return self._framed("input", sent.term, sent.infno, input_, sent.msgid)

    def _make_envelope(self) -> _Sent:
        sent = self._make_settle() if self.rng.random() < 0.7 else self._make_query()
        body = msgpack.unpackb(decode_frame(sent.frame).body, raw=False)
        field = self.rng.choice(sorted(body))
        roll = self.rng.random()
        if roll < 0.4:
            body[field] = _random_value(self.rng, 2)
        elif roll < 0.6:
            del body[field]
        elif roll < 0.8:
            body["inf_time"] = self.now_ms + self.rng.choice([-25 * 3_600_000, 301_000, -1, 0])
        else:
            body[self.rng.choice(["extra", "x", ""])] = _random_value(self.rng, 1)
        return self._raw_body("envelope", sent.term, msgpack.packb(body, use_bin_type=True))

    def _make_body(self) -> _Sent:
        value = _random_value(self.rng, 0) if self.rng.random() < 0.3 else {
            k: _random_value(self.rng, 1) for k in self.rng.sample(["infno", "msgid", "input", "inf_time", "x"], 3)}
        return self._raw_body("body", self._term(), msgpack.packb(value, use_bin_type=True))

    def _raw_body(self, kind: str, dev: str, raw: bytes) -> _Sent:
        term = self.terms[dev]
        assert term.session_key is not None and term.sign_no is not None
        tag = mac(term.session_key, REQ_DOMAIN, raw)
        return _Sent(kind, encode_frame(Frame(1, "mac", term.sign_no, raw, tag)), term=dev)

    def _make_tag(self) -> _Sent:
        sent = self._make_settle()
        frame = decode_frame(sent.frame)
        tag = bytearray(frame.tag)
        tag[self.rng.randrange(len(tag))] ^= 1 << self.rng.randrange(8)
        return _Sent("tag", encode_frame(Frame(1, "mac", frame.key_id, frame.body, bytes(tag))), term=sent.term)

    # -- checks -----------------------------------------------------------------------------

    def _fail(self, what: str) -> FuzzFailure:
        return FuzzFailure(f"seed {self.seed} case {self.stats.cases}: {what}")

    def _check_answer(self, sent: _Sent, status: int, response: bytes, replay: bool) -> Any:
        try:
            frame = decode_frame(response)
            envelope = decode_response_envelope(frame.body)
        except ProtocolError as exc:
            raise self._fail(f"{sent.kind}: the answer does not decode: {exc}") from None
        raw = msgpack.unpackb(frame.body, raw=False)
        if (frame.auth != "sig" or frame.key_id != self.kid or len(frame.tag) != 64
                or not all(key in raw for key in ERROR_KEYS)):
            raise self._fail(f"{sent.kind}: not a signed answer with every error key: {raw}")
        if self.stats.cases % self.verify_every == 0:
            self.public_key.verify(frame.tag, RESP_DOMAIN + frame.body)
            self.stats.verified += 1
        self._check_code(sent, status, envelope)
        if (envelope.output is not None) != (envelope.infcode == 0):
            raise self._fail(f"{sent.kind}: output {'missing' if envelope.infcode == 0 else 'on an error'}")
        if not replay:
            self._check_fresh(sent, envelope)
        self.stats.by_code[envelope.err_code or "ok"] += 1
        return envelope

    def _check_code(self, sent: _Sent, status: int, envelope: Any) -> None:
        code = envelope.err_code
        if code == "":
            expected: tuple[int, tuple[int, ...]] = (0, (200,))
        elif code in _SPEC8:
            infcode, http = _SPEC8[code]
            expected = (infcode, (http,))
        elif code in _SPEC8_SERVER:
            expected = _SPEC8_SERVER[code]
        else:
            raise self._fail(f"{sent.kind}: err_code {code!r} is not in SPEC section 8")
        if envelope.infcode != expected[0] or status not in expected[1]:
            raise self._fail(f"{sent.kind}: {code or 'success'} answered infcode {envelope.infcode}, HTTP {status}")
        if sent.kind == "tag" and code != "BAD_MAC":
            raise self._fail(f"a broken tag answered {code or 'success'}")

    def _check_fresh(self, sent: _Sent, envelope: Any) -> None:
        refid = envelope.inf_refmsgid
        if len(refid) != 30 or not refid.startswith(self.world.config.admdvs) or refid in self.refids:
            raise self._fail(f"{sent.kind}: inf_refmsgid {refid!r} reused or malformed")
        self.refids.add(refid)
        if envelope.respond_time != self.now_ms:
            raise self._fail(f"{sent.kind}: respond_time {envelope.respond_time} != {self.now_ms}")
        if sent.msgid is not None and envelope.msgid != sent.msgid:
            raise self._fail(f"{sent.kind}: msgid {envelope.msgid!r} echoed for {sent.msgid!r}")

    def check_ledgers(self) -> None:
        """Today's person usage and this month's institution usage equal the standing settlements."""
        state = self.world.core.state
        day, month = business_day(self.now_ms), business_month(self.now_ms)
        person: collections.Counter[str] = collections.Counter()
        institution: collections.Counter[str] = collections.Counter()
        largest: dict[str, int] = collections.defaultdict(int)
        for s in state.settlements.standing():
            if s.day == day:
                person[s.psn_no] += s.otc_pay
                largest[s.psn_no] = max(largest[s.psn_no], ALLOWANCE_FEN.get(s.institution, 0))
            if s.month == month:
                institution[s.institution] += s.fund_pay_sumamt
        if state.ledger.person_totals(day) != {k: v for k, v in person.items() if v}:
            raise self._fail("person-day ledger differs from the standing settlements")
        if state.ledger.institution_totals(month) != {k: v for k, v in institution.items() if v}:
            raise self._fail("institution-month ledger differs from the standing settlements")
        for psn_no, used in person.items():
            if used > largest[psn_no] + self.over_allowance[(psn_no, day)]:
                raise self._fail(f"{psn_no} used {used} fen of OTC allowance, over {largest[psn_no]}")
        for code, used in institution.items():
            if used > CAP_FEN[code] + self.over_cap[(code, month)]:
                raise self._fail(f"{code} used {used} fen of its monthly cap {CAP_FEN[code]}")
        if any(s.status != STATUS_SETTLED for s in state.settlements.standing()):
            raise self._fail("a settlement counted as standing is not settled")

    def check_replay(self) -> None:
        """Replaying every record into a fresh core, and restoring a snapshot, give the same state."""
        world = self.world
        expected = world.core.snapshot()
        replayed = world.make_core()
        for record in world.records:
            replayed.commit(from_wire(msgpack.unpackb(msgpack.packb(record.to_wire(), use_bin_type=True), raw=False)))
        if replayed.snapshot() != expected:
            raise self._fail("replaying the records gave another state")
        restored = world.make_core()
        restored.restore(msgpack.unpackb(msgpack.packb(expected, use_bin_type=True), raw=False))
        if restored.snapshot() != expected:
            raise self._fail("restoring the snapshot gave another state")


def _random_value(rng: random.Random, depth: int) -> Any:
    roll = rng.random()
    if depth >= 3 or roll < 0.6:
        return rng.choice(LEAVES) if rng.random() < 0.7 else rng.randbytes(rng.randrange(20)).hex()
    if roll < 0.8:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(["a", "items", "cnt", "psn_no"]): _random_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def _replace_some(rng: random.Random, input_: dict[str, Any]) -> dict[str, Any]:
    """A copy of `input_` with one to three fields (of it or of a bill line) replaced, dropped or added."""
    result = {k: (list(map(dict, v)) if k == "items" and isinstance(v, list) else v) for k, v in input_.items()}
    for _ in range(rng.randint(1, 3)):
        items = result.get("items")
        target = rng.choice(items) if isinstance(items, list) and items and rng.random() < 0.5 else result
        if not isinstance(target, dict) or not target:
            continue
        field = rng.choice(sorted(target))
        roll = rng.random()
        if roll < 0.6:
            target[field] = _random_value(rng, 1)
        elif roll < 0.8:
            del target[field]
        else:
            target[rng.choice(["extra", "rxno", "trace_codes"])] = _random_value(rng, 1)
    return result


def run_cases(tmp_path: Any, seed: int, cases: int, chunk: int = 20_000,
              deadline_s: float | None = None) -> FuzzStats:
    """`cases` cases in chunks of `chunk`, each on a fresh core (bounded memory), seeds from `seed`."""
    stats = FuzzStats()
    started = time.monotonic()
    for index in range(0, cases, chunk):
        directory = tmp_path / f"chunk-{seed}-{index}"
        directory.mkdir()
        fuzzer = CoreFuzzer(directory, seed * 1_000_003 + index)
        stats.merge(fuzzer.run(min(chunk, cases - index), deadline_s))
        if deadline_s is not None and time.monotonic() > deadline_s:
            break
    stats.seconds = time.monotonic() - started
    return stats
