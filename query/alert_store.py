"""Budget alerts in the store: claims and the delivery log (schemas/sql/080_alerts.sql).

Exactly one alert per (tenant, budget, period, threshold), decided by ClickHouse
state, not by any process's memory:

- ``alert_id`` is a hash of that identity, the same on every process, run and replay.
- ``claim`` writes ONE row with ``insert_deduplication_token = alert_id``: a second
  claim of the same alert (another alerter, or this one after a crash between the
  INSERT and its reply) is dropped by the engine's block dedup; then it reads the
  FIRST claim back. Only the alerter that reads its own claimant id delivers.
- After the dedup window (10,000 blocks) a late duplicate claim could be stored,
  but every reader still agrees on the first one (``ORDER BY created_at, claimant``),
  and the existence check before a claim stops that case long before.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sinks.base import quote
from sinks.reader import SqlReader

DELIVERED, RETRYING, FAILED, SKIPPED = "delivered", "retrying", "failed", "skipped"
FINAL = (DELIVERED, FAILED, SKIPPED)
WEBHOOK, LOG = "webhook", "log"
# Claims older than this are not resumed at start (a week of outage is an incident,
# and re-sending week-old alerts unasked would surprise more than help).
RESUME_DAYS = 7


def alert_id(tenant: str, budget_id: str, period_start: datetime, threshold: int) -> str:
    """The alert's identity as one string: its webhook-id and CloudEvent id."""
    text = f"{tenant}\x00{budget_id}\x00{int(period_start.timestamp())}\x00{threshold}"
    return "alr_" + hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Alert:
    tenant: str
    alert_id: str
    budget_id: str
    period_start: datetime
    threshold: int
    claimant: str
    created_at: datetime
    event: bytes  # the CloudEvent JSON: every delivery sends exactly these bytes


@dataclass(frozen=True, slots=True)
class Delivery:
    """One row of the delivery log."""

    tenant: str
    alert_id: str
    channel: str
    attempt: int
    outcome: str
    status: int
    error: str
    target: str
    at: datetime
    by_replay: bool = False

    def public(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "attempt": self.attempt,
            "outcome": self.outcome,
            "status": self.status or None,
            "error": self.error or None,
            "target": self.target,
            "at": _rfc3339(self.at),
            "by_replay": self.by_replay,
        }


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ms(moment: datetime) -> str:
    return f"fromUnixTimestamp64Milli({int(moment.timestamp() * 1000)})"


def _time(value: Any) -> datetime:
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


_ALERT_COLUMNS = "tenant, alert_id, budget_id, period_start, threshold, claimant, created_at, event"
_DELIVERY_COLUMNS = (
    "tenant, alert_id, channel, attempt, outcome, status, error, target, at, by_replay"
)
# Synchronous (chDB defaults async_insert=1: the read-back must see the row) and
# deduplicated by the token even on a single node (the table's window).
_CLAIM_SETTINGS = "async_insert = 0, insert_deduplicate = 1, insert_deduplication_token = "


