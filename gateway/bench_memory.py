"""`python -m gateway.bench_memory` (make bench-memory): memory retained per settlement.

Settles `--count` (default 1,000,000) 3-line card 2102s in-process, core and sealer (decide,
seal, commit; no HTTP, no journal), from `--institutions` pharmacies (one terminal each) for
`--persons` insured persons, all in one business day, as a region's peak day does: everything
a settlement leaves behind is still held (idempotency records are kept >= 25 h, settlements for
reconciliation for 62 days). Then it reports, per settlement:

- the process's resident memory (RSS) grown over the run, after a full garbage collection;
- the bytes reachable from each structure of the core's state (a walk that counts each object
  once, in the order listed, so an object shared by two structures counts in the first): the
  idempotency store, the settlement store (settlements and their id index), the reconciliation
  index (per institution and day), used e-vouchers, traceability codes, the ledgers, the
  supervision figures (per institution-month and day: persons counted once);
- the objects the garbage collector tracks per settlement, and how long a full collection takes
  with all of them held (the event loop stops for it);
- tracemalloc's count of the bytes allocated and still held over the first `--traced` settlements
  (a separate run: tracing slows allocation and costs memory of its own).

The request frames are built as they are sent and dropped, so they are not in the figures.
"""

from __future__ import annotations

import argparse
import base64
import gc
import os
import random
import sys
import time
import tracemalloc
import types
from collections.abc import Iterator
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from gateway.core import Core, CoreConfig, parse_registry, parse_secrets
from gateway.sealer import KeyRing, Sealer
from protocol import TerminalSession, card_key, msgid, public_raw

ADMDVS = "510182"
T0_MS = 1_710_468_000_000    # 2024-03-15 10:00 Asia/Shanghai: the whole run is one business day
MASTER_KEY = bytes(32)
KIB = 1024
# National peak (SPEC section 1): settlements a day, and the retention of idempotency records.
NATIONAL_SETTLEMENTS_PER_DAY = 18_000_000
RETENTION_H = 25


def _institution(n: int) -> str:
    return f"P{ADMDVS}{n:05d}"


