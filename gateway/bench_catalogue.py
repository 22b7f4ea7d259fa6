"""`python -m gateway.bench_catalogue` (make bench-catalogue): the catalogue's start and look-up cost.

For a generated catalogue of BENCH_ROWS rows (the sample generator's mix of code families,
classes, caps and successive rows), prints:
  (a) the load time: the file's bytes → `parse_catalogue` → an index (median of LOAD_REPEATS);
      reading the bytes from disk is left out (a few ms from the page cache);
  (b) the peak RSS added by the load, the file's bytes excluded: the process's peak RSS after the
      first load minus its RSS before the file was generated (an upper bound: if generating the
      file peaked higher, that peak is what shows);
  (c) the heap retained by the index, per row (tracemalloc, a separate load);
  (d) the cost of one `lookup` (a hit on a known code, and a miss), median of LOOKUP_REPEATS runs,
      beside the cost of the same loop calling a function that does nothing.
"""

from __future__ import annotations

import datetime
import gc
import itertools
import random
import resource
import statistics
import time
import tracemalloc
from collections.abc import Callable

from gateway.core.catalogue import CATALOGUE_ROWS_MAX, Catalogue, parse_catalogue
from gateway.catalogue_sample import catalogue_csv, iter_generated_rows
from gateway.core.clock import date_day

BENCH_ROWS = 100_000
BENCH_SEED = 7
LOAD_REPEATS = 3
LOOKUPS = 200_000
# Look-ups of known codes draw from the first rows' codes (all of them in the index).
KNOWN_CODES = 5000
LOOKUP_REPEATS = 5
BYTES_PER_KIB = 1024
BYTES_PER_MB = 1_000_000
# Look-ups land on days of 2024..2026, where the sample's rows are valid, cut or revised.
DAY_FIRST = date_day(datetime.date(2024, 1, 1))
DAYS = 3 * 365


def _max_rss_bytes() -> int:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * BYTES_PER_KIB


def _timed_load(data: bytes) -> tuple[Catalogue, float]:
    started_s = time.perf_counter()
    catalogue = parse_catalogue(data, "bench.csv")
    return catalogue, time.perf_counter() - started_s


def _retained_bytes(data: bytes) -> int:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    catalogue = parse_catalogue(data, "bench.csv")
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    retained = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert catalogue.rows_count == BENCH_ROWS
    return retained


def _no_lookup(code: str, day: int) -> None:
    """A call that does nothing: the loop and call overhead that `_lookup_ns` includes."""


def _lookup_ns(lookup: Callable[[str, int], object], codes: list[str], days: list[int]) -> float:
    """Median ns per `lookup` call over LOOKUP_REPEATS runs of the (code, day) pairs."""
    pairs = list(zip(codes, days, strict=True))
    runs = []
    for _ in range(LOOKUP_REPEATS):
        started_ns = time.perf_counter_ns()
        for code, day in pairs:
            lookup(code, day)
        runs.append((time.perf_counter_ns() - started_ns) / len(pairs))
    return statistics.median(runs)


def main() -> None:
    """Generate, load, measure, print."""
    rss_start_bytes = _max_rss_bytes()
    rows = itertools.islice(iter_generated_rows(BENCH_SEED, legacy=False), BENCH_ROWS)
    data = catalogue_csv(rows).encode("utf-8")
    gc.collect()
    catalogue, first_load_s = _timed_load(data)
    peak_added_bytes = _max_rss_bytes() - rss_start_bytes - len(data)
    assert catalogue.rows_count == BENCH_ROWS
    loads_s = [first_load_s] + [_timed_load(data)[1] for _ in range(LOAD_REPEATS - 1)]
    rng = random.Random(BENCH_SEED)
    known = [row[0] for row in itertools.islice(iter_generated_rows(BENCH_SEED, legacy=False),
                                                min(KNOWN_CODES, BENCH_ROWS))]
    days = [DAY_FIRST + rng.randrange(DAYS) for _ in range(LOOKUPS)]
    hits = [rng.choice(known) for _ in range(LOOKUPS)]
    hit_ns = _lookup_ns(catalogue.lookup, hits, days)
    miss_ns = _lookup_ns(catalogue.lookup, [f"NOSUCHCODE{n:06d}" for n in range(LOOKUPS)], days)
    overhead_ns = _lookup_ns(_no_lookup, hits, days)
    del catalogue
    retained = _retained_bytes(data)
    print(f"catalogue: {BENCH_ROWS} rows, file {len(data) / BYTES_PER_MB:.1f} MB "
          f"({len(data) / BENCH_ROWS:.0f} bytes per row); bound CATALOGUE_ROWS_MAX = {CATALOGUE_ROWS_MAX}")
    print(f"load (bytes -> index): median {statistics.median(loads_s):.2f} s over {LOAD_REPEATS} "
          f"({', '.join(f'{s:.2f}' for s in loads_s)})")
    print(f"peak RSS added by the load (file bytes excluded): {peak_added_bytes / BYTES_PER_MB:.1f} MB")
    print(f"heap retained by the index: {retained / BYTES_PER_MB:.1f} MB, "
          f"{retained / BENCH_ROWS:.0f} bytes per row")
    print(f"lookup: {hit_ns:.0f} ns per call (known code), {miss_ns:.0f} ns (unknown code); "
          f"{overhead_ns:.0f} ns of these are the loop and the call of a function that does nothing")


if __name__ == "__main__":
    main()