class AlertStore:
    def __init__(self, sink: SqlReader) -> None:
        self.sink = sink
        self.alerts = f"{sink.database}.budget_alerts"
        self.deliveries = f"{sink.database}.alert_deliveries"

    def existing(self, tenant: str, ids: list[str]) -> set[str]:
        """Which of these alerts are claimed already (by anyone, ever)."""
        if not ids:
            return set()
        rows = self.sink.query_rows(
            f"SELECT DISTINCT alert_id FROM {self.alerts} WHERE tenant = {quote(tenant)} "
            f"AND alert_id IN ({', '.join(quote(i) for i in ids)})"
        )
        return {str(r["alert_id"]) for r in rows}

    def claim(self, alert: Alert) -> Alert:
        """Claim the alert; return the winning claim (``alert`` itself when we won)."""
        values = ", ".join(
            (
                quote(alert.tenant),
                quote(alert.alert_id),
                quote(alert.budget_id),
                f"toDateTime({int(alert.period_start.timestamp())}, 'UTC')",
                str(alert.threshold),
                quote(alert.claimant),
                _ms(alert.created_at),
                quote(alert.event.decode()),
            )
        )
        self.sink.query_raw(
            f"INSERT INTO {self.alerts} ({_ALERT_COLUMNS}) "
            f"SETTINGS {_CLAIM_SETTINGS}{quote(alert.alert_id)} VALUES ({values})",
            "CSV",
        )
        winner = self.get(alert.tenant, alert.alert_id)
        # Our own INSERT returned, so a claim exists; None would be a store bug.
        return winner if winner is not None else alert

    def get(self, tenant: str | None, alert: str) -> Alert | None:
        where = f"alert_id = {quote(alert)}"
        if tenant is not None:
            where += f" AND tenant = {quote(tenant)}"
        found = self._claims(where, limit=1)
        return found[0] if found else None

    def newest(self, tenant: str, limit: int = 100) -> list[Alert]:
        return self._claims(f"tenant = {quote(tenant)}", limit=limit)

    def recent(self) -> list[Alert]:
        """Every tenant's claims of the last ``RESUME_DAYS`` (start-up resume, takeover)."""
        return self._claims(
            f"created_at > now64(3, 'UTC') - INTERVAL {RESUME_DAYS} DAY", limit=100_000
        )

    def _claims(self, where: str, limit: int) -> list[Alert]:
        rows = self.sink.query_rows(
            f"SELECT {_ALERT_COLUMNS} FROM ("
            f"SELECT {_ALERT_COLUMNS} FROM {self.alerts} WHERE {where} "
            "ORDER BY created_at, claimant LIMIT 1 BY alert_id) "
            f"ORDER BY created_at DESC, alert_id LIMIT {int(limit)}"
        )
        return [
            Alert(
                tenant=r["tenant"],
                alert_id=r["alert_id"],
                budget_id=r["budget_id"],
                period_start=_time(r["period_start"]),
                threshold=int(r["threshold"]),
                claimant=r["claimant"],
                created_at=_time(r["created_at"]),
                event=str(r["event"]).encode(),
            )
            for r in rows
        ]

    def record(self, delivery: Delivery) -> None:
        """Append one row to the delivery log (one synchronous INSERT)."""
        values = ", ".join(
            (
                quote(delivery.tenant),
                quote(delivery.alert_id),
                quote(delivery.channel),
                str(delivery.attempt),
                quote(delivery.outcome),
                str(delivery.status),
                quote(delivery.error[:1000]),
                quote(delivery.target),
                _ms(delivery.at),
                "1" if delivery.by_replay else "0",
            )
        )
        self.sink.query_raw(
            f"INSERT INTO {self.deliveries} ({_DELIVERY_COLUMNS}) "
            f"SETTINGS async_insert = 0 VALUES ({values})",
            "CSV",
        )

    def history(self, tenant: str, alert: str) -> list[Delivery]:
        rows = self.sink.query_rows(
            f"SELECT {_DELIVERY_COLUMNS} FROM {self.deliveries} "
            f"WHERE tenant = {quote(tenant)} AND alert_id = {quote(alert)} ORDER BY at, channel"
        )
        return [_delivery(r) for r in rows]

    def last_outcomes(self, since_days: int = RESUME_DAYS) -> dict[tuple[str, str], Delivery]:
        """The newest delivery row per (alert_id, channel) of the recent past."""
        rows = self.sink.query_rows(
            f"SELECT {_DELIVERY_COLUMNS} FROM {self.deliveries} "
            f"WHERE at > now64(3, 'UTC') - INTERVAL {int(since_days)} DAY "
            "ORDER BY at DESC LIMIT 1 BY alert_id, channel"
        )
        return {(r["alert_id"], r["channel"]): _delivery(r) for r in rows}

    def states(self, tenant: str, ids: list[str]) -> dict[tuple[str, str], Delivery]:
        if not ids:
            return {}
        rows = self.sink.query_rows(
            f"SELECT {_DELIVERY_COLUMNS} FROM {self.deliveries} "
            f"WHERE tenant = {quote(tenant)} AND alert_id IN ({', '.join(quote(i) for i in ids)}) "
            "ORDER BY at DESC LIMIT 1 BY alert_id, channel"
        )
        return {(r["alert_id"], r["channel"]): _delivery(r) for r in rows}


def _delivery(r: dict[str, Any]) -> Delivery:
    return Delivery(
        tenant=r["tenant"],
        alert_id=r["alert_id"],
        channel=r["channel"],
        attempt=int(r["attempt"]),
        outcome=r["outcome"],
        status=int(r["status"]),
        error=r["error"],
        target=r["target"],
        at=_time(r["at"]),
        by_replay=bool(int(r["by_replay"])),
    )
