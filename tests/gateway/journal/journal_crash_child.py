"""Child process for the kill -9 test: append through the real Journal until killed.

Usage: python journal_crash_child.py DATA_DIR. Prints each op once ``wait_durable`` returned
(that line is the acknowledgement the parent holds the journal to), and snapshots the toy state
every 25 ops, so kills also land inside snapshot writes and segment retirement.
"""

from __future__ import annotations

import sys

import trio
from journal_helpers import apply, make_record, replay

from gateway.journal import Journal

APPENDERS = 8
SNAPSHOT_EVERY = 25


async def main(data_dir: str) -> None:
    journal = Journal(data_dir, fsync=True, group_commit_ms=1, segment_bytes_max=2048)
    recovery = journal.recover()
    holder = {"state": replay(recovery.snapshot, recovery.records)}

    async def appender(nursery: trio.Nursery) -> None:
        while True:
            op = journal.next_op
            record = make_record(op)
            holder["state"] = apply(holder["state"], record)
            journal.append(record)
            if op % SNAPSHOT_EVERY == 0:
                nursery.start_soon(journal.snapshot, dict(holder["state"]), op)
            await journal.wait_durable(op)
            print(op, flush=True)

    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        for _ in range(APPENDERS):
            nursery.start_soon(appender, nursery)


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
