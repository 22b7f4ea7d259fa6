"""The journal's own writer thread: one OS thread that runs each batch's write and fsync.

`trio.to_thread.run_sync` costs about twice as much per call as a queue put plus a
`run_sync_soon` back (it takes a capacity limiter, opens a cancel scope and hands the job to its
thread cache each time). The journal makes that call once per group commit, and with the
write-at-once policy (a batch starts as soon as the previous one is durable) that is up to a few
hundred times a second, so the journal keeps one thread for it instead.

Semantics are those of `to_thread.run_sync` without `abandon_on_cancel`: the caller cannot be
cancelled while its job runs (a write half done must be accounted for), and the job's exception
is raised in the caller.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import outcome
import trio

T = TypeVar("T")

__all__ = ["WriterThread"]


class WriterThread:
    """Runs blocking jobs one at a time on a thread of its own, started on first use."""

    def __init__(self, name: str = "journal-writer") -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Callable[[outcome.Outcome], None]] | None] = \
            queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    async def run_sync(self, job: Callable[..., T], *args: Any) -> T:
        """Run `job(*args)` on the writer thread and return its result (or raise its exception)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
            self._thread.start()
        token = trio.lowlevel.current_trio_token()
        task = trio.lowlevel.current_task()

        def deliver(result: outcome.Outcome) -> None:
            try:
                token.run_sync_soon(trio.lowlevel.reschedule, task, result)
            except trio.RunFinishedError:
                pass   # the run ended meanwhile: nobody waits for this answer any more

        self._jobs.put((lambda: job(*args), deliver))
        return await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)

    def stop(self) -> None:
        """End the thread once the jobs queued so far have run (it is a daemon: exit never waits)."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread = None

    def _loop(self) -> None:
        while (item := self._jobs.get()) is not None:
            job, deliver = item
            deliver(outcome.capture(job))
