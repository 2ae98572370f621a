"""What each view shows, read through the query layer (the same code as ``GET /v1/usage``).

Usage numbers come from ``query.meters``: the filters are checked by its
``parse_query``, restricted by ``Principal.restrict`` (a portal token sees its
subject only) and turned into SQL by its ``build_sql``. Each panel keeps that SQL
and the equivalent ``/v1/usage`` URL, so every number on screen shows the query
behind it. Budgets, alerts and invoices come from their stores in ``query``.

Everything here is synchronous (engine calls); the routes run it in a thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from prometheus_client import REGISTRY
from starlette.datastructures import QueryParams

from dashboard.session import Viewer
from ingest.auth import ApiKey
from query.meters import build_sql, parse_query, shape_rows, window_end
from query.portal_tokens import Claims
from query.principal import Principal
from query.reader import Reader
from query.running_totals import period_of
from schemas.problems import Problem
from sinks.base import quote

WINDOWS = ("hour", "day")
STACKS = ("model", "provider")
FILTERS = ("subject", "model", "feature")
TOP_CUSTOMERS = 20
# Series drawn in the spend chart; the rest is summed into "other" so 200 models
# do not make 200 unreadable bands.
MAX_SERIES = 8


@dataclass(frozen=True)
class Filters:
    """The dashboard's filters, as given (validated by ``query.meters.parse_query``)."""

    start: str
    end: str
    window: str = "day"
    stack: str = "model"
    subject: str = ""
    model: str = ""
    feature: str = ""

    @classmethod
    def from_params(cls, params: QueryParams, today: date) -> tuple[Filters, list[Problem]]:
        problems: list[Problem] = []
        window = params.get("window") or "day"
        if window not in WINDOWS:
            problems.append(Problem("invalid", "window", f"must be one of {', '.join(WINDOWS)}"))
            window = "day"
        stack = params.get("stack") or "model"
        if stack not in STACKS:
            problems.append(Problem("invalid", "stack", f"must be one of {', '.join(STACKS)}"))
            stack = "model"
        return (
            cls(
                # Default: the last 7 days including today (billing timezone dates).
                start=params.get("from") or (today - timedelta(days=6)).isoformat(),
                end=params.get("to") or (today + timedelta(days=1)).isoformat(),
                window=window,
                stack=stack,
                subject=params.get("subject", ""),
                model=params.get("model", ""),
                feature=params.get("feature", ""),
            ),
            problems,
        )

    def params(self) -> dict[str, str]:
        """As the dashboard's own query string (empty filters left out)."""
        out = {"from": self.start, "to": self.end, "window": self.window, "stack": self.stack}
        out.update({name: getattr(self, name) for name in FILTERS if getattr(self, name)})
        return out

    def usage_params(
        self, window: str, group_by: tuple[str, ...], columns: tuple[str, ...]
    ) -> dict[str, str]:
        """The ``GET /v1/usage`` parameters of one panel."""
        out = {"from": self.start, "to": self.end, "window": window}
        if group_by:
            out["group_by"] = ",".join(group_by)
        out["columns"] = ",".join(columns)
        out.update({name: getattr(self, name) for name in FILTERS if getattr(self, name)})
        return out


@dataclass
class Panel:
    """One view's rows and the query behind them."""

    name: str
    title: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    sql: str = ""
    api: str = ""  # the same numbers from the API: GET <api> with an API key or portal token
    note: str = ""
    problems: list[Problem] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def principal_of(viewer: Viewer) -> Principal:
    """The query layer's principal for this viewer: a portal session keeps its restriction."""
    key = ApiKey(f"dashboard:{viewer.via}", viewer.tenant)
    if viewer.subject is None:
        return Principal(viewer.tenant, key)
    claims = Claims(
        token_id=viewer.token_id or "",
        tenant=viewer.tenant,
        subject=viewer.subject,
        features=viewer.features,
        expires_ms=viewer.expires_ms,
    )
    return Principal(viewer.tenant, key, claims)


