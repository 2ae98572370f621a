"""Budget alerts: exactly one per (budget, period, threshold), signed webhook + log topic.

Where the crossing check runs: a separate alerter loop in each process that runs
a processor (``meterline.serve``), reading ``usage_running_totals`` every
``interval_s``, NOT a step of the processor's checkpoint order. Why:

- the running totals are exactly once already (filled by the processor's one
  INSERT through materialized views, deduplicated with it), so reading them
  after the fact sees each committed batch exactly once, however often a
  processor was killed, replayed or rebalanced, and whichever processor wrote it;
- a step inside the batch would either delay the offset commit by webhook I/O or
  run after it, where a SIGKILL between commit and check loses the trigger (the
  batch is never read again); a loop over state has no trigger to lose;
- it keeps the processor (the working layer) free of the read side's budgets.

Delay bound (crossing event ingested -> first webhook attempt): the processor's
batch wait (``METERLINE_BATCH_MAX_WAIT_S``, 0.5 s) + its INSERT + at most one
``interval_s`` (1 s) + one tick's reads and the claim INSERT. After a crash of the
whole process, add the restart: the first tick of the new process resumes every
claimed alert whose delivery was not finished.

Exactly once: the identity is claimed in ClickHouse (``AlertStore.claim``, a
dedup token per identity); only the claim's winner delivers. Delivery itself is
at least once (a crash after the receiver's 2xx but before the log row re-sends
at start), with the same ``webhook-id`` every time, which is what Standard
Webhooks receivers deduplicate on.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import httpx
import orjson

from core.errors import MeterlineError
from core.log.base import CONTENT_TYPE_HEADER, STRUCTURED_CONTENT_TYPE, LogProducer, OutMessage
from query.alert_store import (
    DELIVERED,
    FAILED,
    FINAL,
    LOG,
    RETRYING,
    SKIPPED,
    WEBHOOK,
    Alert,
    AlertStore,
    Delivery,
    alert_id,
)
from query.budget_store import Budget, Budgets, decimal_text
from query.running_totals import Period, period_of
from query.webhooks import Endpoints, send
from sinks.base import quote

log = logging.getLogger(__name__)

EVENT_TYPE = "io.meterline.alert.budget"
SOURCE = "/meterline/alerts"
# A period that ended less than this ago is still checked: its last events may be
# in the batch in flight at midnight. Longer-late events alert nothing (documented).
GRACE = timedelta(hours=1)
# A claim of another alerter unfinished for this long: its process is gone; take over.
TAKEOVER_AFTER_S = 300.0
MAX_DELAY_S = 600.0
_CHUNK = 100  # budgets per running-totals query


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ts(moment: datetime) -> str:
    return f"toDateTime({int(moment.timestamp())}, 'UTC')"


def alert_event(
    budget: Budget, period: Period, threshold: int, used: Decimal, now: datetime
) -> bytes:
    """The CloudEvent of one alert, fixed at the claim: every delivery sends these bytes."""
    identity = alert_id(budget.tenant, budget.id, period.start, threshold)
    data = {
        "tenant": budget.tenant,
        "budget_id": budget.id,
        "subject": budget.subject or None,
        "feature": budget.feature or None,
        "model": budget.model or None,
        "period": budget.period,
        "period_start": _rfc3339(period.start),
        "period_end": _rfc3339(period.resets_at),
        "metric": budget.metric,
        "mode": budget.mode,
        "amount": decimal_text(budget.amount),
        "threshold": threshold,
        "threshold_amount": decimal_text(budget.amount * threshold / 100),
        "used": decimal_text(used),
        "detected_at": _rfc3339(now),
    }
    event: dict[str, object] = {
        "specversion": "1.0",
        "id": identity,
        "source": SOURCE,
        "type": EVENT_TYPE,
        "time": _rfc3339(now),
        "datacontenttype": "application/json",
        "data": data,
    }
    if budget.subject:
        event["subject"] = budget.subject
    return orjson.dumps(event)


@dataclass(order=True)
class _Job:
    due: float
    seq: int
    alert: Alert = field(compare=False)
    channel: str = field(compare=False)
    attempt: int = field(compare=False)


class Deliverer:
    """Sends one alert on one channel and writes the delivery log row."""

    def __init__(
        self,
        store: AlertStore,
        endpoints: Endpoints,
        producer: LogProducer | None,
        *,
        max_attempts: int = 8,
        retry_base_s: float = 1.0,
    ) -> None:
        self.store = store
        self.endpoints = endpoints
        self.producer = producer
        self.max_attempts = max_attempts
        self.retry_base_s = retry_base_s
        self._client = httpx.Client(follow_redirects=False)

    def retry_delay(self, attempt: int) -> float:
        """After attempt n (1-based): base, 2 x base, 4 x base, ... at most 10 min."""
        return float(min(self.retry_base_s * 2 ** (attempt - 1), MAX_DELAY_S))

    def attempt(
        self, alert: Alert, channel: str, attempt: int, by_replay: bool = False
    ) -> Delivery:
        """One try; the row written says what happened (``retrying`` when another is due)."""
        now = datetime.now(UTC)
        if channel == WEBHOOK:
            target = self.endpoints.get(alert.tenant)
            if target is None:
                row = Delivery(
                    alert.tenant,
                    alert.alert_id,
                    channel,
                    attempt,
                    SKIPPED,
                    0,
                    "no webhook endpoint for this tenant",
                    "",
                    now,
                    by_replay,
                )
                self.store.record(row)
                return row
            sent = send(self._client, target, alert.alert_id, alert.event)
            ok, status, error, where = sent.ok, sent.status, sent.error, target.url
        else:
            assert self.producer is not None
            where = self.producer.topic
            status = 0
            try:
                self.producer.publish_sync(
                    [
                        OutMessage(
                            alert.alert_id.encode(),
                            alert.event,
                            (
                                (CONTENT_TYPE_HEADER, STRUCTURED_CONTENT_TYPE),
                                ("meterline-tenant", alert.tenant.encode()),
                            ),
                        )
                    ]
                )
                ok, error = True, ""
            except Exception as exc:
                ok, error = False, f"{type(exc).__name__}: {exc}"[:500]
        if ok:
            outcome = DELIVERED
        elif by_replay or attempt >= self.max_attempts:
            outcome = FAILED
        else:
            outcome = RETRYING
        row = Delivery(
            alert.tenant,
            alert.alert_id,
            channel,
            attempt,
            outcome,
            status,
            error,
            where,
            datetime.now(UTC),
            by_replay,
        )
        self.store.record(row)
        return row

    def close(self) -> None:
        self._client.close()


class Alerter:
    """The crossing check and the delivery queue of one process (see the module doc)."""

    def __init__(
        self,
        budgets: Budgets,
        store: AlertStore,
        deliverer: Deliverer,
        timezone: str,
        *,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.budgets = budgets
        self.store = store
        self.deliverer = deliverer
        self.zone = ZoneInfo(timezone)
        self.interval_s = interval_s
        self.clock = clock
        # One id per process run: a restarted process is a new claimant, so the
        # first tick resumes the unfinished deliveries of the one that died.
        self.claimant = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self._known: set[str] = set()  # alert ids claimed (by anyone): a cache, never the truth
        self._jobs: list[_Job] = []
        self._queued: set[tuple[str, str]] = set()
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._last_takeover = 0.0

    @property
    def table(self) -> str:
        return f"{self.store.sink.database}.usage_running_totals"

    # --- the loops ----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Check every ``interval_s`` until ``stop``; deliveries run on their own thread."""
        sender = threading.Thread(
            target=self._deliver_loop, args=(stop,), name="alerts-delivery", daemon=True
        )
        sender.start()
        first = True
        while not stop.is_set():
            try:
                if first or self.clock() - self._last_takeover >= TAKEOVER_AFTER_S / 5:
                    self.resume(everything=first)
                    first = False
                self.tick()
            except (MeterlineError, OSError) as exc:
                # The store is away: nothing is claimed, the next tick tries again.
                log.warning("budget alert check failed, retried in %.1fs: %s", self.interval_s, exc)
            stop.wait(self.interval_s)
        with self._cv:
            self._cv.notify_all()
        sender.join(15)
        self.deliverer.close()

    def _deliver_loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            with self._cv:
                wait = self._jobs[0].due - self.clock() if self._jobs else 1.0
                if wait > 0:
                    self._cv.wait(min(wait, 1.0))
                    continue
                job = heapq.heappop(self._jobs)
            try:
                row = self.deliverer.attempt(job.alert, job.channel, job.attempt)
            except (MeterlineError, OSError) as exc:
                # The delivery log could not be written: try the job again later
                # (a receiver may then see the same webhook-id twice, as allowed).
                log.warning("alert %s: delivery log not written: %s", job.alert.alert_id, exc)
                self._push(
                    job.alert, job.channel, job.attempt, self.deliverer.retry_delay(job.attempt)
                )
                continue
            if row.outcome == RETRYING:
                self._push(
                    job.alert, job.channel, job.attempt + 1, self.deliverer.retry_delay(job.attempt)
                )
            else:
                with self._cv:
                    self._queued.discard((job.alert.alert_id, job.channel))
                if row.outcome == FAILED:
                    log.error(
                        "alert %s: %s delivery failed after %d attempts: %s",
                        job.alert.alert_id,
                        job.channel,
                        job.attempt,
                        row.error,
                    )

    def _push(self, alert: Alert, channel: str, attempt: int, delay: float = 0.0) -> None:
        with self._cv:
            self._queued.add((alert.alert_id, channel))
            heapq.heappush(
                self._jobs, _Job(self.clock() + delay, next(self._seq), alert, channel, attempt)
            )
            self._cv.notify_all()

    def _enqueue(self, alert: Alert, attempt_after: dict[str, int] | None = None) -> None:
        channels = [WEBHOOK] + ([LOG] if self.deliverer.producer is not None else [])
        for channel in channels:
            if (alert.alert_id, channel) in self._queued:
                continue
            if attempt_after is not None and channel not in attempt_after:
                continue
            self._push(alert, channel, (attempt_after or {}).get(channel, 1))

    # --- the crossing check -------------------------------------------------------------

    def tick(self, now: datetime | None = None) -> list[Alert]:
        """Claim every crossed threshold not claimed yet; queue the ones we won."""
        now = now or datetime.fromtimestamp(self.clock(), UTC)
        pending: list[tuple[Budget, Period, list[int]]] = []
        for budget in self.budgets.every_tenant():
            for period in self._periods(budget, now):
                open_ = [
                    t
                    for t in budget.thresholds
                    if alert_id(budget.tenant, budget.id, period.start, t) not in self._known
                ]
                if open_:
                    pending.append((budget, period, open_))
        won: list[Alert] = []
        for start in range(0, len(pending), _CHUNK):
            chunk = pending[start : start + _CHUNK]
            used = self._used(chunk)
            for (budget, period, thresholds), spent in zip(chunk, used, strict=True):
                crossed = [t for t in thresholds if spent * 100 >= budget.amount * t]
                won.extend(self._claim(budget, period, crossed, spent, now))
        return won

    def _periods(self, budget: Budget, now: datetime) -> list[Period]:
        current = period_of(budget.period, now, self.zone)
        previous = period_of(budget.period, current.start - timedelta(milliseconds=1), self.zone)
        # The previous period only just after it ended, and only if the budget (as it
        # is now) already stood then: a budget created today does not alert for
        # yesterday's spend.
        if now - previous.resets_at < GRACE and budget.changed_at < previous.resets_at:
            return [previous, current]
        return [current]

    def _used(self, chunk: list[tuple[Budget, Period, list[int]]]) -> list[Decimal]:
        selects = []
        for index, (budget, period, _) in enumerate(chunk):
            where = [
                f"tenant = {quote(budget.tenant)}",
                f"scope = {0 if budget.subject else 1}",
                f"subject = {quote(budget.subject)}",
                f"bucket >= {_ts(period.start)}",
                f"bucket < {_ts(period.resets_at)}",
            ]
            if budget.feature:
                where.append(f"feature = {quote(budget.feature)}")
            if budget.model:
                where.append(f"model = {quote(budget.model)}")
            column = "cost_usd" if budget.metric == "cost_usd" else "price_usd"
            selects.append(
                f"SELECT toUInt32({index}) AS i, sum({column}) AS used FROM {self.table} "
                f"WHERE {' AND '.join(where)}"
            )
        rows = self.store.sink.query_rows(" UNION ALL ".join(selects))
        used = [Decimal(0)] * len(chunk)
        for row in rows:
            used[int(row["i"])] = row["used"]
        return used

    def _claim(
        self, budget: Budget, period: Period, crossed: list[int], used: Decimal, now: datetime
    ) -> list[Alert]:
        if not crossed:
            return []
        ids = {t: alert_id(budget.tenant, budget.id, period.start, t) for t in crossed}
        exists = self.store.existing(budget.tenant, list(ids.values()))
        self._known.update(exists)
        won = []
        for threshold, identity in ids.items():
            if identity in exists:
                continue
            mine = Alert(
                budget.tenant,
                identity,
                budget.id,
                period.start,
                threshold,
                self.claimant,
                now,
                alert_event(budget, period, threshold, used, now),
            )
            winner = self.store.claim(mine)
            self._known.add(identity)
            if winner.claimant == self.claimant:
                log.info("budget %s crossed %d%% (alert %s)", budget.id, threshold, identity)
                self._enqueue(winner)
                won.append(winner)
        return won

    # --- resuming after a crash ---------------------------------------------------------

    def resume(self, everything: bool) -> int:
        """Queue unfinished deliveries: at start every one; later those of dead alerters."""
        self._last_takeover = self.clock()
        claims = self.store.recent()
        last = self.store.last_outcomes()
        now = datetime.now(UTC)
        queued = 0
        for alert in claims:
            self._known.add(alert.alert_id)
            todo: dict[str, int] = {}
            channels = [WEBHOOK] + ([LOG] if self.deliverer.producer is not None else [])
            for channel in channels:
                row = last.get((alert.alert_id, channel))
                finished = FINAL if channel == WEBHOOK else (DELIVERED, FAILED)
                if row is not None and row.outcome in finished:
                    continue
                if not everything:
                    active = row.at if row is not None else alert.created_at
                    if (
                        alert.claimant == self.claimant
                        or (now - active).total_seconds() < TAKEOVER_AFTER_S
                    ):
                        continue
                todo[channel] = row.attempt + 1 if row is not None else 1
            if todo:
                self._enqueue(alert, todo)
                queued += len(todo)
        if queued:
            log.warning("budget alerts: resumed %d unfinished deliveries", queued)
        return queued
