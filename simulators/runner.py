"""Drive a stream of intents against a gateway with concurrent terminals, checked by the oracle.

Every simulated terminal is its own POS: one trio task with its own connection, carrying out its
intents one after another, while all terminals run at once. A dispatcher releases each intent at
its arrival offset (Poisson, see traffic.py) to the terminal named by its `dev_no`; a cancellation
goes to the terminal of the bill it cancels, which has finished that bill by the time it gets to
the cancellation. `concurrency` bounds how many terminals are inside an intent at once (None: no
bound; 1 sends strictly one intent at a time).

Around the traffic: at the start, a 3201 baseline per institution for each Shanghai day the run
may touch (the gateway's current day up to the day after the planned end, at least two days, so
a run across midnight reconciles both), and the monthly supervision report of their months; at
the end, 3201 and 3202 per institution for every day that has a baseline or a settlement the
oracle saw, and the monthly report against the oracle's own sums (simulators/supervision.py).
When the region has who-pays data (SPEC 13), a 1101 of each person the intents name (patients and
payers, at most WHO_PAYS_PERSONS_MAX, the sample first) before the traffic and after it: the
balances and pooling years must have moved by exactly what stands.
`run_with_history` first settles a year earlier under the gateway's test clock.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import pathlib
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, TextIO

import trio

from protocol import SHANGHAI
from simulators.catalogue import load_line_rules
from simulators.client import GatewayClient
from simulators.oracle import Oracle, Totals, WhoPaysTerms
from simulators.oracle_v2 import V2Oracle
from simulators.probe import probe_v2_checks
from simulators.region import Person, Region
from simulators.report import Stats, summary
from simulators.supervision import AdminLink, MonthlyCheck, year_earlier_ms, yoy_lines
from simulators.terminal import MsgidSource, SimClock, SimTerminal, Transport
from simulators.trace_codes import CodeSalt

PROGRESS_EVERY_S = 5.0
MS_PER_S = 1000
# Traffic still in flight after the last arrival (slow answers, retries, end-of-day messages).
END_MARGIN_S = 600.0
# Persons whose balance and pooling year are read before and after a run (two 1101 each).
WHO_PAYS_PERSONS_MAX = 5000
# The start and end phases (3201 baselines, 1101 baselines, reconciliation) go through one terminal
# per institution, this many at a time, each closing its connection when done: the gateway holds at
# most 256 connections per address (it evicts the longest idle), fewer than a county's institutions.
PHASE_INSTITUTIONS_AT_ONCE = 64


@dataclasses.dataclass
class RunResult:
    """What a run produced: counters, the oracle (with its violations) and the summary table."""

    stats: Stats
    oracle: Oracle
    table: str
    monthly: MonthlyCheck | None = None

    @property
    def ok(self) -> bool:
        """True when the oracle found nothing wrong."""
        return not self.oracle.violations


def write_trace(path: str | pathlib.Path, intents: Iterable[dict[str, Any]]) -> int:
    """Write intents as JSON lines; return how many."""
    count = 0
    with open(path, "w", encoding="utf-8") as out:
        for intent in intents:
            out.write(json.dumps(intent, ensure_ascii=False, sort_keys=True) + "\n")
            count += 1
    return count


def read_trace(path: str | pathlib.Path) -> Iterator[dict[str, Any]]:
    """Read a JSON-lines trace written by write_trace (blank lines are skipped)."""
    with open(path, encoding="utf-8") as trace:
        for line in trace:
            if line.strip():
                yield json.loads(line)


def days_between(first_ms: int, last_ms: int) -> list[str]:
    """Every Shanghai day from the one of `first_ms` to the one of `last_ms`, YYYYMMDD."""
    first = datetime.datetime.fromtimestamp(first_ms // MS_PER_S, tz=SHANGHAI).date()
    last = datetime.datetime.fromtimestamp(last_ms // MS_PER_S, tz=SHANGHAI).date()
    return [(first + datetime.timedelta(days=n)).strftime("%Y%m%d") for n in range((last - first).days + 1)]


class Runner:
    """The run's terminals (created on first use), oracle, counters and shared clock."""

    def __init__(self, region: Region, url: str, keys: dict[str, Any], concurrency: int | None = None,
                 client_factory: Callable[[str], Transport] = GatewayClient) -> None:
        """`client_factory(url)` opens one terminal's connection (a scripted gateway in tests)."""
        self.region, self.url, self.keys = region, url, keys
        self.client_factory = client_factory
        self.oracle = Oracle({code: region.allowance_fen(code) for code in region.institutions},
                             {code: i.monthly_cap_fen for code, i in region.institutions.items()},
                             who_pays=who_pays_terms(region))
        self.stats = Stats()
        self.msgids = MsgidSource()
        self.clock = SimClock()
        self.specs = {t.dev_no: t for t in region.terminals}
        self.limiter = trio.CapacityLimiter(concurrency) if concurrency else None
        self._terminals: dict[str, SimTerminal] = {}
        self._settled: dict[int, tuple[str, str]] = {}
        self.baselines: dict[tuple[str, str], Totals] = {}
        # Traceability codes as this run sends them (fresh ones: a gateway remembers sold codes).
        self.salt = CodeSalt()

    def set_v2_checks(self, mode: str) -> None:
        """Check SPEC 13's lines in `mode` (oracle_v2.V2_MODES); before any traffic."""
        self.oracle.v2 = V2Oracle(mode, load_line_rules(self.region) if mode != "off" else None,
                                  self.oracle.violation)

    async def probe_v2_checks(self) -> str:
        """The v2 mode the gateway's answer to one probe pre-settlement shows (probe.py)."""
        client = self.client_factory(self.url)
        try:
            return await probe_v2_checks(self.region, client, self.keys, self.msgids, self.clock)
        finally:
            await client.aclose()

    def terminal(self, dev_no: str) -> SimTerminal:
        """The simulated POS for `dev_no`, created (not yet signed in) on first use."""
        if dev_no not in self._terminals:
            self._terminals[dev_no] = SimTerminal(self.specs[dev_no], self.region, self.client_factory(self.url),
                                                  self.keys, self.oracle, self.stats, self.msgids, self.clock)
        return self._terminals[dev_no]

    def one_per_institution(self) -> dict[str, SimTerminal]:
        """One terminal for each institution that has any (for 3201 and 3202)."""
        chosen: dict[str, SimTerminal] = {}
        for spec in self.region.terminals:
            chosen.setdefault(spec.institution, self.terminal(spec.dev_no))
        return chosen

    def person(self, intent: dict[str, Any]) -> Person:
        """The intent's person; an unknown terminal or person is a trace/region mismatch (KeyError)."""
        if intent["dev_no"] not in self.specs:
            raise KeyError(f"intent {intent['seq']}: terminal {intent['dev_no']} not in this region")
        return self.region.population.person(intent["psn_no"])

    async def apply(self, intent: dict[str, Any]) -> None:
        """Carry out one intent on its terminal (a cancel of a bill not committed is skipped)."""
        if intent["kind"] == "cancel":
            earlier = self._settled.pop(intent["of_seq"], None)
            if earlier is not None:
                setl_id, psn_no = earlier
                await self.terminal(intent["dev_no"]).cancel(setl_id, psn_no)
            return
        sent = {**intent, "items": self.salt.items(intent["items"])}
        setlinfo = await self.terminal(intent["dev_no"]).settle(sent, self.person(intent))
        if setlinfo is not None:
            self._settled[intent["seq"]] = (setlinfo["setl_id"], setlinfo["psn_no"])

    async def serve_terminal(self, receive: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
        """One POS: its intents in arrival order, each to the end before the next."""
        async with receive:
            async for intent in receive:
                if self.limiter is None:
                    await self.apply(intent)
                else:
                    async with self.limiter:
                        await self.apply(intent)

    async def baseline(self, span_s: float) -> None:
        """3201 with zero claims per institution and day the run may touch (history from earlier runs)."""
        terminals = self.one_per_institution()
        first = next(iter(terminals.values()))
        await first.sign_in()  # syncs the clock: days are the gateway's days
        now_ms = self.clock.now_ms()
        days = days_between(now_ms, now_ms + int(max(span_s + END_MARGIN_S, 24 * 3600) * MS_PER_S))

        async def one(code: str, terminal: SimTerminal) -> None:
            for day in days:
                answer = await terminal.totals(day, Totals())
                if answer is None:
                    self.oracle.violation(f"3201 {code} {day}: refused at the start")
                else:
                    self.baselines[(code, day)] = Totals.of(answer[1])

        await self._per_institution(one)

    async def persons_info(self, psn_nos: list[str], end: bool) -> None:
        """1101 of each person through one terminal per institution, for the oracle's who-pays
        baseline (`end` False) or its final check (True)."""
        codes = list(self.one_per_institution())
        if not psn_nos or not codes:
            return
        groups = {code: psn_nos[index::len(codes)] for index, code in enumerate(codes)}

        async def one(code: str, terminal: SimTerminal) -> None:
            for psn_no in groups[code]:
                output = await terminal.person_info(self.region.population.person(psn_no))
                if output is not None:
                    (self.oracle.on_person_end if end else self.oracle.on_person_start)(psn_no, output)

        await self._per_institution(one)

    async def reconcile(self) -> None:
        """3201 and 3202 per institution for each day it has a baseline or a seen settlement."""
        async def one(code: str, terminal: SimTerminal) -> None:
            days = {day for (c, day) in self.baselines if c == code} | self.oracle.days(code)
            for day in sorted(days):
                baseline = self.baselines.get((code, day), Totals())
                expected = baseline.plus(self.oracle.standing_totals(code, day))
                answer = await terminal.totals(day, expected)
                if answer is None:
                    self.oracle.violation(f"3201 {code} {day}: refused at the end")
                else:
                    self.oracle.on_totals(code, expected, *answer, day=day)
                pages = await terminal.detail(day)
                if pages is None:
                    self.oracle.violation(f"3202 {code} {day}: refused at the end")
                else:
                    self.oracle.on_detail(code, day, pages, baseline)

        await self._per_institution(one)

    async def _per_institution(self, work: Callable[[str, SimTerminal], Awaitable[None]]) -> None:
        """`work(code, terminal)` for one terminal of each institution, PHASE_INSTITUTIONS_AT_ONCE
        at a time, each closing its connection when done."""
        limiter = trio.CapacityLimiter(PHASE_INSTITUTIONS_AT_ONCE)

        async def one(code: str, terminal: SimTerminal) -> None:
            async with limiter:
                try:
                    await work(code, terminal)
                finally:
                    await terminal.client.aclose()

        async with trio.open_nursery() as nursery:
            for code, terminal in self.one_per_institution().items():
                nursery.start_soon(one, code, terminal)

    async def dispatch(self, intents: Iterable[dict[str, Any]], speed: float, progress: TextIO | None) -> None:
        """Release each intent at its offset (divided by `speed`) to its terminal's queue."""
        started = trio.current_time()
        next_progress = started + PROGRESS_EVERY_S
        dev_of_seq: dict[int, str] = {}
        queues: dict[str, trio.MemorySendChannel[dict[str, Any]]] = {}
        async with trio.open_nursery() as nursery:
            try:
                for intent in intents:
                    if intent["kind"] == "settle":
                        self.person(intent)
                        dev_of_seq[intent["seq"]] = intent["dev_no"]
                        dev_no = intent["dev_no"]
                    elif intent["of_seq"] in dev_of_seq:
                        dev_no = dev_of_seq[intent["of_seq"]]
                    else:
                        continue
                    await trio.sleep_until(started + intent["t_s"] / speed)
                    if dev_no not in queues:
                        queues[dev_no], receive = trio.open_memory_channel[dict[str, Any]](math.inf)
                        nursery.start_soon(self.serve_terminal, receive)
                    queues[dev_no].send_nowait({**intent, "dev_no": dev_no})
                    if progress is not None and trio.current_time() >= next_progress:
                        next_progress += PROGRESS_EVERY_S
                        print(self.stats.progress_line(trio.current_time() - started, len(self.oracle.violations)),
                              file=progress, flush=True)
            finally:
                for queue in queues.values():
                    queue.close()

    async def aclose(self) -> None:
        """Close every terminal's connection."""
        for terminal in self._terminals.values():
            await terminal.client.aclose()


def who_pays_terms(region: Region) -> WhoPaysTerms:
    """SPEC 13's data for the oracle, from the region's own files."""
    links: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for link in region.family_links:
        links.setdefault((link.owner, link.member), []).append((link.valid_from, link.valid_to))
    no_pooling = frozenset(code for code, i in region.institutions.items()
                           if i.kind == "pharmacy" and not i.outpatient_pooling)
    return WhoPaysTerms(dict(region.policy.pooling), no_pooling, {k: tuple(v) for k, v in links.items()},
                        region.opening_fen)


def who_pays_persons(region: Region, intents: list[dict[str, Any]]) -> list[str]:
    """The persons (patients and payers) whose 1101 is read before and after the run: none without
    who-pays data; the region's sample first, then the others, at most WHO_PAYS_PERSONS_MAX."""
    if region.opening_fen is None and not region.policy.pooling:
        return []
    named: dict[str, None] = {}
    for intent in intents:
        if intent["kind"] == "settle":
            named[intent["psn_no"]] = None
            if intent.get("payer"):
                named[intent["payer"]] = None
    sample = region.population.sample_by_psn_no
    ordered = sorted(named, key=lambda psn_no: psn_no not in sample)
    return ordered[:WHO_PAYS_PERSONS_MAX]


def _single(error: BaseException) -> BaseException:
    """The one error inside nested single-member exception groups (trio wraps task errors)."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


async def run_async(region: Region, intents: Iterable[dict[str, Any]], url: str | None = None, speed: float = 1.0,
                    progress: TextIO | None = sys.stderr, concurrency: int | None = None,
                    span_s: float = 0.0, v2_checks: str | None = None, clock_offset_ms: int = 0) -> RunResult:
    """Send `intents` at their offsets (divided by `speed`) from concurrent terminals, then reconcile.

    `span_s`: the planned length of the traffic (for the days the 3201 baseline covers);
    `v2_checks`: the oracle's SPEC 13 mode (oracle_v2.V2_MODES), None: as a probe shows (probe.py);
    `clock_offset_ms`: the gateway's clock less this machine's, as far as known (its first
    sign-in must be fresh; every sign-in then keeps the terminals in step).

    Raises:
        OSError: the gateway is unreachable.
        KeyError: an intent names a terminal or person not in this region.
        ProbeError: the probe was refused.
    """
    target = url or region.gateway_url
    runner = Runner(region, target, await _keys(target), concurrency)
    runner.clock.offset_ms = clock_offset_ms
    monthly = _monthly_check(region)
    intents = list(intents)
    people = who_pays_persons(region, intents)
    try:
        runner.set_v2_checks(v2_checks or await runner.probe_v2_checks())
        await runner.baseline(span_s)
        if monthly is not None and not await _try(monthly.take_baseline({day[:6] for _, day in runner.baselines})):
            await monthly.link.aclose()
            monthly = None
        await runner.persons_info(people, end=False)
        await runner.dispatch(intents, speed, progress)
        await runner.reconcile()
        await runner.persons_info(people, end=True)
        if monthly is not None:
            await monthly.check(runner.oracle)
    except BaseExceptionGroup as group:
        raise _single(group) from None
    finally:
        await runner.aclose()
        if monthly is not None:
            await monthly.link.aclose()
    return _result(region, runner.stats, runner.oracle, monthly)


def _result(region: Region, stats: Stats, oracle: Oracle, monthly: MonthlyCheck | None,
            extra: Iterable[str] = ()) -> RunResult:
    kinds = {code: i.kind for code, i in region.institutions.items()}
    line = (f"monthly report: {monthly.checked} institution-months equal the oracle's sums" if monthly is not None
            else "monthly report: not checked (no admin token in sim.toml, or no answer from the admin API)")
    head, _, tail = summary(stats, oracle, kinds).rpartition("\noracle violations")
    return RunResult(stats, oracle, "\n".join([head, line, *extra]) + "\noracle violations" + tail, monthly)


def _monthly_check(region: Region) -> MonthlyCheck | None:
    token = next(iter(region.admin_tokens.values()), None)
    return MonthlyCheck(AdminLink(region.admin_url, token)) if region.admin_url and token else None


async def _try(step: Any) -> bool:
    """Await `step` (True/False); False when the admin API cannot be reached."""
    try:
        return bool(await step)
    except (ConnectionError, OSError):
        return False


async def _keys(target: str) -> dict[str, Any]:
    """The gateway's published response keys (GET /fsi/v1/keys)."""
    keys_client = GatewayClient(target)
    try:
        return await keys_client.keys()
    finally:
        await keys_client.aclose()


async def gateway_now_ms(region: Region, url: str | None = None) -> int:
    """The gateway's clock, read from a sign-in's sign_time (it may be a test clock)."""
    target = url or region.gateway_url
    runner = Runner(region, target, await _keys(target))
    try:
        if not await runner.terminal(region.terminals[0].dev_no).sign_in():
            raise ConnectionError("the gateway refused the sign-in that reads its clock")
        return runner.clock.now_ms()
    finally:
        await runner.aclose()


async def run_with_history_async(region: Region, history: Iterable[dict[str, Any]], intents: Iterable[dict[str, Any]],
                                 url: str | None = None, progress: TextIO | None = sys.stderr,
                                 concurrency: int | None = None, span_s: float = 0.0,
                                 v2_checks: str | None = None) -> tuple[RunResult, RunResult]:
    """`history` a year earlier (the gateway's test clock set back), then `intents` now; see supervision.py.

    `v2_checks` as for run_async (each of the two runs probes the gateway when it is None).

    Raises:
        ValueError: the gateway does not serve a test clock, or sim.toml has no operator token.
        OSError: the gateway is unreachable.
    """
    token = region.admin_tokens.get("operator") or region.admin_tokens.get("policy")
    if not token:
        raise ValueError("--history needs an operator or policy admin token in sim.toml")
    clock = AdminLink(region.admin_url, token)
    try:
        now_ms, started_s = await gateway_now_ms(region, url), time.monotonic()
        reader = MonthlyCheck(clock)
        this_month = datetime.datetime.fromtimestamp(now_ms / 1000, tz=SHANGHAI).strftime("%Y%m")
        if await reader.rows(this_month):
            # Its ledgers have closed every month before this one: a year earlier, no cap would hold.
            raise ValueError(f"--history needs a gateway that has not settled in {this_month} yet "
                             "(a fresh data directory)")
        offset_ms = await _set_clock(clock, year_earlier_ms(now_ms))
        month_before = datetime.datetime.fromtimestamp(year_earlier_ms(now_ms) / 1000, tz=SHANGHAI).strftime("%Y%m")
        before = {month_before: await reader.rows(month_before) or {}}
        last_year = await run_async(region, history, url, 1.0, progress, concurrency, span_s, v2_checks, offset_ms)
        offset_ms = await _set_clock(clock, now_ms + int((time.monotonic() - started_s) * MS_PER_S))
        this_year = await run_async(region, intents, url, 1.0, progress, concurrency, span_s, v2_checks, offset_ms)
        today = datetime.datetime.fromtimestamp(await gateway_now_ms(region, url) / 1000, tz=SHANGHAI)
        _, alerts = await clock.get(f"/admin/v1/alerts?date={today.strftime('%Y%m%d')}")
    finally:
        await clock.aclose()
    monthly = this_year.monthly
    extra = yoy_lines(last_year.oracle, monthly.last if monthly else {}, before, this_year.oracle,
                      (alerts or {}).get("alerts", []))
    return last_year, _result(region, this_year.stats, this_year.oracle, monthly, extra)


async def _set_clock(link: AdminLink, at_ms: int) -> int:
    """Set the gateway's test clock to `at_ms`; returns its offset from this machine's clock."""
    status, _ = await link.post("/admin/v1/test/clock", {"now_ms": at_ms})
    if status != 200:
        raise ValueError(f"--history needs a gateway serving with --test-clock "
                         f"(POST /admin/v1/test/clock answered {status})")
    return at_ms - int(time.time() * MS_PER_S)


def run_with_history(region: Region, history: Iterable[dict[str, Any]], intents: Iterable[dict[str, Any]],
                     url: str | None = None, progress: TextIO | None = sys.stderr, concurrency: int | None = None,
                     span_s: float = 0.0, v2_checks: str | None = None) -> tuple[RunResult, RunResult]:
    """run_with_history_async in its own trio event loop."""
    return trio.run(run_with_history_async, region, history, intents, url, progress, concurrency, span_s, v2_checks)


def run(region: Region, intents: Iterable[dict[str, Any]], url: str | None = None, speed: float = 1.0,
        progress: TextIO | None = sys.stderr, concurrency: int | None = None, span_s: float = 0.0,
        v2_checks: str | None = None) -> RunResult:
    """run_async in its own trio event loop (for the command line and synchronous callers)."""
    return trio.run(run_async, region, intents, url, speed, progress, concurrency, span_s, v2_checks)