def meter_panel(
    reader: Reader,
    viewer: Viewer,
    filters: Filters,
    name: str,
    title: str,
    *,
    window: str = "none",
    group_by: tuple[str, ...] = (),
    columns: tuple[str, ...] = ("events", "cost_usd", "price_usd"),
) -> Panel:
    """A ``GET /v1/usage`` query, run with that endpoint's own parser, restriction and SQL."""
    wanted = filters.usage_params(window, group_by, columns)
    panel = Panel(name, title, api="/v1/usage?" + urlencode(wanted))
    principal = principal_of(viewer)
    query, problems = parse_query(QueryParams(wanted), principal, reader.billing_timezone)
    if problems:
        panel.problems = problems
        return panel
    query = principal.restrict(query)
    panel.sql = build_sql(_database(reader), query)
    panel.rows = shape_rows(query, _rows(reader, panel.sql))
    return panel


def _database(reader: Reader) -> str:
    assert reader.sink is not None  # the routes answer 404 before any panel without a store
    return reader.sink.database


def _rows(reader: Reader, sql: str) -> list[dict[str, Any]]:
    assert reader.sink is not None
    return reader.sink.query_rows(sql)


def spend(reader: Reader, viewer: Viewer, filters: Filters) -> Panel:
    """Price over time, one series per model (or provider), stacked in the chart."""
    panel = meter_panel(
        reader,
        viewer,
        filters,
        "spend",
        f"Spend and usage over time, by {filters.stack}",
        window=filters.window,
        group_by=(filters.stack,),
        columns=("events", "cost_usd", "price_usd"),
    )
    stack = filters.stack
    # The table: one row per model (provider) over the whole period, summed exactly.
    summed: dict[str, dict[str, Any]] = {}
    for row in panel.rows:
        into = summed.setdefault(
            row[stack], {stack: row[stack], "events": 0, "cost_usd": Decimal(0),
                         "price_usd": Decimal(0)}
        )  # fmt: skip
        into["events"] += row["events"]
        into["cost_usd"] += Decimal(row["cost_usd"])
        into["price_usd"] += Decimal(row["price_usd"])
    ranked = sorted(summed, key=lambda k: (-summed[k]["price_usd"], k))
    shown = ranked[:MAX_SERIES]
    # The chart: every window of the period, empty ones as 0 (a gap is a real zero).
    x = _window_starts(panel.rows, filters, reader.billing_timezone)
    index = {moment: i for i, moment in enumerate(x)}
    series: dict[str, list[float]] = {_label(s): [0.0] * len(x) for s in shown}
    if len(ranked) > MAX_SERIES:
        series["other"] = [0.0] * len(x)
    for row in panel.rows:
        label = _label(row[stack]) if row[stack] in shown else "other"
        at = index.get(_epoch(row["window_start"]))
        if at is not None:
            # Floats for drawing only: every number printed on the page is exact Decimal text.
            series[label][at] += float(row["price_usd"])
    total = sum((r["price_usd"] for r in summed.values()), Decimal(0))
    panel.rows = [
        {**summed[k], "cost_usd": format(summed[k]["cost_usd"], "f"),
         "price_usd": format(summed[k]["price_usd"], "f")}
        for k in ranked
    ]  # fmt: skip
    panel.extra = {"x": x, "series": series, "total_price": format(total, "f")}
    return panel


MAX_POINTS = 2000


def _label(value: str) -> str:
    return value or "(none)"


def _epoch(rfc3339: str) -> int:
    return int(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp())


def _window_starts(rows: list[dict[str, Any]], filters: Filters, timezone: str) -> list[int]:
    """Every window start of [from, to), in the billing timezone, as epoch seconds."""
    zone = ZoneInfo(timezone)
    seen = sorted({_epoch(r["window_start"]) for r in rows})
    try:
        first = datetime.combine(date.fromisoformat(filters.start[:10]), time(), zone)
        last = datetime.combine(date.fromisoformat(filters.end[:10]), time(), zone)
    except ValueError:
        return seen
    out: list[int] = []
    moment = first.astimezone(UTC)
    while moment < last and len(out) < MAX_POINTS:
        out.append(int(moment.timestamp()))
        moment = window_end(moment, filters.window, zone)
    return sorted(set(out) | set(seen))


