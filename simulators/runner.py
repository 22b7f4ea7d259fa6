"""Drive a stream of intents against a gateway, one message at a time, and check it with the oracle.

Messages go out strictly one after another (arrivals that fall behind schedule are sent at once):
the oracle's "earlier usage" is then exact, with no in-flight ambiguity between terminals.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from protocol import SHANGHAI
from simulators.client import GatewayClient
from simulators.oracle import Oracle, Totals
from simulators.region import Region
from simulators.report import Stats, summary
from simulators.terminal import MsgidSource, SimTerminal

PROGRESS_EVERY_S = 5.0


@dataclasses.dataclass
class RunResult:
    """What a run produced: counters, the oracle (with its violations) and the summary table."""

    stats: Stats
    oracle: Oracle
    table: str

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


def today() -> str:
    """The Asia/Shanghai business day now, YYYYMMDD."""
    return datetime.datetime.now(tz=SHANGHAI).strftime("%Y%m%d")


class Runner:
    """Holds one SimTerminal per terminal (lazily) and the run's oracle and counters."""

    def __init__(self, region: Region, url: str | None = None) -> None:
        self.region = region
        self.url = url or region.gateway_url
        keys_client = GatewayClient(self.url)
        try:
            self.keys = keys_client.keys()
        finally:
            keys_client.close()
        self.oracle = Oracle({code: region.allowance_fen(code) for code in region.institutions},
                             {code: i.monthly_cap_fen for code, i in region.institutions.items()})
        self.stats = Stats()
        self.msgids = MsgidSource()
        self.persons = {p.psn_no: p for p in region.persons}
        self.specs = {t.dev_no: t for t in region.terminals}
        self._terminals: dict[str, SimTerminal] = {}
        self._settled: dict[int, tuple[str, str, str]] = {}

    def terminal(self, dev_no: str) -> SimTerminal:
        """The simulated POS for `dev_no`, created (not yet signed in) on first use."""
        if dev_no not in self._terminals:
            self._terminals[dev_no] = SimTerminal(self.specs[dev_no], self.region, GatewayClient(self.url),
                                                  self.keys, self.oracle, self.stats, self.msgids)
        return self._terminals[dev_no]

    def one_per_institution(self) -> dict[str, SimTerminal]:
        """One terminal for each institution that has any (for 3201)."""
        chosen: dict[str, SimTerminal] = {}
        for spec in self.region.terminals:
            chosen.setdefault(spec.institution, self.terminal(spec.dev_no))
        return chosen

    def apply(self, intent: dict[str, Any]) -> None:
        """Carry out one intent (unknown terminals or persons are a trace/region mismatch)."""
        if intent["kind"] == "cancel":
            earlier = self._settled.pop(intent["of_seq"], None)
            if earlier is not None:
                dev_no, setl_id, psn_no = earlier
                self.terminal(dev_no).cancel(setl_id, psn_no)
            return
        if intent["dev_no"] not in self.specs or intent["psn_no"] not in self.persons:
            raise KeyError(f"intent {intent['seq']}: terminal or person not in this region")
        setlinfo = self.terminal(intent["dev_no"]).settle(intent, self.persons[intent["psn_no"]])
        if setlinfo is not None:
            self._settled[intent["seq"]] = (intent["dev_no"], setlinfo["setl_id"], setlinfo["psn_no"])

    def baseline(self, stmt_date: str) -> dict[str, Totals]:
        """The gateway's 3201 totals per institution before the run (history from earlier runs)."""
        found: dict[str, Totals] = {}
        for code, terminal in self.one_per_institution().items():
            answer = terminal.totals(stmt_date, Totals())
            if answer is not None:
                gw = answer[1]
                found[code] = Totals(gw["setl_cnt"], gw["medfee_sumamt"], gw["fund_pay_sumamt"], gw["psn_cash_pay"])
        return found

    def reconcile(self, stmt_date: str, baseline: dict[str, Totals]) -> None:
        """3201 per institution: baseline + the oracle's standing totals must balance."""
        for code, terminal in self.one_per_institution().items():
            if code not in baseline:
                self.oracle.violation(f"3201 {code}: no baseline (refused at start)")
                continue
            expected = baseline[code].plus(self.oracle.standing_totals(code, stmt_date))
            answer = terminal.totals(stmt_date, expected)
            if answer is None:
                self.oracle.violation(f"3201 {code}: refused at the end")
            else:
                self.oracle.on_totals(code, expected, *answer)

    def close(self) -> None:
        """Close every terminal's connection."""
        for terminal in self._terminals.values():
            terminal.client.close()


def run(region: Region, intents: Iterable[dict[str, Any]], url: str | None = None, speed: float = 1.0,
        progress: TextIO | None = sys.stderr) -> RunResult:
    """Send `intents` at their offsets (divided by `speed`), then reconcile with 3201.

    Raises:
        OSError: the gateway is unreachable.
    """
    runner = Runner(region, url)
    stmt_date = today()
    baseline = runner.baseline(stmt_date)
    started = time.monotonic()
    next_progress = started + PROGRESS_EVERY_S
    try:
        for intent in intents:
            delay_s = started + intent["t_s"] / speed - time.monotonic()
            if delay_s > 0:
                time.sleep(delay_s)
            runner.apply(intent)
            if progress is not None and time.monotonic() >= next_progress:
                next_progress += PROGRESS_EVERY_S
                print(runner.stats.progress_line(time.monotonic() - started, len(runner.oracle.violations)),
                      file=progress, flush=True)
        if today() == stmt_date:
            runner.reconcile(stmt_date, baseline)
    finally:
        runner.close()
    kinds = {code: i.kind for code, i in region.institutions.items()}
    return RunResult(runner.stats, runner.oracle, summary(runner.stats, runner.oracle, kinds))
