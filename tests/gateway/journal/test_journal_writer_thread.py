"""The journal's writer thread runs a job off the event loop, returns its result or raises its
exception in the caller, and never lets a cancellation abandon a job that is running."""

from __future__ import annotations

import threading
import time

import pytest
import trio

from gateway.journal.writer import WriterThread


async def test_a_job_runs_on_one_other_thread_and_returns_its_result() -> None:
    writer = WriterThread()
    names = [await writer.run_sync(lambda: threading.current_thread().name) for _ in range(3)]
    assert names == ["journal-writer"] * 3 and threading.current_thread().name != "journal-writer"
    assert await writer.run_sync(pow, 2, 10) == 1024
    writer.stop()


async def test_a_jobs_exception_is_raised_in_the_caller() -> None:
    writer = WriterThread()
    with pytest.raises(OSError, match="disk gone"):
        await writer.run_sync(_fail)
    assert await writer.run_sync(lambda: "still serving") == "still serving"
    writer.stop()


def _fail() -> None:
    raise OSError("disk gone")


async def test_a_cancelled_caller_waits_for_its_running_job() -> None:
    writer = WriterThread()
    finished: list[float] = []

    def slow() -> str:
        time.sleep(0.2)
        finished.append(time.monotonic())
        return "written"

    with trio.move_on_after(0.01) as scope:
        assert await writer.run_sync(slow) == "written"
        await trio.sleep(1)   # the cancellation lands at the next checkpoint
    assert scope.cancelled_caught and len(finished) == 1
    writer.stop()
