"""Budgets in the store: versions in, current budgets and history out (docs/budgets.md).

Every change is one row of ``budget_versions`` (schemas/sql/070_budgets.sql),
written by one INSERT: a crash can lose a change the caller was not told
succeeded, never leave the current state and the history disagreeing.

The entitlement check does not read budgets per check: it answers from the
tenant's snapshot (query/running_totals.py), which reads ``latest`` once per
refresh, so a change made through another gateway process is seen there within
a refresh; ``on_change`` tells this process's snapshots at once.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sinks.base import quote
from sinks.reader import SqlReader

PERIODS = ("day", "month")
METRICS = ("price_usd", "cost_usd")
MODES = ("soft", "hard")


@dataclass(frozen=True, slots=True)
class Budget:
    """One version of a budget. ``subject``/``feature``/``model`` empty: not restricted."""

    tenant: str
    id: str
    version: int
    action: str
    subject: str
    feature: str
    model: str
    period: str
    metric: str
    amount: Decimal
    thresholds: tuple[int, ...]
    mode: str
    deleted: bool
    changed_at: datetime
    changed_by: str

    def applies_to(self, subject: str, feature: str, model: str | None) -> bool:
        """Whether usage of ``subject``/``feature`` (and ``model``, when named) counts here.

        A model-scoped budget applies only to a check that names that model: a
        check for a feature alone cannot know which model the next call will use.
        """
        return (
            (not self.subject or self.subject == subject)
            and (not self.feature or self.feature == feature)
            and (not self.model or self.model == model)
        )

    def public(self) -> dict[str, Any]:
        """The API's view: money as a decimal string, empty restrictions as null."""
        return {
            "id": self.id,
            "subject": self.subject or None,
            "feature": self.feature or None,
            "model": self.model or None,
            "period": self.period,
            "metric": self.metric,
            "amount": decimal_text(self.amount),
            "thresholds": list(self.thresholds),
            "mode": self.mode,
            "version": self.version,
            "changed_at": self.changed_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "changed_by": self.changed_by,
        }


def decimal_text(value: Decimal) -> str:
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def new_id() -> str:
    return "bgt_" + secrets.token_hex(8)


_COLUMNS = (
    "tenant, id, version, action, subject, feature, model, period, metric, amount, "
    "thresholds, mode, deleted, changed_at, changed_by"
)


class Budgets:
    """Read and write ``budget_versions`` through one engine connection."""

    def __init__(self, sink: SqlReader, on_change: Callable[[str], None] | None = None) -> None:
        self.sink = sink
        # Called with the tenant after each stored change: the entitlement
        # snapshots of this process stop answering from budgets read before it.
        self.on_change = on_change

    @property
    def table(self) -> str:
        return f"{self.sink.database}.budget_versions"

    def write(self, budget: Budget) -> None:
        """Store one version; this process's entitlement checks see it at once (``on_change``)."""
        values = ", ".join(
            (
                quote(budget.tenant),
                quote(budget.id),
                str(budget.version),
                quote(budget.action),
                quote(budget.subject),
                quote(budget.feature),
                quote(budget.model),
                quote(budget.period),
                quote(budget.metric),
                quote(format(budget.amount, "f")),
                "[" + ",".join(str(t) for t in budget.thresholds) + "]",
                quote(budget.mode),
                "1" if budget.deleted else "0",
                f"fromUnixTimestamp64Milli({int(budget.changed_at.timestamp() * 1000)})",
                quote(budget.changed_by),
            )
        )
        self.sink.query_raw(f"INSERT INTO {self.table} ({_COLUMNS}) VALUES ({values})", "CSV")
        if self.on_change is not None:
            self.on_change(budget.tenant)

    def latest(self, tenant: str, budget_id: str | None = None) -> list[Budget]:
        """The newest version of each budget (deleted ones included), uncached."""
        where = f"tenant = {quote(tenant)}"
        if budget_id is not None:
            where += f" AND id = {quote(budget_id)}"
        rows = self.sink.query_rows(
            f"SELECT {_COLUMNS} FROM {self.table} WHERE {where} "
            "ORDER BY id, version DESC LIMIT 1 BY id"
        )
        return [_budget(row) for row in rows]

    def every_tenant(self) -> list[Budget]:
        """Every tenant's live budgets, uncached (the alerter's read, once per tick)."""
        rows = self.sink.query_rows(
            f"SELECT {_COLUMNS} FROM {self.table} "
            "ORDER BY tenant, id, version DESC LIMIT 1 BY tenant, id"
        )
        return [b for b in map(_budget, rows) if not b.deleted]

    def history(self, tenant: str, budget_id: str) -> list[Budget]:
        rows = self.sink.query_rows(
            f"SELECT {_COLUMNS} FROM {self.table} "
            f"WHERE tenant = {quote(tenant)} AND id = {quote(budget_id)} ORDER BY version"
        )
        return [_budget(row) for row in rows]

    @staticmethod
    def next_version(previous: Budget | None) -> int:
        """Microseconds now, and always above the previous version (clocks step back)."""
        now = time.time_ns() // 1000
        return now if previous is None else max(now, previous.version + 1)

    @staticmethod
    def now() -> datetime:
        return datetime.fromtimestamp(time.time_ns() // 1_000_000 / 1000, UTC)


def _budget(row: dict[str, Any]) -> Budget:
    changed_at = datetime.fromisoformat(str(row["changed_at"])).replace(tzinfo=UTC)
    return Budget(
        tenant=row["tenant"],
        id=row["id"],
        version=int(row["version"]),
        action=row["action"],
        subject=row["subject"],
        feature=row["feature"],
        model=row["model"],
        period=row["period"],
        metric=row["metric"],
        amount=row["amount"],
        thresholds=tuple(int(t) for t in row["thresholds"]),
        mode=row["mode"],
        deleted=bool(int(row["deleted"])),
        changed_at=changed_at,
        changed_by=row["changed_by"],
    )
