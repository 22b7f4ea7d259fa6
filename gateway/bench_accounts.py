"""`python -m gateway.bench_accounts` (make bench-accounts): what SPEC 13's who-pays ledgers cost.

Prints:
  (a) the load of a BENCH_ROWS-row accounts file (the shell's read + `parse_accounts`), in a fresh
      process each time: seconds (median of LOAD_REPEATS) and the process's peak RSS, against the
      targets LOAD_S_TARGET and RSS_MB_TARGET;
  (b) a look-up of an opening balance (median);
  (c) the bytes retained per person-year record and per changed balance (tracemalloc);
  (d) a 3-line card 2102 with pooling and account payment against v1's (no pooling, no account):
      the business apply (handler + commit) and the whole decide + seal + commit step, medians.
"""

from __future__ import annotations

import pathlib
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable

from gateway.accounts_file import load_accounts
from gateway.bench_core import bench_apply, bench_full
from gateway.core.accounts import AccountLedger, parse_accounts
from gateway.core.pooling import PersonYearLedger

BENCH_ROWS = 1_000_000
LOAD_REPEATS = 3
LOAD_S_TARGET = 3.0
RSS_MB_TARGET = 150.0
LOOKUPS = 100_000
RECORDS = 200_000
SETTLEMENTS = 3000
COMPARE_ROUNDS = 3
PSN_PREFIX = "510182"
_KB_PER_MB = 1024


def accounts_file_bytes(rows: int, seed: int = 1) -> bytes:
    """An accounts file of `rows` local persons with init's spread of balances, in psn_no order."""
    from gateway.region import account_balance_fen   # the same spread as `init` writes
    rng = random.Random(seed)
    body = "".join(f"{PSN_PREFIX}{serial:010d},{account_balance_fen(rng)}\n" for serial in range(1, rows + 1))
    return ("psn_no,balance_fen\n" + body).encode()


def _peak_rss_mb() -> float:
    """This process's peak RSS. Linux's VmHWM starts afresh at exec; ru_maxrss (the fallback)
    may carry the parent's peak from before the fork."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / _KB_PER_MB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / _KB_PER_MB


def _load_child(path: str, rows: int) -> None:
    """In a fresh process: load the file, print seconds and peak RSS (MB) before and after."""
    before_mb = _peak_rss_mb()
    started = time.perf_counter()
    opening = load_accounts(path)
    seconds = time.perf_counter() - started
    after_mb = _peak_rss_mb()
    assert len(opening) == rows
    print(f"{seconds} {before_mb} {after_mb}")


def bench_load(path: pathlib.Path) -> tuple[float, float, float]:
    """(a) Median seconds, median peak RSS after the load (MB) and before it (the interpreter's)."""
    runs = []
    for _ in range(LOAD_REPEATS):
        out = subprocess.run([sys.executable, "-m", "gateway.bench_accounts", "--load-child", str(path),
                              str(BENCH_ROWS)],
                             check=True, capture_output=True, text=True).stdout.split()
        runs.append(tuple(float(x) for x in out))
    return (statistics.median(r[0] for r in runs), statistics.median(r[2] for r in runs),
            statistics.median(r[1] for r in runs))


def bench_lookup(data: bytes) -> float:
    """(b) Median µs of OpeningBalances.get over found and missing psn_nos."""
    opening = parse_accounts(data, "bench.csv")
    rng = random.Random(2)
    keys = [f"{PSN_PREFIX}{rng.randrange(1, 2 * BENCH_ROWS):010d}" for _ in range(LOOKUPS)]
    samples = []
    for key in keys:
        started = time.perf_counter_ns()
        opening.get(key)
        samples.append(time.perf_counter_ns() - started)
    return statistics.median(samples) / 1000


def bytes_per_year_record() -> float:
    """(c) Bytes retained per person-year record: RECORDS persons, each with a deductible and a
    pooled payment (the psn_no string included: after its settlements expire, the ledger holds it)."""
    psn_nos = [f"{PSN_PREFIX}{n:010d}" for n in range(RECORDS)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    ledger = PersonYearLedger()
    for psn_no in psn_nos:
        ledger.clamp_and_debit(psn_no[:-1] + psn_no[-1], "310", 2025, 20_000, None, 7000 + len(psn_no), None)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert ledger.records() == RECORDS
    return (after - before) / RECORDS


def bytes_per_changed_balance(data: bytes) -> float:
    """(c) Bytes retained per balance that differs from the file's (what a settlement adds)."""
    ledger = AccountLedger(parse_accounts(data, "bench.csv"))
    psn_nos = [f"{PSN_PREFIX}{n:010d}" for n in range(1, RECORDS + 1)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for psn_no in psn_nos:
        ledger.credit(psn_no[:-1] + psn_no[-1], 1234)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert ledger.changed() == RECORDS
    return (after - before) / RECORDS


def _settling_accounts() -> object:
    """Opening balances for the bench persons P0..P4999: enough for every bill of the run."""
    body = "".join(f"P{n},{10**9}\n" for n in range(5000))
    return parse_accounts(("psn_no,balance_fen\n" + body).encode(), "bench.csv")


def main() -> None:
    """Run the measurements and print them."""
    data = accounts_file_bytes(BENCH_ROWS)
    with tempfile.TemporaryDirectory() as directory:
        path = pathlib.Path(directory) / "accounts.csv"
        path.write_bytes(data)
        seconds, rss_mb, base_mb = bench_load(path)
    print(f"accounts: {BENCH_ROWS} rows, file {len(data) / 1e6:.1f} MB; fresh process per load, "
          f"median of {LOAD_REPEATS}")
    print(f"(a) load:                         {seconds:8.2f} s     (target <= {LOAD_S_TARGET} s)")
    print(f"    peak RSS after the load:      {rss_mb:8.1f} MB    (target <= {RSS_MB_TARGET} MB; "
          f"{base_mb:.1f} MB before it)")
    print(f"(b) opening-balance look-up:      {bench_lookup(data):8.2f} µs")
    print(f"(c) person-year record retained:  {bytes_per_year_record():8.0f} bytes")
    print(f"    changed balance retained:     {bytes_per_changed_balance(data):8.0f} bytes")
    print(f"(d) 3-line card 2102, {SETTLEMENTS} requests; v1 vs v2 with pooling and account payment, "
          f"median of {COMPARE_ROUNDS} alternating rounds of medians")
    for name, bench in (("business apply (handler + commit)", bench_apply), ("decide + seal + commit", bench_full)):
        v1_us, v2_us = _compare(bench)
        print(f"    {name + ':':35s} v1 {v1_us:7.1f} µs   v2 {v2_us:7.1f} µs   ({(v2_us / v1_us - 1) * 100:+.0f} %)")


def _compare(bench: Callable[..., float]) -> tuple[float, float]:
    """v1 and v2 medians of `bench`, alternated so that a busy moment of the machine hits both."""
    accounts = _settling_accounts()
    v1, v2 = [], []
    for _ in range(COMPARE_ROUNDS):
        v1.append(bench(SETTLEMENTS))
        v2.append(bench(SETTLEMENTS, accounts))
    return statistics.median(v1), statistics.median(v2)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--load-child"]:
        _load_child(sys.argv[2], int(sys.argv[3]))
    else:
        main()
