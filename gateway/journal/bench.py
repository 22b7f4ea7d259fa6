"""Journal micro-benchmark: ``python -m gateway.journal.bench [--appenders N] [--records N]``.

For fsync on and off, N concurrent appenders each append and await durability in a loop; prints
records/s, fsync p50/p99 and the mean batch size. Runs in a temporary directory (``--dir`` to
choose the disk under test).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import trio

from ..logs import JsonLogger
from . import Journal, JournalObserver


class _Collector(JournalObserver):
    def __init__(self) -> None:
        self.fsync_s: list[float] = []
        self.batch_records: list[int] = []

    def on_batch(self, records: int, bytes_written: int, fsync_s: float | None) -> None:
        self.batch_records.append(records)
        if fsync_s is not None:
            self.fsync_s.append(fsync_s)


async def _run(data_dir: str, fsync: bool, appenders: int, records: int,
               group_commit_ms: float) -> tuple[float, _Collector]:
    collector = _Collector()
    journal = Journal(data_dir, fsync=fsync, group_commit_ms=group_commit_ms, observer=collector,
                      logger=JsonLogger(level="warning"))
    journal.recover()
    remaining = [records]
    payload = b"x" * 600  # about one signed settlement answer

    async def appender() -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            op = journal.next_op
            journal.append({"op": op, "t": "settle", "resp": payload})
            await journal.wait_durable(op)

    started_s = time.perf_counter()
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        async with trio.open_nursery() as workers:
            for _ in range(appenders):
                workers.start_soon(appender)
        nursery.cancel_scope.cancel()
    journal.close()
    return time.perf_counter() - started_s, collector


def _percentile_ms(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run both modes, print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appenders", type=int, default=200)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--group-commit-ms", type=float, default=2.0)
    parser.add_argument("--dir", default=None, help="parent directory for the scratch data dir")
    args = parser.parse_args(argv)
    for fsync in (True, False):
        with tempfile.TemporaryDirectory(dir=args.dir) as data_dir:
            elapsed_s, stats = trio.run(_run, data_dir, fsync, args.appenders, args.records,
                                        args.group_commit_ms)
        print(f"fsync={'on ' if fsync else 'off'} appenders={args.appenders} "
              f"records={args.records} records/s={args.records / elapsed_s:,.0f} "
              f"fsync_p50_ms={_percentile_ms(stats.fsync_s, 0.50):.3f} "
              f"fsync_p99_ms={_percentile_ms(stats.fsync_s, 0.99):.3f} "
              f"mean_batch={statistics.fmean(stats.batch_records):.1f} "
              f"batches={len(stats.batch_records)}")


if __name__ == "__main__":
    main()
