"""Counters of a simulator run and the summary table printed at its end."""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping
from typing import Any

from simulators.oracle import Oracle

PERCENT = 100
MS_PER_S = 1000
# Sign-ins and reconciliation come in bursts (every terminal at the start, every institution and
# day at the end), so their latency is queueing behind the burst; counter traffic is reported apart.
BURST_INFNOS = frozenset({"9001", "3201", "3202"})


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, int(round(fraction * len(sorted_values) + 0.5)) - 1))
    return sorted_values[rank]


@dataclasses.dataclass
class Stats:
    """Answers counted by (infno, outcome) where outcome is "ok" or the err_code; latencies in s,
    of counter traffic and of the sign-in / reconciliation bursts apart."""

    outcomes: collections.Counter[tuple[str, str]] = dataclasses.field(default_factory=collections.Counter)
    latencies_s: list[float] = dataclasses.field(default_factory=list)
    burst_latencies_s: list[float] = dataclasses.field(default_factory=list)

    def count(self, infno: str, outcome: str, latency_s: float) -> None:
        """Count one answer."""
        self.outcomes[(infno, outcome)] += 1
        (self.burst_latencies_s if infno in BURST_INFNOS else self.latencies_s).append(latency_s)

    def settled(self) -> int:
        """2102 and 2207 answered ok (retries and the unseen answers of timed-out ones included)."""
        return self.outcomes[("2102", "ok")] + self.outcomes[("2207", "ok")]

    def progress_line(self, elapsed_s: float, violations: int) -> str:
        """One line for stderr during the run."""
        requests = sum(self.outcomes.values())
        rejected = sum(n for (_, outcome), n in self.outcomes.items() if outcome != "ok")
        return (f"yibao-sim: {elapsed_s:6.1f} s  requests {requests}  settled {self.settled()}  "
                f"rejected {rejected}  violations {violations}")


def summary(stats: Stats, oracle: Oracle, kinds: Mapping[str, str]) -> str:
    """The end-of-run table: outcomes per infno, reversals by outcome, money, self-pay ratio, bills
    per kind, latency.

    `kinds` maps institution code -> kind (pharmacy, clinic, hospital).
    """
    lines = ["infno  outcome                          count"]
    for (infno, outcome), n in sorted(stats.outcomes.items()):
        lines.append(f"{infno:6} {outcome:32} {n:6d}")
    standing = [s for s in oracle.settlements.values() if not s.cancelled]
    medfee = sum(s.medfee_sumamt for s in standing)
    fund = sum(s.fund_pay_sumamt for s in standing)
    cash = sum(s.psn_cash_pay for s in standing)
    acct = sum(s.acct_pay for s in standing)
    ratio = (cash + acct) * PERCENT / medfee if medfee else 0.0
    lines.append(f"standing settlements {len(standing)}  cancelled {len(oracle.settlements) - len(standing)}  "
                 f"reversed {len(oracle.reversed)}")
    for (oinfno, outcome), n in sorted(oracle.reversals.items()):
        lines.append(f"reversal of {oinfno} {outcome:25} {n:6d}")
    lines.append(f"medfee {medfee / 100:.2f} yuan  fund {fund / 100:.2f} yuan  account {acct / 100:.2f} yuan  "
                 f"cash {cash / 100:.2f} yuan  self-pay {ratio:.1f} %")
    lines.append(_who_pays_line(standing, oracle))
    by_kind: dict[str, list[int]] = collections.defaultdict(list)
    for s in standing:
        by_kind[kinds.get(s.institution, "?")].append(s.medfee_sumamt)
    for kind, bills in sorted(by_kind.items()):
        lines.append(f"average bill at {kind:9} {sum(bills) / len(bills) / 100:8.2f} yuan over {len(bills)} bills")
    lines.extend(oracle.v2.summary_lines())
    lines.append(_latency_line(stats.latencies_s, "counter requests"))
    lines.append(_latency_line(stats.burst_latencies_s, "sign-in and reconciliation requests"))
    lines.append(f"oracle violations {len(oracle.violations)}")
    lines.extend(f"  VIOLATION {v}" for v in oracle.violations)
    return "\n".join(lines)


def _who_pays_line(standing: list[Any], oracle: Oracle) -> str:
    """SPEC 13 at a glance: account bills, mutual aid paid and refused, the deductible and the cap."""
    deductible = sum(s.act_pay_dedc for s in standing)
    capped = sum(1 for start in oracle.starts.values() if start.pool_left_fen == 0)
    return (f"who pays: {sum(1 for s in standing if s.acct_pay)} bills from accounts, mutual aid paid "
            f"{oracle.mutual_aid['paid']} refused {oracle.mutual_aid['refused']} (otherwise "
            f"{oracle.mutual_aid['refused otherwise']}), deductible {deductible / 100:.2f} yuan, "
            f"{oracle.people_at_cap()} persons at the pooling cap at the end ({capped} at the start)")


def _latency_line(latencies_s: list[float], what: str) -> str:
    ordered = sorted(latencies_s)
    return (f"latency p50 {percentile(ordered, 0.50) * MS_PER_S:.1f} ms  "
            f"p99 {percentile(ordered, 0.99) * MS_PER_S:.1f} ms over {len(ordered)} {what}")