def top_customers(reader: Reader, viewer: Viewer, filters: Filters) -> Panel:
    panel = meter_panel(
        reader, viewer, filters, "customers", "Top customers", group_by=("subject",),
        columns=("events", "unpriced_events", "cost_usd", "price_usd"),
    )  # fmt: skip
    panel.rows.sort(key=lambda r: (-Decimal(r["price_usd"]), r["subject"]))
    if len(panel.rows) > TOP_CUSTOMERS:
        panel.note = f"the {TOP_CUSTOMERS} highest of {len(panel.rows)} customers by price"
        panel.rows = panel.rows[:TOP_CUSTOMERS]
    return panel


def by_feature(reader: Reader, viewer: Viewer, filters: Filters) -> Panel:
    panel = meter_panel(
        reader, viewer, filters, "features", "By feature", group_by=("feature",),
        columns=("events", "quantity", "cost_usd", "price_usd"),
    )  # fmt: skip
    panel.rows.sort(key=lambda r: (-Decimal(r["price_usd"]), r["feature"]))
    return panel


def margin(reader: Reader, viewer: Viewer, filters: Filters) -> Panel:
    """Cost (what providers charge) vs price (what the customer pays), per customer and model."""
    panel = meter_panel(
        reader, viewer, filters, "margin", "Cost vs price (margin) per customer and model",
        group_by=("subject", "model"), columns=("events", "cost_usd", "price_usd"),
    )  # fmt: skip
    for row in panel.rows:
        cost, price = Decimal(row["cost_usd"]), Decimal(row["price_usd"])
        row["margin_usd"] = format(price - cost, "f")
        # None, not 0 %: a row with no price (unpriced, or free) has no margin ratio.
        row["margin_pct"] = (
            format(((price - cost) / price * 100).quantize(Decimal("0.1")), "f") if price else None
        )
    panel.rows.sort(key=lambda r: (-Decimal(r["price_usd"]), r["subject"], r["model"]))
    return panel


def unpriced(reader: Reader, viewer: Viewer, filters: Filters) -> Panel:
    panel = meter_panel(
        reader, viewer, filters, "unpriced", "Unpriced events",
        group_by=("provider", "model", "type"), columns=("events", "unpriced_events"),
    )  # fmt: skip
    panel.rows = [r for r in panel.rows if r["unpriced_events"]]
    panel.note = (
        "stored and counted, but no price-book entry matched: add the model to a price "
        "book and re-bill (docs/pricing.md)"
    )
    return panel


def dead_letters() -> Panel:
    """Records sent to the DLQ by this process's processor, by reason (its Prometheus counter)."""
    panel = Panel(
        "dead_letters",
        "Dead letters",
        sql="meterline_processor_events_dead_lettered_total (this process, since it started)",
        api="/metrics",
        note="each letter, with its headers saying why: `meterline dlq list`, "
        "`meterline dlq show PARTITION:OFFSET`",
    )
    for metric in REGISTRY.collect():
        if metric.name != "meterline_processor_events_dead_lettered":
            continue
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.value:
                panel.rows.append({"reason": sample.labels["reason"], "letters": int(sample.value)})
    panel.rows.sort(key=lambda r: (-r["letters"], r["reason"]))
    return panel


LAG_MINUTES = 15


def lag(reader: Reader, viewer: Viewer) -> Panel:
    """Event time -> gateway (ingest) and gateway -> stored (processing), over the last minutes.

    From ``usage_events`` (the meters have no ingest times), bounded to the last
    15 minutes of ``processed_at`` so it reads a few thousand rows, not the month.
    """
    tenant = _quote(viewer.tenant)
    where = f"tenant = {tenant} AND processed_at >= now64(3) - INTERVAL {LAG_MINUTES} MINUTE"
    if viewer.subject is not None:
        where += f" AND subject = {_quote(viewer.subject)}"
    sql = (
        "SELECT count() AS events, "
        "toString(quantileExact(0.5)(dateDiff('millisecond', time, ingested_at))) "
        "AS ingest_p50_ms, "
        "toString(max(dateDiff('millisecond', time, ingested_at))) AS ingest_max_ms, "
        "toString(quantileExact(0.5)(dateDiff('millisecond', ingested_at, processed_at))) "
        "AS processing_p50_ms, "
        "toString(max(dateDiff('millisecond', ingested_at, processed_at))) AS processing_max_ms, "
        "toString(dateDiff('millisecond', max(processed_at), now64(3))) AS since_last_ms "
        f"FROM {_database(reader)}.usage_events WHERE {where}"
    )
    panel = Panel("lag", f"Ingest and processing lag (last {LAG_MINUTES} min)", sql=sql)
    rows = _rows(reader, sql)
    if rows and int(rows[0]["events"]):
        panel.rows = rows
    backlog = [
        (s.labels.get("partition", ""), int(s.value))
        for metric in REGISTRY.collect()
        if metric.name == "meterline_processor_lag_records"
        for s in metric.samples
    ]
    panel.extra = {"backlog": sorted(backlog)}
    return panel


