"""`python -m gateway.core.bench` (make bench-core): cost of the core per settlement and per record.

Prints the median cost of `Core.handle_tx` for a 3-line card 2102 (full pipeline: frame and envelope
decode, session MAC, card cryptogram, arithmetic, commit, response signing; fresh msgids), the
median cost of the same request's business part alone (parse, credential, rules, commit: what is
left without frame crypto and response signing), and the bytes retained per idempotency record.
"""

from __future__ import annotations

import random
import statistics
import time
import tracemalloc
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from gateway.core import Core, CoreConfig, KeyRing, parse_registry, parse_secrets
from gateway.core.handlers import HANDLERS, Request
from protocol import (
    TerminalSession, card_key, decode_frame, decode_request_envelope, fingerprint, msgid, parse_input, public_raw,
)

INSTITUTION = "P51018200001"
ADMDVS = "510182"
T0_MS = 1_710_468_000_000
MASTER_KEY = bytes(32)


def _region(terminal_key: Ed25519PrivateKey) -> tuple[dict, dict]:
    import base64
    registry = {
        "policy": {"otc_allowance_fen": {g: 10**9 for g in "ABCDE"}, "coverage_permille": {"310": 700},
                   "selfpay_prop_permille": 100, "warn_person_day_permille": 800,
                   "warn_institution_month_permille": 900},
        "institutions": [{"code": INSTITUTION, "name": "bench", "kind": "pharmacy", "admdvs": ADMDVS,
                          "grade": "A", "monthly_cap_fen": 10**13, "status": "active"}],
        "terminals": [{"dev_no": "T1", "institution": INSTITUTION, "status": "active",
                       "public_key": base64.b64encode(public_raw(terminal_key.public_key())).decode()}],
    }
    return registry, {"card_master_keys": {"51": base64.b64encode(MASTER_KEY).decode()}}


def build(count: int) -> tuple[Core, list[bytes], int]:
    """A core with a signed-in terminal and `count` distinct 3-line 2102 frames."""
    terminal_key = Ed25519PrivateKey.from_private_bytes(b"\x01" * 32)
    registry, secrets = _region(terminal_key)
    rng = random.Random(1)
    core = Core(CoreConfig(admdvs=ADMDVS, idempotency_records_max=10**7), parse_registry(registry, "bench"),
                parse_secrets(secrets, "bench"), KeyRing(Ed25519PrivateKey.from_private_bytes(b"\x02" * 32)),
                rng.randbytes)
    term = TerminalSession("T1", INSTITUTION, ADMDVS, "OP1", "1", terminal_key)
    now_ms = T0_MS
    term.on_signin_answer(core.handle_tx(term.signin_frame(msgid(INSTITUTION, now_ms, 0), now_ms,
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
        frames.append(term.request_frame("2102", mid, {**fields, "medfee_sumamt": 9000, "items": items}, now_ms))
    return core, frames, now_ms


def _median_us(run: Callable[[int], None], count: int) -> float:
    samples = []
    for n in range(count):
        start = time.perf_counter_ns()
        run(n)
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1000


def bench_full(count: int) -> float:
    """Median µs of handle_tx for fresh 3-line card 2102 frames."""
    core, frames, now_ms = build(count)
    return _median_us(lambda n: _assert_ok(core.handle_tx(frames[n], now_ms).record), count)


def _assert_ok(record: object) -> None:
    assert record is not None, "the benchmark request was rejected"


def bench_apply(count: int) -> float:
    """Median µs of the business part (parse, card check, rules, commit) without frame crypto and signing."""
    core, frames, now_ms = build(count)
    session = next(iter(core.sessions._by_sign_no.values()))
    institution = core.state.overlay.institutions[INSTITUTION]
    envs = [decode_request_envelope(decode_frame(frame).body) for frame in frames]

    def run(n: int) -> None:
        env = envs[n]
        req = Request(env, institution, session, parse_input(env.infno, env.input),
                      fingerprint(env.infno, env.input), now_ms)
        answer = HANDLERS["2102"](core, req)
        record = {"op": core.state.last_op + 1, **answer.record, "response": b"\x00" * 900}
        core.state.commit(record)
    return _median_us(run, count)


def bytes_per_record(count: int) -> float:
    """Bytes retained per idempotency record (tracemalloc over `count` settlements)."""
    core, frames, now_ms = build(count)
    store = core.state.idempotency
    # The settlement store also grows with each 2102; measure the idempotency store's share by
    # filling a second store with the same entries.
    results = [core.handle_tx(frame, now_ms) for frame in frames]
    from gateway.core.idempotency import IdemEntry, IdempotencyStore
    copies = [(r.record["idem"], bytes(r.response)) for r in results]
    del results
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    fresh = IdempotencyStore(10**7)
    for (mid, print_, infno, subject), response in copies:
        # Real copies, so the measured memory is the store's own (bytes(b) would alias b).
        fresh.put(mid[:-1] + mid[-1], IdemEntry(bytes(bytearray(print_)), bytes(bytearray(response)), 1, infno,
                                                     now_ms, subject[:-1] + subject[-1]))
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(fresh) == len(store) == count
    return (after - before) / count


def main() -> None:
    """Run the three measurements and print them."""
    count = 5000
    print(f"handle_tx 2102 (3 lines, card, MAC + Ed25519 signing): median {bench_full(count):.1f} µs")
    print(f"core apply without frame crypto / signing:            median {bench_apply(count):.1f} µs")
    print(f"idempotency record retained size:                      {bytes_per_record(count):.0f} bytes")
    print(f"({count} requests per measurement)")


if __name__ == "__main__":
    main()
