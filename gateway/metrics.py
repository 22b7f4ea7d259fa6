"""Prometheus metrics of the gateway (SPEC section 12); the only module that imports prometheus_client.

Every label value is drawn from a closed set (infnos, ErrCode, kinds, grades, cert types, limit and
warning names); a value outside it is counted under "other", so a hostile client cannot grow the
series count and no label ever carries a person, card or msgid. Children for the known values are
bound once at start, so the hot path is a dict lookup and an increment. The "other" child of a
metric is made only when first needed: SPEC section 12 names the values `limit` and `code` take,
and a scrape of a healthy gateway shows exactly those.
"""

from __future__ import annotations

from typing import Any, Iterable, Protocol

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway.journal.stats import JournalObserver
from protocol import ErrCode

__all__ = ["CONTENT_TYPE", "GatewayMetrics", "JournalMetrics", "TxFactsLike"]

CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST

INFNOS = ("9001", "9002", "1101", "2101", "2102", "2103", "2206", "2207", "2208", "2601", "3201",
          "3202")
OUTCOMES = ("ok", "rejected", "error")
KINDS = ("pharmacy", "clinic", "hospital")
GRADES = ("A", "B", "C", "D", "E", "none")
CERT_TYPES = ("01", "03")
LIMITS = ("person_day", "institution_month", "person_year", "account_balance")
CUT_REASONS = ("DOCTOR_SUSPENDED", "NOT_IN_CATALOGUE", "RX_REQUIRED", "RESTRICTED_USE", "TRACE_CODE_MISSING")
WARNINGS = ("PERSON_DAY_NEAR_LIMIT", "PERSON_DAY_LIMIT_REACHED", "INSTITUTION_MONTH_NEAR_CAP",
            "INSTITUTION_MONTH_CAP_REACHED", *CUT_REASONS, "CATALOGUE_OVERRIDE", "PERSON_YEAR_CAP_REACHED")
# SPEC 12's three parts, then SPEC 13's: account, own-pay, self-pay-first and over the price cap (the
# own-pay parts let dashboards show SPEC 14's self-pay ratio without per-institution labels).
PARTS = ("medfee", "fund", "cash", "acct", "fulamt", "preselfpay", "overlmt")
SHED_REASONS = ("queue_time", "queue_closed", "in_flight", "connections", "draining", "journal_full")
OTHER = "other"

