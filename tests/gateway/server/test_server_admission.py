"""The admission gate alone (virtual time): newest first, stale requests shed within a budget,
closed when they waited too long, and a limit set by throughput, not latency."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import AsyncIterator

import pytest
import trio
import trio.testing

from gateway.server.admission import (LIMIT_MIN, SHED_BURST, SHEDDING_MAX, STANDING_S, Admission, CoreUse,
                                      Verdict)

WAIT_MAX_S = 0.05
CLOSE_AFTER_S = 10.0


def gate(limit_max: int = 2, target_s: float = 0.025) -> Admission:
    admission = Admission(limit_max=limit_max, target_s=target_s, wait_max_s=WAIT_MAX_S, sheds_per_answer=1.0,
                          close_after_s=CLOSE_AFTER_S)
    admission.limit = float(limit_max)
    return admission


class Requests:
    """Requests entering one gate, each in its own task; verdicts land in `verdicts` by name."""

    def __init__(self, nursery: trio.Nursery, admission: Admission) -> None:
        self.nursery = nursery
        self.admission = admission
        self.verdicts: dict[str, Verdict] = {}
        self.order: list[str] = []

    async def arrive(self, *names: str) -> None:
        for name in names:
            self.nursery.start_soon(self._one, name)
            await trio.testing.wait_all_tasks_blocked()

    async def _one(self, name: str) -> None:
        verdict = await self.admission.enter(trio.current_time())
        self.verdicts[name] = verdict
        self.order.append(name)

    def named(self, verdict: Verdict) -> list[str]:
        return sorted(name for name, v in self.verdicts.items() if v is verdict)

    async def settle(self) -> None:
        self.admission.dispatch()
        await trio.testing.wait_all_tasks_blocked()


@contextlib.asynccontextmanager
async def one_held(limit_max: int = 1) -> AsyncIterator[Requests]:
    """A gate whose places are all taken by requests named held0, held1 ..."""
    admission = gate(limit_max)
    async with trio.open_nursery() as nursery:
        requests = Requests(nursery, admission)
        await requests.arrive(*(f"held{n}" for n in range(limit_max)))
        yield requests
        nursery.cancel_scope.cancel()


async def test_admits_up_to_the_limit_at_once_then_the_newest_first(autojump_clock: trio.abc.Clock) -> None:
    async with one_held(limit_max=2) as requests:
        await requests.arrive("c", "d", "e")
        assert requests.order == ["held0", "held1"] and requests.admission.waiting == 3
        for _ in range(2):
            requests.admission.done()
            await trio.testing.wait_all_tasks_blocked()
        # LIFO: the newest waiting request has waited least, so it is answered in time.
        assert requests.order == ["held0", "held1", "e", "d"]
        assert requests.named(Verdict.ADMIT) == ["d", "e", "held0", "held1"]


async def test_a_request_that_waited_too_long_is_shed_never_admitted(autojump_clock: trio.abc.Clock) -> None:
    async with one_held() as requests:
        await requests.arrive("old")
        await trio.sleep(WAIT_MAX_S * 2)
        await requests.arrive("new")
        await requests.settle()
        assert requests.named(Verdict.SHED) == ["old"] and "new" not in requests.verdicts
        requests.admission.shed_done()
        requests.admission.done()
        await trio.testing.wait_all_tasks_blocked()
        assert requests.verdicts["new"] is Verdict.ADMIT
        admission = requests.admission
        assert (admission.admitted, admission.shedding, admission.shed_total) == (1, 0, 1)


async def test_requests_that_keep_arriving_stale_are_shed_even_with_room(autojump_clock: trio.abc.Clock) -> None:
    # Their bytes waited unread in the socket longer than wait_max_s, arrival after arrival for
    # STANDING_S: the gate has room, yet the next is not admitted (can fail: admitting whenever
    # there is room admits it at once).
    admission = gate(limit_max=64)
    async with trio.open_nursery() as nursery:
        verdicts: list[Verdict] = []

        async def enter(arrived_s: float) -> None:
            verdicts.append(await admission.enter(arrived_s))

        for _ in range(3):
            nursery.start_soon(enter, trio.current_time() - WAIT_MAX_S * 2)
            await trio.testing.wait_all_tasks_blocked()
            await trio.sleep(STANDING_S / 2)
        assert verdicts == [Verdict.ADMIT, Verdict.ADMIT] and admission.admitted == 2
        admission.dispatch()
        await trio.testing.wait_all_tasks_blocked()
        assert verdicts == [Verdict.ADMIT, Verdict.ADMIT, Verdict.SHED]
        nursery.start_soon(enter, trio.current_time() - WAIT_MAX_S / 2)
        await trio.testing.wait_all_tasks_blocked()
        assert verdicts[-1] is Verdict.ADMIT


async def test_a_pause_of_the_loop_is_not_overload(autojump_clock: trio.abc.Clock) -> None:
    # The loop stalled (a collection, a busy neighbour): every request read after it arrives
    # stale, but such arrivals have not stood for STANDING_S and the gate has room, so they are
    # served, not shed (can fail: shedding every stale arrival sheds all of them).
    admission = gate(limit_max=64)
    stalled_s = trio.current_time() - WAIT_MAX_S * 4
    verdicts: list[Verdict] = []
    with trio.move_on_after(1.0):   # a request not admitted at once waits for a verdict never given
        for n in range(20):
            verdicts.append(await admission.enter(stalled_s + n * 0.001))
    assert verdicts == [Verdict.ADMIT] * 20 and admission.admitted == 20
    # A fresh arrival ends the run: the next stale one starts a new one.
    assert await admission.enter(trio.current_time()) is Verdict.ADMIT
    await trio.sleep(STANDING_S * 2)
    assert await admission.enter(trio.current_time() - WAIT_MAX_S * 2) is Verdict.ADMIT


async def test_shedding_is_paid_for_by_answers(autojump_clock: trio.abc.Clock) -> None:
    async with one_held() as requests:
        names = [f"r{n:02d}" for n in range(int(SHED_BURST) + 4)]
        await requests.arrive(*names)
        await trio.sleep(WAIT_MAX_S * 2)
        await requests.settle()
        # Newest first, at most SHEDDING_MAX under way, within the budget saved up.
        assert requests.named(Verdict.SHED) == names[-min(SHEDDING_MAX, int(SHED_BURST)):]
        while requests.admission.shedding:
            requests.admission.shed_done()
            await trio.testing.wait_all_tasks_blocked()
        # The budget saved up is spent: the four oldest wait.
        assert len(requests.named(Verdict.SHED)) == SHED_BURST
        assert [n for n in names if n not in requests.verdicts] == names[:4]
        # Each admitted answer pays for sheds_per_answer (here 1) more.
        requests.admission.done()
        await trio.testing.wait_all_tasks_blocked()
        assert requests.verdicts["r03"] is Verdict.SHED and "r02" not in requests.verdicts
        assert "r02" not in requests.verdicts


async def test_a_request_left_waiting_is_closed_unanswered(autojump_clock: trio.abc.Clock) -> None:
    admission = Admission(limit_max=1, target_s=0.025, wait_max_s=WAIT_MAX_S, sheds_per_answer=0.0,
                          close_after_s=CLOSE_AFTER_S)
    admission._tokens = 0.0    # nothing saved up, and answers pay for nothing
    async with trio.open_nursery() as nursery:
        requests = Requests(nursery, admission)
        await requests.arrive("held", "forgotten")
        await trio.sleep(CLOSE_AFTER_S + 1)
        await requests.settle()
        assert requests.verdicts["forgotten"] is Verdict.CLOSE and admission.closed_total == 1
        nursery.cancel_scope.cancel()


async def test_a_cancelled_wait_gives_its_place_back(autojump_clock: trio.abc.Clock) -> None:
    async with one_held() as requests:
        with trio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(trio.Cancelled):
                await requests.admission.enter(trio.current_time())
        await requests.arrive("next")
        requests.admission.done()
        await trio.testing.wait_all_tasks_blocked()
        assert requests.verdicts["next"] is Verdict.ADMIT and requests.admission.admitted == 1


async def test_the_periodic_task_sheds_without_any_answer_completing(autojump_clock: trio.abc.Clock) -> None:
    async with one_held() as requests:
        requests.nursery.start_soon(requests.admission.run)
        await requests.arrive("stale")
        await trio.sleep(WAIT_MAX_S * 3)
        assert requests.verdicts["stale"] is Verdict.SHED


def test_a_busy_core_sets_the_limit_to_target_worth_of_its_throughput() -> None:
    admission = gate(limit_max=256, target_s=0.025)
    admission.limit = 100.0
    for _ in range(20):
        admission._answered = 80   # 800 answers/s over 0.1 s: 0.025 s of them is 20 in flight
        admission.control(elapsed_s=0.1, idle_s=0.0)
    assert admission.limit == pytest.approx(20, abs=0.5)
    admission._answered = 0
    admission.control(elapsed_s=0.1, idle_s=0.0)
    assert admission.limit >= LIMIT_MIN


def test_a_core_with_room_to_spare_grows_the_limit_only_when_it_held_requests_back() -> None:
    admission = gate(limit_max=40)
    admission.limit = 10.0
    admission.control(elapsed_s=0.1, idle_s=0.05)
    assert admission.limit == 10.0
    admission._held_back = True
    admission.control(elapsed_s=0.1, idle_s=0.05)
    assert admission.limit == 12.5
    for _ in range(20):
        admission._held_back = True
        admission.control(elapsed_s=0.1, idle_s=0.05)
    assert admission.limit == 40


def test_core_use_counts_a_thread_it_saw_also_after_it_ended() -> None:
    use = CoreUse()
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(10_000))

    worker = threading.Thread(target=spin)
    worker.start()
    time.sleep(0.05)
    seen = use.busy_s()              # the worker is running: its time is read
    stop.set()
    worker.join()
    assert use.busy_s() >= seen      # gone, its time still counts
