"""`python -m gateway.bench_core` (make bench-core): cost of the core per settlement and per record.

For a 3-line card 2102 with fresh msgids, prints medians of:
  (a) the business apply: the 2102 handler (card cryptogram, person checks, split, limits, record
      building) and the commit of its record (ledgers, settlement store, idempotency record with
      its packed answer), from an already decoded and parsed request;
  (a') `Core.decide` alone: frame/envelope decode, session MAC, input parsing, fingerprint and
      the handler (no seal, no commit);
  (b) the whole synchronous step `Sealer.answer`: decide, answer encoding, Ed25519 signing and
      the commit;
  (c) the Ed25519 signature of one answer alone, for reference;
  (d) the bytes retained per idempotency record (tracemalloc);
  (e) what supervision (SPEC 14) adds to a settlement: the per-doctor sums the handler builds and
      the aggregates the commit updates (month rows by institution, operator and doctor, the day's
      alert state), and what a cancellation costs to take them back;
  (f) the bytes one institution-month of figures keeps once the month is closed, and per distinct
      (row, person) while it is open (tracemalloc);
and, to account for (b), the request decode without MAC (frame, envelope, input, fingerprint)
and the answer encoding without signature.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from gateway.core import Core, CoreConfig, parse_registry, parse_secrets
from gateway.core.accounts import OpeningBalances
from gateway.core.handlers import HANDLERS, Request
from gateway.core.idempotency import IdemEntry, IdempotencyStore, pack_response
from gateway.sealer import KeyRing, Sealer
from protocol import (
    RESP_DOMAIN, ResponseEnvelope, TerminalSession, card_key, decode_frame, decode_request_envelope,
    encode_response_envelope, fingerprint, msgid, parse_request_input, public_raw, sign,
)

INSTITUTION = "P51018200001"
ADMDVS = "510182"
T0_MS = 1_710_468_000_000
MASTER_KEY = bytes(32)


def _region(terminal_key: Ed25519PrivateKey, who_pays: bool = False) -> tuple[dict, dict]:
    import base64
    registry: dict[str, Any] = {
        "policy": {"otc_allowance_fen": {g: 10**9 for g in "ABCDE"}, "coverage_permille": {"310": 700},
                   "selfpay_prop_permille": 100, "warn_person_day_permille": 800,
                   "warn_institution_month_permille": 900},
        "institutions": [{"code": INSTITUTION, "name": "bench", "kind": "pharmacy", "admdvs": ADMDVS,
                          "grade": "A", "monthly_cap_fen": 10**13, "status": "active"}],
        "terminals": [{"dev_no": "T1", "institution": INSTITUTION, "status": "active",
                       "public_key": base64.b64encode(public_raw(terminal_key.public_key())).decode()}],
    }
    if who_pays:
        # SPEC 13: outpatient pooling with a deductible and a cap no bill of the run reaches.
        registry["policy"]["pooling"] = {"310": {"deductible_fen": 2000, "annual_cap_fen": 10**12}}
    return registry, {"card_master_keys": {"51": base64.b64encode(MASTER_KEY).decode()}}


def build(count: int, accounts: OpeningBalances | None = None) -> tuple[Core, list[bytes], int]:
    """A core with a signed-in terminal and `count` distinct 3-line 2102 frames (sealer: `_SEALERS`).

    With `accounts` (opening balances of persons P0..P4999), the region has a pooling policy and
    every bill pays from the patient's account (SPEC 13 "Who pays v2"); without, it is v1's.
    """
    terminal_key = Ed25519PrivateKey.from_private_bytes(b"\x01" * 32)
    registry, secrets = _region(terminal_key, who_pays=accounts is not None)
    rng = random.Random(1)
    keyring = KeyRing(Ed25519PrivateKey.from_private_bytes(b"\x02" * 32))
    config = CoreConfig(admdvs=ADMDVS, idempotency_records_max=10**7)
    core = Core(config, parse_registry(registry, "bench"), parse_secrets(secrets, "bench"), keyring.active_public_raw,
                rng.randbytes, accounts=accounts)
    extra = {} if accounts is None else {"acct_used_flag": "1"}
    _SEALERS[id(core)] = Sealer(ADMDVS, keyring, config.refid_block)
    term = TerminalSession("T1", INSTITUTION, ADMDVS, "OP1", "1", terminal_key)
    now_ms = T0_MS
    term.on_signin_answer(_answer(core, term.signin_frame(msgid(INSTITUTION, now_ms, 0), now_ms,
                                                          X25519PrivateKey.from_private_bytes(b"\x03" * 32)),
                                  now_ms).response)
    items = [{"feedetl_sn": str(n), "med_list_codg": "M", "chrgitm_lv": lv, "otc": otc, "rxno": "RX", "cnt": 2,
              "pric": 1500, "det_item_fee_sumamt": 3000, "bilg_dr_codg": "D1"}
             for n, (lv, otc) in enumerate((("01", True), ("02", False), ("03", True)))]
    key = card_key(MASTER_KEY, "CARD", "SN")
    frames = []
    for n in range(count):
        # Distinct msgids: one second apart keeps the 4-digit serial unique.
        mid = msgid(INSTITUTION, now_ms - n * 1000, n)
        who = {"card_no": "CARD", "card_sn": "SN", "psn_no": f"P{n % 5000}", "insutype": "310",
               "insuplc_admdvs": ADMDVS}
        fields = term.card_input(key, mid, "2102", 9000, who)
        frames.append(term.request_frame("2102", mid, {**fields, "medfee_sumamt": 9000, "items": items, **extra},
                                         now_ms))
    return core, frames, now_ms


_SEALERS: dict[int, Sealer] = {}


def _answer(core: Core, frame: bytes, now_ms: int) -> Any:
    return _SEALERS[id(core)].answer(core, frame, now_ms)


def _median_us(run: Callable[[int], None], count: int) -> float:
    samples = []
    for n in range(count):
        start = time.perf_counter_ns()
        run(n)
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1000


def _assert_ok(record: object) -> None:
    assert record is not None, "the benchmark request was rejected"


def bench_full(count: int, accounts: OpeningBalances | None = None) -> float:
    """(b) Median µs of decide + seal + commit for fresh 3-line card 2102 frames (`accounts`: see build)."""
    core, frames, now_ms = build(count, accounts)
    return _median_us(lambda n: _assert_ok(_answer(core, frames[n], now_ms).record), count)


def bench_decide(count: int) -> float:
    """(a') Median µs of `Core.decide` alone (each frame decided once; nothing committed)."""
    core, frames, now_ms = build(count)
    return _median_us(lambda n: _assert_ok(core.decide(frames[n], now_ms).record), count)


def _requests(core: Core, frames: list[bytes], now_ms: int) -> list[Request]:
    session = next(iter(core.sessions._by_sign_no.values()))
    institution = core.state.overlay.institutions[INSTITUTION]
    decoded = [decode_request_envelope(decode_frame(frame).body) for frame in frames]
    return [Request(env, institution, session, parse_request_input(env), fingerprint(env.infno, env.input), now_ms)
            for env in decoded]


def bench_apply(count: int, accounts: OpeningBalances | None = None) -> float:
    """(a) Median µs of the business apply: the 2102 handler and the commit of its record.

    The record carries a real signed answer of the same shape (signed once, before timing), so the
    idempotency record stored by the commit is what the live path stores. `accounts`: see build.
    """
    core, frames, now_ms = build(count + 1, accounts)
    response = _answer(core, frames[count], now_ms).response
    requests = _requests(core, frames[:count], now_ms)

    def run(n: int) -> None:
        answer = HANDLERS["2102"](core.view, requests[n])
        assert answer.record is not None
        core.commit(answer.record.sealed(core.last_op + 1, 0, response))
    return _median_us(run, count)


def bench_decode(count: int) -> float:
    """Median µs of the request decode without MAC: frame, envelope, input parsing, fingerprint."""
    _, frames, _ = build(count)

    def run(n: int) -> None:
        env = decode_request_envelope(decode_frame(frames[n]).body)
        parse_request_input(env)
        fingerprint(env.infno, env.input)
    return _median_us(run, count)


def bench_encode(count: int) -> float:
    """Median µs of encoding a 2102 answer envelope (canonical msgpack), without the signature."""
    core, frames, now_ms = build(count)
    requests = _requests(core, frames, now_ms)
    envelopes = []
    for n, req in enumerate(requests):
        answer = HANDLERS["2102"](core.view, req)
        envelopes.append(ResponseEnvelope(0, "", "", req.env.msgid, f"{ADMDVS}{n:024d}", now_ms, answer.output,
                                          answer.warnings))
    return _median_us(lambda n: encode_response_envelope(envelopes[n]), count)


def bench_pack(count: int) -> float:
    """Median µs of packing one 2102 answer for the idempotency store (part of (a)'s commit)."""
    core, frames, now_ms = build(count)
    responses = [_answer(core, frame, now_ms).response for frame in frames]
    return _median_us(lambda n: pack_response(responses[n]), count)


def bench_sign(count: int) -> float:
    """(c) Median µs of one Ed25519 signature over a 2102 answer body (the reference floor)."""
    core, frames, now_ms = build(1)
    body = decode_frame(_answer(core, frames[0], now_ms).response).body
    key = Ed25519PrivateKey.from_private_bytes(b"\x02" * 32)
    return _median_us(lambda n: sign(key, RESP_DOMAIN, body), count)


def bytes_per_record(count: int) -> tuple[float, float]:
    """(d) Bytes retained per idempotency record (tracemalloc over `count` settlements), and the
    mean size of the answer it remembers, as sent."""
    core, frames, now_ms = build(count)
    results = [_answer(core, frame, now_ms) for frame in frames]
    # The settlement store also grows with each 2102; measure the idempotency store's share by
    # filling a second store with the same entries, built from private copies (bytes(b) would alias
    # b, and a replayed journal holds its own copies too), as the replay of a journal fills it.
    copies = [(r.record.idem, bytes(bytearray(r.response))) for r in results]
    answer_bytes = statistics.mean(len(response) for _, response in copies)
    del results
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    fresh = IdempotencyStore(10**7)
    for (mid, print_, infno, subject), response in copies:
        fresh.put(mid[:-1] + mid[-1], IdemEntry(bytes(bytearray(print_)), response, 1, infno, now_ms,
                                                subject[:-1] + subject[-1]))
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(fresh) == len(core.state.idempotency) == count
    # Memory measured, now prove the entries still answer with the exact bytes.
    assert all(fresh.get(mid).response == response for (mid, *_), response in copies)
    del copies  # the copies were allocated before tracing started, so they are not in the figure
    return (after - before) / count, answer_bytes


def bench_v2_cut(count: int) -> float:
    """Median µs of the v2 line cut of a 3-line bill: catalogue look-ups and `compute_bill`."""
    from gateway.core.catalogue import parse_catalogue
    from gateway.core.settlement import LineRules, Usage, compute_bill
    core, frames, now_ms = build(1)
    catalogue = parse_catalogue(_BENCH_CATALOGUE, "bench")
    lines = _requests(core, frames, now_ms)[0].typed.items
    policy = core.state.overlay.policy
    rules = LineRules(pharmacy=True, catalogue_on=True, trace_required=False, selfpay_prop_permille=100,
                      doctor_suspended=lambda code: False)
    usage = Usage(10**9, 0, 10**13, 0)
    day = 19797

    def run(n: int) -> None:
        rows = [catalogue.lookup(line.med_list_codg, day) for line in lines]
        compute_bill(lines, rows, 9000, "310", policy, rules, usage)
    return _median_us(run, count)


# The bench bill's code "M" as a capped 乙类 row, plus filler rows so the index is not trivial.
_BENCH_CATALOGUE = ("med_list_codg,name,chrgitm_lv,otc,selfpay_prop_permille,pric_uplmt_fen,lmt_used,valid_from,"
                    "valid_to\nM,bench,02,1,150,1400,0,,\n"
                    + "".join(f"F{n:06d},filler,01,1,,,0,,\n" for n in range(20_000)))


def bytes_per_trace_code(settlements: int = 20_000, codes_per_settlement: int = 5) -> float:
    """Bytes retained per held traceability code (20-digit codes, as sold by 2102s of one day)."""
    from gateway.core.trace import TraceCodes
    batches = [([f"{n * codes_per_settlement + k:020d}" for k in range(codes_per_settlement)],
                f"{ADMDVS}1{n:013d}", T0_MS + n) for n in range(settlements)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    trace = TraceCodes()
    for codes, setl_id, setl_time_ms in batches:
        trace.hold(codes, setl_id, setl_time_ms)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(trace) == settlements * codes_per_settlement
    # The code strings themselves arrive with the request (and are kept by the settlement too);
    # they are counted here, as a held code keeps its string alive for the whole retention.
    strings = sum(sys.getsizeof(code) for codes, _, _ in batches for code in codes)
    return (after - before + strings) / len(trace)


def bench_supervision(count: int) -> tuple[float, float, float]:
    """(g) Median µs of the business apply (a) with supervision and without it (the handler's doctor
    sums and the commit's aggregate updates switched off), on two cores fed the same requests
    alternately, so that both see the same machine load; and of taking one settlement back out.
    """
    from gateway.core import handlers
    from gateway.core.supervision import Supervision

    class _Off:
        def settled(self, settlement: Any, large_bill_fen: int) -> None: ...
        def expire(self, now_ms: int) -> None: ...

    def off_sums(items: Any, cuts: Any) -> list[list[Any]]:
        return []

    on_sums = handlers.doctor_sums
    sides = []
    for enabled in (True, False):
        core, frames, now_ms = build(count + 1)
        response = _answer(core, frames[count], now_ms).response
        if not enabled:
            core.state.supervision = _Off()  # type: ignore[assignment]
        sides.append((core, _requests(core, frames[:count], now_ms), response, on_sums if enabled else off_sums))
    samples: tuple[list[int], list[int]] = ([], [])
    try:
        for n in range(count):
            for side, (core, requests, response, sums) in enumerate(sides):
                handlers.doctor_sums = sums  # type: ignore[assignment]
                start = time.perf_counter_ns()
                record = HANDLERS["2102"](core.view, requests[n]).record
                assert record is not None
                core.commit(record.sealed(core.last_op + 1, 0, response))
                samples[side].append(time.perf_counter_ns() - start)
    finally:
        handlers.doctor_sums = on_sums
    settlements = sides[0][0].state.settlements.standing()
    supervision = Supervision.rebuilt(settlements, 100_000)
    unsettled_us = _median_us(lambda n: supervision.unsettled(settlements[n]), len(settlements))
    return statistics.median(samples[0]) / 1000, statistics.median(samples[1]) / 1000, unsettled_us


def bytes_per_institution_month(institutions: int = 2000, persons_per_row: int = 50) -> tuple[float, float]:
    """(h) Bytes per institution row of a closed month, and per (row, person) of an open month."""
    from gateway.core.settlements import Settlement
    from gateway.core.supervision import Supervision

    def settlement(n: int, institution: str, psn_no: str) -> Settlement:
        return Settlement(setl_id=f"S{n}", msgid=f"M{n}", infno="2102", institution=institution, psn_no=psn_no,
                          insutype="310", insuplc_admdvs=ADMDVS, setl_time=T0_MS, day=19797, month=202403,
                          medfee_sumamt=123_456, fund_pay_sumamt=65_432, psn_cash_pay=58_024, otc_pay=0, rx_pay=1,
                          status="settled", cancel_msgid=None, cert_type="03", bound_by=["person_day"],
                          fulamt_ownpay_amt=12_345, preselfpay_amt=678)
    codes = [f"P{n:011d}" for n in range(institutions)]
    persons = [f"PSN{n:08d}" for n in range(persons_per_row)]
    made = [settlement(i * persons_per_row + k, code, psn) for i, code in enumerate(codes)
            for k, psn in enumerate(persons)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    supervision = Supervision()
    for one in made:
        supervision.settled(one, 10**12)
    open_bytes = tracemalloc.get_traced_memory()[0] - before
    supervision.days.clear()
    month = supervision.months[202403]
    for rows in month.rows:
        for row in rows.values():
            row.psn_closed, row.persons = len(row.persons or ()), None
    closed_bytes = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    per_row = closed_bytes / institutions
    per_person = (open_bytes - closed_bytes) / len(made)
    return per_row, per_person


def main() -> None:
    """Run the measurements and print them."""
    count = 5000
    print(f"3-line card 2102, fresh msgids, {count} requests per measurement; medians")
    print(f"(a) business apply (handler + commit):            {bench_apply(count):8.1f} µs")
    print(f"    of which packing the remembered answer:      {bench_pack(count):8.1f} µs")
    print(f"(a') decide (decode, MAC, checks, handler):       {bench_decide(count):8.1f} µs")
    print(f"(b) decide + seal + commit, whole step:           {bench_full(count):8.1f} µs")
    print(f"    of which request decode, no MAC:              {bench_decode(count):8.1f} µs")
    print(f"    of which answer encoding, no signature:       {bench_encode(count):8.1f} µs")
    print(f"(c) Ed25519 sign of one answer (reference):       {bench_sign(count):8.1f} µs")
    print(f"(e) v2 line cut of the 3-line bill (catalogue):   {bench_v2_cut(count):8.1f} µs")
    retained, answer_bytes = bytes_per_record(count)
    print(f"(d) idempotency record retained:                  {retained:8.0f} bytes"
          f"  (answer as sent: {answer_bytes:.0f} bytes)")
    print(f"(f) held traceability code retained:              {bytes_per_trace_code():8.0f} bytes")
    with_us, without_us, unsettled_us = bench_supervision(count)
    print(f"(g) business apply with supervision:              {with_us:8.1f} µs"
          f"  (without: {without_us:.1f} µs; added: {with_us - without_us:.1f} µs)")
    print(f"    taking a settlement back out (cancellation):  {unsettled_us:8.1f} µs")
    per_row, per_person = bytes_per_institution_month()
    print(f"(h) one institution-month, closed:                {per_row:8.0f} bytes"
          f"  (open: + {per_person:.0f} bytes per distinct person, day maps included)")


if __name__ == "__main__":
    main()