# Settlement latency spans fsync-bound group commits (a few ms) to a slow disk (up to a second).
REQUEST_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
FSYNC_BUCKETS_S = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
RECOVERY_BUCKETS_S = (0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class TxFactsLike(Protocol):
    """What `observe_tx` reads from the core's TxFacts (never per-person values)."""

    infno: str
    outcome: str
    err_code: str
    kind: str
    grade: str
    cert_type: str
    medfee_fen: int
    fund_fen: int
    cash_fen: int
    acct_fen: int
    fulamt_fen: int
    preselfpay_fen: int
    overlmt_fen: int
    cut_reasons: tuple[str, ...]
    bound_by: tuple[str, ...]
    warnings: tuple[str, ...]
    idempotent_replay: bool


# Settlements that move money (a 2101/2206 pre-settlement changes nothing).
SETTLING_INFNOS = frozenset({"2102", "2207"})


class _Children(dict):  # type: ignore[type-arg]
    """{label tuple or value: child}; a key not bound at start (one with "other") is made on first use."""

    def __init__(self, metric: Any) -> None:
        super().__init__()
        self.metric = metric

    def __missing__(self, key: Any) -> Any:
        # Only a combination with "other" may appear late: a known value missing here means a
        # call site forgot to map unknown values to "other", and must not grow the series.
        if OTHER not in (key if isinstance(key, tuple) else (key,)):
            raise KeyError(key)
        child = self.metric.labels(*key) if isinstance(key, tuple) else self.metric.labels(key)
        self[key] = child
        return child


def _bind(metric: Any, *label_sets: Iterable[str]) -> _Children:
    """Return the children for every combination of the given label values (see _Children)."""
    combos: list[tuple[str, ...]] = [()]
    for values in label_sets:
        combos = [combo + (v,) for combo in combos for v in values]
    children = _Children(metric)
    for combo in combos:
        children[combo[0] if len(combo) == 1 else combo] = metric.labels(*combo)
    return children


class GatewayMetrics:
    """All gateway metrics in one private CollectorRegistry (tests can build as many as they like)."""

    def __init__(self, version: str = "0.1.0") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests_metrics()
        self._business_metrics()
        self._journal_metrics()
        self._server_metrics(version)

    def _requests_metrics(self) -> None:
        reg = self.registry
        requests = Counter("yb_requests_total", "Transactions answered, by infno and outcome.",
                           ("infno", "outcome"), registry=reg)
        self._requests = _bind(requests, INFNOS, OUTCOMES)
        duration = Histogram("yb_request_duration_seconds",
                             "Time from a full request body to its answer being ready.",
                             ("infno",), buckets=REQUEST_BUCKETS_S, registry=reg)
        self._duration = _bind(duration, INFNOS)
        rejections = Counter("yb_rejections_total", "Answers with a non-empty err_code.",
                             ("err_code",), registry=reg)
        self._rejections = _bind(rejections, [code.wire for code in ErrCode])
        self._replays = Counter("yb_idempotent_replays_total",
                                "Retries answered with the stored response bytes.", registry=reg)

    def _business_metrics(self) -> None:
        reg = self.registry
        settlements = Counter("yb_settlements_total", "Settlements applied (2102/2207).",
                              ("kind", "grade", "cert_type"), registry=reg)
        self._settlements = _bind(settlements, KINDS, GRADES, CERT_TYPES)
        amount = Counter("yb_settlement_amount_fen_total", "Settled amounts in fen.",
                         ("part", "kind"), registry=reg)
        self._amount = _bind(amount, PARTS, KINDS)
        bound = Counter("yb_limit_bound_total", "Settlements where a limit bound (partial approval).",
                        ("limit",), registry=reg)
        self._bound = _bind(bound, LIMITS)
        cuts = Counter("yb_line_cuts_total", "Bill lines of applied settlements cut to own-pay, by reason.",
                       ("reason",), registry=reg)
        self._cuts = _bind(cuts, CUT_REASONS)
        self.catalogue_rows = Gauge("yb_catalogue_rows", "Catalogue rows held now (upserts included).",
                                    registry=reg)
        # The bound share by institution kind and grade (SPEC 14 dashboards).
        bound_by_kind = Counter("yb_limit_bound_by_kind_total",
                                "Settlements where a limit bound, by institution kind and grade.",
                                ("limit", "kind", "grade"), registry=reg)
        self._bound_by_kind = _bind(bound_by_kind, LIMITS, KINDS, GRADES)
        warnings = Counter("yb_warnings_total", "Warnings attached to answers.", ("code",),
                           registry=reg)
        self._warnings = _bind(warnings, WARNINGS)
        self.sessions_active = Gauge("yb_sessions_active", "Open terminal sessions.", registry=reg)

    def _journal_metrics(self) -> None:
        reg = self.registry
        self.journal_fsync_duration = Histogram(
            "yb_journal_fsync_duration_seconds", "Duration of one journal fsync.",
            buckets=FSYNC_BUCKETS_S, registry=reg)
        self.journal_batch_records = Histogram(
            "yb_journal_batch_records", "Records per group-commit batch.", buckets=BATCH_BUCKETS,
            registry=reg)
        self.journal_bytes_written = Counter("yb_journal_bytes_written_total",
                                             "Bytes appended to the journal.", registry=reg)
        self.recovery_duration = Histogram("yb_recovery_duration_seconds",
                                           "Time to rebuild state from snapshot and journal.",
                                           buckets=RECOVERY_BUCKETS_S, registry=reg)
        self.recovery_records = Gauge("yb_recovery_records",
                                      "Journal records replayed at the last start.", registry=reg)
        self.torn_tails = Counter("yb_journal_torn_tails_total",
                                  "Torn journal tails detected and discarded.", registry=reg)
        self.snapshots = Counter("yb_snapshots_total", "Snapshots written.", ("result",),
                                 registry=reg)

    def _server_metrics(self, version: str) -> None:
        reg = self.registry
        self.connections_open = Gauge("yb_connections_open",
                                      "Open HTTP connections on the data and admin listeners.",
                                      registry=reg)
        shed = Counter("yb_shed_requests_total", "Requests refused to protect the gateway.",
                       ("reason",), registry=reg)
        self._shed = _bind(shed, SHED_REASONS)
        self.ready = Gauge("yb_ready", "1 when /readyz answers 200.", registry=reg)
        info = Gauge("yb_build_info", "Build information.", ("version",), registry=reg)
        info.labels(version).set(1)

    def observe_tx(self, facts: TxFactsLike, duration_s: float) -> None:
        """Count one answered transaction from the core's facts."""
        infno = facts.infno if facts.infno in self._duration else OTHER
        self._requests[(infno, facts.outcome if facts.outcome in OUTCOMES else OTHER)].inc()
        self._duration[infno].observe(duration_s)
        if facts.err_code:
            self._rejection(facts.err_code)
        if facts.idempotent_replay:
            self._replays.inc()
        for code in facts.warnings:
            self._warnings[code if code in self._warnings else OTHER].inc()
        if facts.infno in SETTLING_INFNOS and facts.outcome == "ok" and not facts.idempotent_replay:
            self._settlement(facts)

    def _settlement(self, facts: TxFactsLike) -> None:
        kind = facts.kind if facts.kind in KINDS else OTHER
        grade = facts.grade or "none"
        grade = grade if grade in GRADES else OTHER
        cert = facts.cert_type if facts.cert_type in CERT_TYPES else OTHER
        self._settlements[(kind, grade, cert)].inc()
        self._amount[("medfee", kind)].inc(facts.medfee_fen)
        self._amount[("fund", kind)].inc(facts.fund_fen)
        self._amount[("cash", kind)].inc(facts.cash_fen)
        for part, fen in (("acct", facts.acct_fen), ("fulamt", facts.fulamt_fen),
                          ("preselfpay", facts.preselfpay_fen), ("overlmt", facts.overlmt_fen)):
            if fen:
                self._amount[(part, kind)].inc(fen)
        for reason in facts.cut_reasons:
            self._cuts[reason if reason in self._cuts else OTHER].inc()
        for limit in facts.bound_by:
            limit = limit if limit in LIMITS else OTHER
            self._bound[limit].inc()
            self._bound_by_kind[(limit, kind, grade)].inc()

    def _rejection(self, err_code: str) -> None:
        self._rejections[err_code if err_code in self._rejections else OTHER].inc()

    def observe_server_answer(self, infno: str, code: ErrCode, duration_s: float) -> None:
        """Count an answer the server made itself (413, 415, 429, 503, 500) before or after the core."""
        infno = infno if infno in self._duration else OTHER
        outcome = "error" if code.infcode == -1 else "rejected"
        self._requests[(infno, outcome)].inc()
        self._duration[infno].observe(duration_s)
        self._rejection(code.wire)

    def observe_shed(self, reason: str) -> None:
        """Count one request or connection refused to protect the gateway."""
        self._shed[reason if reason in self._shed else OTHER].inc()

    def render(self) -> bytes:
        """Return the text exposition of every metric."""
        return prometheus_client.generate_latest(self.registry)


class JournalMetrics(JournalObserver):
    """Feeds the journal's observations into the gateway's metrics (called on the trio thread)."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics

    def on_batch(self, records: int, bytes_written: int, fsync_s: float | None) -> None:
        self.metrics.journal_batch_records.observe(records)
        self.metrics.journal_bytes_written.inc(bytes_written)
        if fsync_s is not None:
            self.metrics.journal_fsync_duration.observe(fsync_s)

    def on_torn_tail(self, torn_bytes: int) -> None:
        self.metrics.torn_tails.inc()

    def on_recovery(self, duration_s: float, records_replayed: int) -> None:
        self.metrics.recovery_duration.observe(duration_s)
        self.metrics.recovery_records.set(records_replayed)