def _quote(value: str) -> str:
    return quote(value)


def budgets(reader: Reader, viewer: Viewer, now: datetime) -> Panel:
    """Each budget with what its period has used so far (from the meters) and its state."""
    panel = Panel("budgets", "Budgets", api="/v1/budgets")
    if reader.budgets is None:
        return panel
    zone = ZoneInfo(reader.billing_timezone)
    for budget in reader.budgets.latest(viewer.tenant):
        if budget.deleted:
            continue
        if viewer.subject is not None and budget.subject != viewer.subject:
            continue  # a customer sees its own budgets, not the tenant's or others'
        period = period_of(budget.period, now, zone)
        filters = Filters(
            start=period.start.isoformat(),
            end=period.resets_at.isoformat(),
            subject=budget.subject,
            model=budget.model,
            feature=budget.feature,
        )
        used = meter_panel(reader, viewer, filters, "budget", "", columns=(budget.metric,))
        value = Decimal(used.rows[0][budget.metric]) if used.rows else Decimal(0)
        percent = value / budget.amount * 100 if budget.amount else Decimal(0)
        crossed = [t for t in budget.thresholds if percent >= t]
        state = "over" if percent >= 100 else (f"past {max(crossed)} %" if crossed else "ok")
        row = budget.public()
        row.update(
            used=format(value, "f"),
            percent=format(percent.quantize(Decimal("0.1")), "f"),
            state=state,
            period_start=period.start.isoformat(),
            sql=used.sql,
        )
        panel.rows.append(row)
    return panel


def alerts(reader: Reader, viewer: Viewer) -> Panel:
    panel = Panel("alerts", "Alerts sent", api="/v1/alerts")
    if viewer.subject is not None:
        panel.note = "not shown in a customer view: alerts are the tenant's operations"
        return panel
    if reader.alerts is None:
        return panel
    listed = reader.alerts.newest(viewer.tenant, limit=50)
    states = reader.alerts.states(viewer.tenant, [a.alert_id for a in listed]) if listed else {}
    for alert in listed:
        # The latest delivery on any channel (webhook, log): the newest says where it stands.
        sent = [d for (alert_id, _), d in states.items() if alert_id == alert.alert_id]
        delivery = max(sent, key=lambda d: d.at) if sent else None
        panel.rows.append(
            {
                "alert_id": alert.alert_id,
                "budget_id": alert.budget_id,
                "threshold": alert.threshold,
                "period_start": _when(alert.period_start),
                "created_at": _when(alert.created_at),
                "outcome": delivery.outcome if delivery else "pending",
                "target": delivery.target if delivery else "",
            }
        )
    return panel


def invoices(reader: Reader, viewer: Viewer, period: str) -> Panel:
    panel = Panel("invoices", f"Invoices {period}", api=f"/v1/invoices?period={period}")
    if reader.invoices is None:
        return panel
    for invoice in reader.invoices.list(viewer.tenant, period, viewer.subject):
        public = invoice.public()  # the API's own rounding (half-even to the currency)
        for total in public["totals"]:
            panel.rows.append(
                {
                    "id": invoice.id,
                    "subject": invoice.subject,
                    "revision": invoice.revision,
                    "run": invoice.run or "",
                    "closed_at": public["closed_at"],
                    "currency": total["currency"],
                    "amount": total["amount"],
                    "lines": len(invoice.lines),
                }
            )
    return panel


def this_month(now: datetime, timezone: str) -> str:
    return now.astimezone(ZoneInfo(timezone)).strftime("%Y-%m")


def utc_now() -> datetime:
    return datetime.now(UTC)


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