def _terminal_key(n: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(n.to_bytes(32, "big"))


class Region:
    """A core of `institutions` pharmacies with a signed-in terminal each, and its sealer."""

    def __init__(self, institutions: int) -> None:
        registry = {
            "policy": {"otc_allowance_fen": {g: 10**9 for g in "ABCDE"}, "coverage_permille": {"310": 700, "390": 500},
                       "selfpay_prop_permille": 100, "warn_person_day_permille": 800,
                       "warn_institution_month_permille": 900},
            "institutions": [{"code": _institution(n), "name": f"bench {n}", "kind": "pharmacy", "admdvs": ADMDVS,
                              "grade": "A", "monthly_cap_fen": 10**13, "status": "active"}
                             for n in range(1, institutions + 1)],
            "terminals": [{"dev_no": f"T{n}", "institution": _institution(n), "status": "active",
                           "public_key": base64.b64encode(public_raw(_terminal_key(n).public_key())).decode()}
                          for n in range(1, institutions + 1)],
        }
        secrets = {"card_master_keys": {"51": base64.b64encode(MASTER_KEY).decode()}}
        keyring = KeyRing(Ed25519PrivateKey.from_private_bytes(b"\x02" * 32))
        self.config = CoreConfig(admdvs=ADMDVS, idempotency_records_max=10**8, settlements_max=10**8)
        self.core = Core(self.config, parse_registry(registry, "bench"), parse_secrets(secrets, "bench"),
                         keyring.active_public_raw, random.Random(1).randbytes)
        self.sealer = Sealer(ADMDVS, keyring, self.config.refid_block)
        self.terminals = [self._sign_in(n) for n in range(1, institutions + 1)]

    def _sign_in(self, n: int) -> TerminalSession:
        term = TerminalSession(f"T{n}", _institution(n), ADMDVS, "OP1", "1", _terminal_key(n))
        frame = term.signin_frame(msgid(term.fixmedins_code, T0_MS, 0), T0_MS,
                                  X25519PrivateKey.from_private_bytes(b"\x03" * 32))
        term.on_signin_answer(self.sealer.answer(self.core, frame, T0_MS).response)
        return term

    def settle(self, n: int, persons: int, rng: random.Random) -> None:
        """Settle the n-th 2102: terminal n % institutions, a random person, a 3-line bill."""
        term = self.terminals[n % len(self.terminals)]
        at_ms = T0_MS + n // 50          # ~50 settlements a millisecond: one day holds them all
        serial = n // len(self.terminals)
        mid = msgid(term.fixmedins_code, at_ms - (serial // 10_000) * 1000, serial)
        person = rng.randrange(persons)
        who = {"card_no": f"C{person:017d}", "card_sn": f"{person:016X}", "psn_no": f"{ADMDVS}{person:010d}",
               "insutype": "310" if person % 3 else "390", "insuplc_admdvs": ADMDVS}
        items = [{"feedetl_sn": str(k), "med_list_codg": f"XA{k:02d}BAA0{rng.randrange(1000):03d}",
                  "chrgitm_lv": lv, "otc": otc, "cnt": rng.randint(1, 3), "pric": rng.randint(300, 3000),
                  "bilg_dr_codg": "D1", **({} if otc else {"rxno": f"RX{rng.randrange(10**8):08d}"})}
                 for k, (lv, otc) in enumerate((("01", True), ("02", True), ("03", False)), start=1)]
        for item in items:
            item["det_item_fee_sumamt"] = item["cnt"] * item["pric"]
        medfee = sum(item["det_item_fee_sumamt"] for item in items)
        fields = term.card_input(card_key(MASTER_KEY, who["card_no"], who["card_sn"]), mid, "2102", medfee, who)
        frame = term.request_frame("2102", mid, {**fields, "medfee_sumamt": medfee, "items": items}, at_ms)
        result = self.sealer.answer(self.core, frame, at_ms)
        assert result.record is not None, "the benchmark request was rejected"


def rss_bytes() -> int:
    """The process's resident set size now."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# Code, classes and modules are not data a settlement leaves behind (and lead everywhere).
_NOT_DATA = (type, types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.ModuleType)


def deep_size(root: Any, seen: set[int]) -> int:
    """Bytes of every object reachable from `root` not yet in `seen` (which it fills)."""
    total = 0
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, _NOT_DATA):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(_referents(obj))
    return total


def _referents(obj: Any) -> Iterator[Any]:
    if isinstance(obj, dict):
        yield from obj.keys()
        yield from obj.values()
    elif isinstance(obj, (list, tuple, set, frozenset)):
        yield from obj
    elif hasattr(obj, "__slots__") or hasattr(obj, "__dict__"):
        yield from gc.get_referents(obj)


def structures(core: Core) -> dict[str, Any]:
    """The parts of the state a settlement grows, by name, in the order they are counted."""
    state = core.state
    return {
        "idempotency records": state.idempotency,
        "settlements": state.settlements._kept,
        "reconciliation index": state.settlements._by_day,
        "used e-vouchers": state.vouchers,
        "traceability codes": state.trace,
        "ledgers": state.ledger,
        "reversal tombstones": state.tombstones,
        "supervision figures": state.supervision,
    }


def run(count: int, institutions: int, persons: int, log: Any = print) -> dict[str, float]:
    """Settle `count` 2102s; return bytes per settlement: RSS and by structure."""
    region = Region(institutions)
    baseline = {name: deep_size(part, set()) for name, part in structures(region.core).items()}
    rng = random.Random(7)
    gc.collect()
    rss_before, tracked_before = rss_bytes(), len(gc.get_objects())
    started = time.monotonic()
    for n in range(count):
        region.settle(n, persons, rng)
        if n and n % 100_000 == 0:
            log(f"  {n} settled, {time.monotonic() - started:.0f} s, RSS +{(rss_bytes() - rss_before) / n:.0f} B each")
    settled_s = time.monotonic() - started
    gc.collect()
    figures = {"RSS": (rss_bytes() - rss_before) / count, "seconds": settled_s,
               "tracked": (len(gc.get_objects()) - tracked_before) / count}
    collect_started = time.perf_counter()
    gc.collect()   # the pause a full collection costs the event loop with all of it held
    figures["full collection ms"] = (time.perf_counter() - collect_started) * 1000
    seen: set[int] = set()
    for name, part in structures(region.core).items():
        figures[name] = (deep_size(part, seen) - baseline[name]) / count
    return figures


def traced(count: int, institutions: int, persons: int) -> float:
    """Bytes tracemalloc counts as allocated and still held per settlement, over `count` settlements."""
    region = Region(institutions)
    rng = random.Random(7)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for n in range(count):
        region.settle(n, persons, rng)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return held / count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway.bench_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--institutions", type=int, default=400)
    parser.add_argument("--persons", type=int, default=500_000)
    parser.add_argument("--traced", type=int, default=20_000)
    args = parser.parse_args(argv)
    print(f"{args.count} card 2102s (3 lines) from {args.institutions} pharmacies for {args.persons} persons, "
          "one business day; bytes retained per settlement:")
    figures = run(args.count, args.institutions, args.persons)
    print(f"  RSS grown                         {figures['RSS']:8.0f} B   ({figures['seconds']:.0f} s)")
    for name in structures(Region(1).core):
        print(f"  {name:<33} {figures[name]:8.0f} B")
    parts = sum(figures[name] for name in structures(Region(1).core))
    print(f"  all structures                    {parts:8.0f} B")
    print(f"  tracemalloc, first {args.traced} settlements {traced(args.traced, args.institutions, args.persons):8.0f} B")
    print(f"objects the garbage collector tracks: {figures['tracked']:.2f} a settlement; a full collection "
          f"with all {args.count} held: {figures['full collection ms']:.0f} ms")
    retained = NATIONAL_SETTLEMENTS_PER_DAY * RETENTION_H / 24
    print(f"national peak: {NATIONAL_SETTLEMENTS_PER_DAY:,} settlements a day kept {RETENTION_H} h = "
          f"{retained / 1e6:.1f} M settlements held: {retained * figures['RSS'] / 2**30:.1f} GiB at the RSS figure")


if __name__ == "__main__":
    main()
