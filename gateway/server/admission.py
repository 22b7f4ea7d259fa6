"""Admission of transaction requests: under overload, serve the newest within time, shed the rest cheaply.

One process on one core completes only so many settlements a second. Past that, answering every
request (even with a refusal) costs CPU the admitted ones need, and serving requests in arrival
order lets each of them age in the queue until none is answered in time: goodput collapses. The
gate keeps it flat instead:

- **Arrival.** A connection stamps the time the first bytes of a request arrived (the kernel's
  receive stamp: gateway/server/arrival.py, so time spent unread in the socket counts) and asks the
  gate before it parses anything when those bytes hold the whole request, else once it is read
  (gateway/server/http.py: a client dripping bytes must hold no place for work); a request that
  arrives already older than `wait_max_s` is stale from the start, once such arrivals have stood
  for STANDING_S (CoDel's interval): one pause of the loop (a collection, a busy neighbour on the
  machine) ages every request read after it without being overload, and those are served. A waiting
  request costs that one receive and nothing more; its client waits for the answer and sends
  nothing else (TCP pushes back on anything larger).
- **Admission by queue time, newest first.** While fewer than `limit` requests are admitted, a
  new one is admitted at once. Otherwise it waits, and a freed place goes to the newest waiting
  request (LIFO): under overload the newest has waited least, so what is admitted is answered in
  time, where first-come-first-served would let every request age past it. A request that waited
  longer than `wait_max_s` is stale: it is never admitted, only shed.
- **The limit is a queue time, not a count.** Every CONTROL_S the gate reads how much of the
  time the process idled (no thread of it running or waiting for a CPU). When it idles while it
  held requests back, the work admitted waits on something other than the core (the journal's
  fsync), so more may be admitted: the limit grows by a quarter. When the core is busy
  throughout, the limit moves halfway to `target_s` worth of the answers the gateway completes
  per second (Little's law: queue time = in flight / throughput), so admitted requests queue
  about `target_s` however fast or slow the core happens to be. Throughput sets it, not
  latency: a slow disk or a shared machine makes answers slower without shrinking the limit
  until nothing gets through. `limit_max` (`requests_in_flight_max`) bounds it.
- **Shedding, after admitted work.** Stale requests get a signed 429 OVERLOADED with
  `Retry-After` (the cheap path: `HttpConnection` and `DataApp.shed_bytes`), newest first (the
  oldest are the likeliest to have been given up on), at most SHEDDING_MAX at once and at most
  `sheds_per_answer` for each admitted request answered: admitted work goes first. The budget
  counts answers, not measured microseconds, because a shed answer's arrival, wake-ups and
  write cost as much as its signature and are not its own to measure. A request that cannot be
  shed waits; one that waited `close_after_s` is closed unanswered (its client gave up long
  ago), and so is one whose connection the listener closes to make room. Shedding generously
  is cheaper than not: a client left waiting times out and reconnects, which costs the gateway
  more than a 429 on a kept-alive connection.

Everything runs on the trio thread; `run` is the periodic part (ageing, the limit).
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import math
import os
import time
from typing import Callable

import trio

__all__ = ["Admission", "Verdict"]

# Where the limit starts, and the least it shrinks to.
LIMIT_START = 32
LIMIT_MIN = 8
# How often the limit is set, and the share of that time the process may idle and still count as busy.
CONTROL_S = 0.1
BUSY_IDLE_SHARE_MAX = 0.05
GROWTH = 1.25
# The shed budget, in answers: the most saved up.
SHED_BURST = 16.0
# At most this many shed answers under way at once.
SHEDDING_MAX = 8
TICK_S = 0.005
# How long requests must keep arriving stale before one that arrives stale is shed with room to
# spare (CoDel's interval): a shorter run of them is a pause of the loop, not a standing queue.
STANDING_S = 0.1


class Verdict(enum.Enum):
    """What the gate says about one request."""

    ADMIT = "admit"
    SHED = "shed"
    CLOSE = "close"


@dataclasses.dataclass(eq=False, slots=True)
class _Waiter:
    arrived_s: float
    event: trio.Event
    verdict: Verdict | None = None
    gone: bool = False


class CoreUse:
    """How much of the time the process's threads ran or waited for a CPU, in seconds (cumulative).

    Linux tells it per thread (/proc/self/task/*/schedstat: CPU time and time runnable but not
    running). A thread that waits for a CPU is busy for the gate's purposes, not idle: on a
    shared machine the core is not all the gateway's. Elsewhere only the calling thread's CPU
    time is known.
    """

    TASKS = "/proc/self/task"

    def __init__(self) -> None:
        self._last: dict[int, float] = {}   # each live thread's last reading
        self._ended_s = 0.0                 # what threads that ended had used
        self._linux = os.path.isdir(self.TASKS)

    def busy_s(self) -> float:
        if not self._linux:
            return time.thread_time()
        readings: dict[int, float] = {}
        for tid in os.listdir(self.TASKS):
            try:
                with open(f"{self.TASKS}/{tid}/schedstat", "rb") as stat:
                    cpu_ns, wait_ns, _ = stat.read().split(maxsplit=2)
            except (OSError, ValueError):
                continue   # a thread that ended meanwhile
            readings[int(tid)] = (int(cpu_ns) + int(wait_ns)) / 1e9
        self._ended_s += sum(used for tid, used in self._last.items() if tid not in readings)
        self._last = readings
        return self._ended_s + sum(readings.values())


class Admission:
    """The gate of one data listener (see the module docstring)."""

    def __init__(self, limit_max: int, target_s: float, wait_max_s: float, sheds_per_answer: float,
                 close_after_s: float, clock: Callable[[], float] = trio.current_time) -> None:
        assert limit_max >= 1 and target_s > 0 and wait_max_s > 0 and sheds_per_answer >= 0
        self.limit_max = limit_max
        self.limit_min = min(LIMIT_MIN, limit_max)
        self.limit = float(min(LIMIT_START, limit_max))
        self.target_s = target_s
        self.wait_max_s = wait_max_s
        self.sheds_per_answer = sheds_per_answer
        self.close_after_s = close_after_s
        self._clock = clock
        self.admitted = 0
        self.shedding = 0
        self._fresh: collections.deque[_Waiter] = collections.deque()
        self._stale: collections.deque[_Waiter] = collections.deque()
        self._tokens = SHED_BURST
        self._stale_since_s = math.inf   # when arrivals began to come stale (inf: the last was fresh)
        self._waiters_exist = trio.Event()
        # Since the last control step: answers completed, and whether anyone waited.
        self._answered = 0
        self._held_back = False
        # Counters for metrics and tests.
        self.shed_total = 0
        self.closed_total = 0

    @property
    def waiting(self) -> int:
        """Requests waiting for a verdict (fresh and stale; some may be gone already)."""
        return len(self._fresh) + len(self._stale)

    async def enter(self, arrived_s: float) -> Verdict:
        """Wait for the verdict on a request whose first bytes arrived at `arrived_s`.

        ADMIT: serve it, then call `done()`. SHED: answer it cheaply, then call
        `shed_done(cost_s)`. CLOSE: close the connection unanswered.
        """
        # A request can reach the gate stale: it waited in its socket before it was read. With
        # room, it is still served unless such arrivals have stood for STANDING_S.
        now_s = self._clock()
        stale = now_s - arrived_s > self.wait_max_s
        self._stale_since_s = min(self._stale_since_s, now_s) if stale else math.inf
        standing = now_s - self._stale_since_s >= STANDING_S
        if not standing and self.admitted < self.limit and not self._fresh:
            self.admitted += 1
            return Verdict.ADMIT
        waiter = _Waiter(arrived_s, trio.Event())
        (self._stale if stale else self._fresh).append(waiter)
        self._held_back = True
        self._waiters_exist.set()
        try:
            await waiter.event.wait()
        except BaseException:
            self._abandon(waiter)
            raise
        assert waiter.verdict is not None
        return waiter.verdict

    def _abandon(self, waiter: _Waiter) -> None:
        """The waiting task was cancelled (its connection closed for room, or the server stops)."""
        waiter.gone = True
        if waiter.verdict is Verdict.ADMIT:
            self.admitted -= 1
        elif waiter.verdict is Verdict.SHED:
            self.shedding -= 1
            self._tokens += 1
        if waiter.verdict is not None:
            self.dispatch()

    def done(self) -> None:
        """An admitted request was answered (or its connection ended)."""
        self.admitted -= 1
        self._answered += 1
        self._tokens = min(SHED_BURST, self._tokens + self.sheds_per_answer)
        self.dispatch()

    def shed_done(self) -> None:
        """A shed answer was sent (or its connection ended)."""
        self.shedding -= 1
        self.shed_total += 1
        self.dispatch()

    def dispatch(self) -> None:
        """Give verdicts: admit the newest fresh requests into free places, shed stale ones
        within the budget, close those that waited `close_after_s`."""
        now_s = self._clock()
        self._age(now_s)
        fresh = self._fresh
        while fresh and self.admitted < self.limit:
            waiter = fresh.pop()
            if not waiter.gone:
                self.admitted += 1
                self._tell(waiter, Verdict.ADMIT)
        stale = self._stale
        while stale and self.shedding < SHEDDING_MAX and self._tokens >= 1:
            waiter = stale.pop()
            if not waiter.gone:
                self.shedding += 1
                self._tokens -= 1
                self._tell(waiter, Verdict.SHED)
        while stale and (stale[0].gone or now_s - stale[0].arrived_s > self.close_after_s):
            waiter = stale.popleft()
            if not waiter.gone:
                self.closed_total += 1
                self._tell(waiter, Verdict.CLOSE)
        if not fresh and not stale and self._waiters_exist.is_set():
            # `run` waits on the event it found unset; only a set one is replaced.
            self._waiters_exist = trio.Event()

    def _age(self, now_s: float) -> None:
        """Move requests that waited longer than wait_max_s from fresh to stale (oldest first)."""
        fresh, stale = self._fresh, self._stale
        while fresh and (fresh[0].gone or now_s - fresh[0].arrived_s > self.wait_max_s):
            waiter = fresh.popleft()
            if not waiter.gone:
                stale.append(waiter)

    def control(self, elapsed_s: float, idle_s: float) -> None:
        """Set the limit from one control period `elapsed_s` long, in which the process idled
        `idle_s` (no thread of it running or waiting for a CPU)."""
        answered, held_back = self._answered, self._held_back
        self._answered, self._held_back = 0, False
        if elapsed_s <= 0:
            return
        if idle_s > BUSY_IDLE_SHARE_MAX * elapsed_s:
            if held_back:
                self.limit = min(float(self.limit_max), self.limit * GROWTH)
            return
        # Halfway each period: one period's count of answers is a noisy estimate of throughput.
        queue_limit = answered / elapsed_s * self.target_s
        limit = (self.limit + queue_limit) / 2
        self.limit = min(float(self.limit_max), max(float(self.limit_min), limit))

    @staticmethod
    def _tell(waiter: _Waiter, verdict: Verdict) -> None:
        waiter.verdict = verdict
        waiter.event.set()

    async def run(self) -> None:
        """The periodic part: every TICK_S while requests wait (ageing, the shed budget), the
        limit every CONTROL_S."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._control_loop)
            while True:
                await self._waiters_exist.wait()
                await trio.sleep(TICK_S)
                self.dispatch()

    async def _control_loop(self) -> None:
        use = CoreUse()
        last_s, last_busy_s = self._clock(), use.busy_s()
        while True:
            await trio.sleep(CONTROL_S)
            now_s, busy_s = self._clock(), use.busy_s()
            self.control(now_s - last_s, max(0.0, (now_s - last_s) - (busy_s - last_busy_s)))
            last_s, last_busy_s = now_s, busy_s
            self.dispatch()
