"""Invoices: close a customer's month into a frozen record, re-bills as revisions.

See docs/invoices.md.

``Invoices.close(tenant, period, run=None, subject=None)`` computes, per
customer, what the source says the month is worth (the live ``usage_events``,
or a billing run overlaid on them), subtracts what earlier revisions already
billed, and stores the difference as a new revision, if there is one:

1. Read the source's totals per line key (grouped in the engine, exact Decimal).
2. Read what the stored revisions add up to, per line key and per currency.
3. Difference = 1 - 2. All zero: nothing is written (closing twice changes
   nothing) and the latest revision is returned.
4. Round: a revision's rounded amount is round(all revisions' exact sum) minus
   what earlier revisions already rounded to, so the revisions' rounded amounts
   always add up to the correctly rounded exact total (no cent is lost or
   invented across revisions). Rounding is half-even, once, on the exact sum.
5. Write the revision as ONE INSERT (lines + totals) with the dedup token
   ``tenant/period/subject/revision``; then read the revision back: if another
   closer won the race for that number, its rows are the stored ones and this
   close starts again from step 1 (a crash after the INSERT loses nothing: the
   next close finds the revision and has no difference left to write).

Money stays Decimal from the engine (sent as text, never a float) to the file.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.errors import MeterlineError
from sinks.base import quote
from sinks.reader import SqlReader

CHARGE_TYPE = "io.meterline.usage.charge"
IMAGE_TYPE = "io.meterline.usage.image"
TOKEN_TYPE = "io.meterline.usage.tokens"
_PERIOD = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_ID = re.compile(r"^inv_[0-9a-f]{20}$")
_RETRIES = 3
_ZERO = Decimal(0)
_SCALE = Decimal("1e-12")  # the columns' Decimal(38, 12)

# ISO 4217 minor units that are not 2 (the default). A currency's invoice amounts
# are rounded to these; JPY has no cents, KWD has fils (3 places).
MINOR_UNITS = {
    **dict.fromkeys(
        [
            "BIF",
            "CLP",
            "DJF",
            "GNF",
            "ISK",
            "JPY",
            "KMF",
            "KRW",
            "PYG",
            "RWF",
            "UGX",
            "UYI",
            "VND",
            "VUV",
            "XAF",
            "XOF",
            "XPF",
        ],
        0,
    ),
    **dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], 3),
    **dict.fromkeys(["CLF", "UYW"], 4),
}


class InvoiceError(MeterlineError):
    """A close or read that cannot be done as asked; the message says why."""


class InvalidPeriod(InvoiceError):
    """The period is not YYYY-MM, or has not ended yet."""


class UnknownRun(InvoiceError):
    """No billing run of that name."""


class SourceConflict(InvoiceError):
    """Closing from the live tables after a billing run would undo the re-bill."""


class CloseRace(InvoiceError):
    """Other closers kept winning the race for the next revision number."""


def minor_units(currency: str) -> int:
    return MINOR_UNITS.get(currency, 2)


def round_money(amount: Decimal, currency: str) -> Decimal:
    """Half-even (banker's rounding) to the currency's minor units."""
    return amount.quantize(Decimal(1).scaleb(-minor_units(currency)), rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True, slots=True)
class Period:
    """A calendar month in a timezone: [start_ms, end_ms) in UTC epoch milliseconds."""

    name: str
    timezone: str
    start_ms: int
    end_ms: int

    @classmethod
    def parse(cls, name: str, timezone: str, now_ms: int | None = None) -> Period:
        match = _PERIOD.match(name)
        if not match:
            raise InvalidPeriod(f"period {name!r} must be a month as YYYY-MM, e.g. 2026-11")
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidPeriod(f"timezone {timezone!r} is not an IANA timezone name") from None
        year, month = int(match.group(1)), int(match.group(2))
        start = datetime(year, month, 1, tzinfo=zone)
        end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=zone)
        period = cls(name, timezone, _ms(start), _ms(end))
        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        # Closing a month that is still running would freeze a partial invoice and
        # bill the rest as a "re-bill" revision: finance closes after the month ends.
        if period.end_ms > now:
            raise InvalidPeriod(
                f"period {name} is not over: it ends at {iso_ms(period.end_ms)} ({timezone})"
            )
        return period


@dataclass(frozen=True, slots=True)
class LineKey:
    kind: str  # usage | charge
    type: str
    provider: str
    model: str
    feature: str
    unit: str
    description: str
    currency: str


@dataclass(slots=True)
class Amounts:
    """A line's numbers: the source's full values, or a stored sum, or a difference."""

    events: int = 0
    unpriced_events: int = 0
    quantity: Decimal = _ZERO
    input_tokens: int = 0
    output_tokens: int = 0
    amount_exact: Decimal = _ZERO
    amount: Decimal = _ZERO  # rounded (stored revisions only)
    price_books: frozenset[str] = frozenset()

    def minus(self, other: Amounts) -> Amounts:
        return Amounts(
            self.events - other.events,
            self.unpriced_events - other.unpriced_events,
            self.quantity - other.quantity,
            self.input_tokens - other.input_tokens,
            self.output_tokens - other.output_tokens,
            self.amount_exact - other.amount_exact,
            price_books=self.price_books,
        )

    def is_zero(self) -> bool:
        return not (
            self.events
            or self.unpriced_events
            or self.quantity
            or self.input_tokens
            or self.output_tokens
            or self.amount_exact
        )


@dataclass(frozen=True, slots=True)
class Line:
    line: int
    key: LineKey
    values: Amounts
    unit_price: Decimal


@dataclass(frozen=True, slots=True)
class Total:
    currency: str
    amount_exact: Decimal
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Invoice:
    """One stored revision of one customer's period."""

    id: str
    tenant: str
    period: str
    timezone: str
    period_start_ms: int
    period_end_ms: int
    subject: str
    revision: int
    run: str
    closed_at_ms: int
    closed_by: str
    lines: tuple[Line, ...]
    totals: tuple[Total, ...]

    @property
    def price_books(self) -> list[str]:
        return sorted({b for line in self.lines for b in line.values.price_books})

    def public(self) -> dict[str, Any]:
        """The API's JSON: money as decimal strings, times as UTC RFC 3339 ms."""
        return {
            "id": self.id,
            "period": self.period,
            "timezone": self.timezone,
            "period_start": iso_ms(self.period_start_ms),
            "period_end": iso_ms(self.period_end_ms),
            "subject": self.subject,
            "revision": self.revision,
            "run": self.run or None,
            "closed_at": iso_ms(self.closed_at_ms),
            "closed_by": self.closed_by,
            "price_books": self.price_books,
            "lines": [_line_public(line) for line in self.lines],
            "totals": [
                {
                    "currency": t.currency,
                    "amount": rounded_text(t.amount, t.currency),
                    "amount_exact": money_text(t.amount_exact),
                }
                for t in self.totals
            ],
        }


CSV_COLUMNS = (
    "invoice_id",
    "period",
    "subject",
    "revision",
    "run",
    "line",
    "kind",
    "type",
    "provider",
    "model",
    "feature",
    "unit",
    "description",
    "currency",
    "events",
    "unpriced_events",
    "quantity",
    "input_tokens",
    "output_tokens",
    "unit_price",
    "amount",
    "amount_exact",
    "price_books",
)


def csv_cell(text: str) -> str:
    """``text`` safe for a spreadsheet cell.

    A subject or description like "=HYPERLINK(...)" would run as a formula in the
    spreadsheet finance opens (CSV injection): it gets a leading ``'``. A negative
    amount (a re-bill's difference) stays a number.
    """
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        try:
            Decimal(text)
        except InvalidOperation:
            return "'" + text
    return text


def csv_rows(invoices: Iterable[Invoice]) -> list[list[str]]:
    """Rows for CSV (lines, then one ``total`` row per currency), in CSV_COLUMNS order."""
    return [[csv_cell(cell) for cell in row] for row in _csv_rows(invoices)]


def _csv_rows(invoices: Iterable[Invoice]) -> list[list[str]]:
    out: list[list[str]] = []
    for inv in invoices:
        head = [inv.id, inv.period, inv.subject, str(inv.revision), inv.run]
        for line in inv.lines:
            p = _line_public(line)
            out.append(
                head + [str(p[name]) for name in CSV_COLUMNS[5:-1]] + [" ".join(p["price_books"])]
            )
        for n, total in enumerate(inv.totals, start=len(inv.lines) + 1):
            blank = [""] * 6
            out.append(
                [
                    *head,
                    str(n),
                    "total",
                    *[""] * 6,  # type, provider, model, feature, unit, description
                    total.currency,
                    *blank,
                    rounded_text(total.amount, total.currency),
                    money_text(total.amount_exact),
                    "",
                ]
            )
    return out


def _line_public(line: Line) -> dict[str, Any]:
    k, v = line.key, line.values
    return {
        "line": line.line,
        "kind": k.kind,
        "type": k.type,
        "provider": k.provider,
        "model": k.model,
        "feature": k.feature,
        "unit": k.unit,
        "description": k.description,
        "currency": k.currency,
        "events": v.events,
        "unpriced_events": v.unpriced_events,
        "quantity": money_text(v.quantity),
        "input_tokens": v.input_tokens,
        "output_tokens": v.output_tokens,
        "unit_price": money_text(line.unit_price),
        "amount": rounded_text(v.amount, k.currency),
        "amount_exact": money_text(v.amount_exact),
        "price_books": sorted(v.price_books),
    }


def money_text(value: Decimal) -> str:
    """Exact decimal text, never exponent form, trailing zeros trimmed ("0.0015", "-2")."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def rounded_text(value: Decimal, currency: str) -> str:
    """A rounded amount with exactly the currency's minor units ("12.30", "1000" for JPY)."""
    text = format(round_money(value, currency), "f")
    return text[1:] if text.startswith("-") and not Decimal(text) else text


def iso_ms(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _ms(moment: datetime) -> int:
    return int(moment.timestamp()) * 1000


def check_id(invoice_id: str) -> str:
    if not _ID.match(invoice_id):
        raise InvoiceError(f"invoice id {invoice_id!r} is invalid: must match {_ID.pattern}")
    return invoice_id


@dataclass
class _Billed:
    """What the stored revisions of one customer's period add up to."""

    lines: dict[LineKey, Amounts] = field(default_factory=dict)
    totals: dict[str, Amounts] = field(default_factory=dict)  # currency -> exact, rounded
    revision: int = 0
    run: str = ""


_LINE_COLUMNS = (
    "kind, type, provider, model, feature, unit, description, currency, events, unpriced_events, "
    "toString(quantity) AS quantity, input_tokens, output_tokens, toString(unit_price) AS "
    "unit_price, toString(amount_exact) AS amount_exact, toString(amount) AS amount, price_books"
)
_STORED_COLUMNS = (
    "tenant, period, timezone, toUnixTimestamp64Milli(period_start) AS start_ms, "
    "toUnixTimestamp64Milli(period_end) AS end_ms, subject, revision, invoice_id, run, line, "
    f"{_LINE_COLUMNS}, toUnixTimestamp64Milli(closed_at) AS closed_ms, closed_by"
)
_INSERT_COLUMNS = (
    "tenant, period, timezone, period_start, period_end, subject, revision, invoice_id, run, "
    "kind, line, type, provider, model, feature, unit, description, currency, events, "
    "unpriced_events, quantity, input_tokens, output_tokens, unit_price, amount_exact, amount, "
    "price_books, closed_at, closed_by"
)


class Invoices:
    """Close periods into ``invoice_lines`` and read them back, over one engine connection."""

    def __init__(self, sink: SqlReader) -> None:
        self.sink = sink
        # One close at a time in this process: the read-diff-write of a revision
        # is not atomic; across processes the dedup token settles the race (step 5).
        self._lock = threading.Lock()

    @property
    def table(self) -> str:
        return f"{self.sink.database}.invoice_lines"

    # -- closing ---------------------------------------------------------------------------

    def close(
        self,
        tenant: str,
        period: Period,
        *,
        run: str | None = None,
        subject: str | None = None,
        closed_by: str = "cli",
    ) -> list[Invoice]:
        """Close ``period`` per customer; return each customer's latest revision.

        ``run``: close from that billing run (its events replace the live ones of
        the same identity; live events it did not replay stay). ``subject``: one
        customer only.
        """
        with self._lock:
            if run is not None:
                self._check_run(run)
            current = self._source(tenant, period, run, subject)
            subjects = sorted(set(current) | set(self._invoiced_subjects(tenant, period, subject)))
            out = []
            for name in subjects:
                out.append(
                    self._close_one(
                        tenant, period, name, run or "", current.get(name, {}), closed_by
                    )
                )
            return out

    def _close_one(
        self,
        tenant: str,
        period: Period,
        subject: str,
        run: str,
        current: dict[LineKey, Amounts],
        closed_by: str,
    ) -> Invoice:
        for _attempt in range(_RETRIES):
            # Step 2.
            billed = self._billed(tenant, period.name, subject)
            if billed.revision and billed.run and not run:
                raise SourceConflict(
                    f"{subject!r} {period.name} was last closed from billing run "
                    f"{billed.run!r} (revision {billed.revision}); closing from the live tables "
                    "would undo that re-bill: close with --run (that run or a newer one)"
                )
            # Step 3.
            revision = self._revision(tenant, period, subject, run, current, billed, closed_by)
            if revision is None:
                latest = self.get_revision(tenant, period.name, subject, billed.revision)
                assert latest is not None  # a customer with nothing billed has a difference
                return latest
            # Step 5. A crash here: the next close finds no revision, and writes it.
            self._write(revision)
            stored = self.get_revision(tenant, period.name, subject, revision.revision)
            if stored is not None and stored.id == revision.id:
                return stored
            # Another closer stored this revision number first: diff again against it.
        raise CloseRace(
            f"could not close {subject!r} {period.name}: other closers won {_RETRIES} times"
        )

    def _revision(
        self,
        tenant: str,
        period: Period,
        subject: str,
        run: str,
        current: dict[LineKey, Amounts],
        billed: _Billed,
        closed_by: str,
    ) -> Invoice | None:
        keys = sorted(set(current) | set(billed.lines), key=_sort_key)
        lines: list[Line] = []
        exact_sum: dict[str, Decimal] = {}
        for key in keys:
            now = current.get(key, Amounts())
            before = billed.lines.get(key, Amounts())
            diff = now.minus(before)
            if diff.is_zero():
                continue
            # Step 4: this revision's rounded amount makes all revisions' rounded
            # amounts add up to the rounded exact total of the line.
            diff.amount = round_money(now.amount_exact, key.currency) - before.amount
            unit_price = (
                (now.amount_exact / now.quantity).quantize(_SCALE, ROUND_HALF_EVEN)
                if now.quantity
                else _ZERO
            )
            lines.append(Line(len(lines) + 1, key, diff, unit_price))
        if not lines:
            return None
        for line in lines:
            cur = line.key.currency
            exact_sum[cur] = exact_sum.get(cur, _ZERO) + line.values.amount_exact
        totals = []
        for currency in sorted(exact_sum):
            before = billed.totals.get(currency, Amounts())
            # Sum then round: the customer total is the exact sum rounded once, not
            # the sum of rounded lines (which drifts by up to half a cent per line).
            now_exact = before.amount_exact + exact_sum[currency]
            rounded = round_money(now_exact, currency) - before.amount
            totals.append(Total(currency, exact_sum[currency], rounded))
        revision = billed.revision + 1
        closed_at = time.time_ns() // 1_000_000
        content = repr((tenant, period.name, subject, revision, run, lines, totals, closed_at))
        digest = hashlib.sha256(content.encode()).hexdigest()[:20]
        return Invoice(
            f"inv_{digest}",
            tenant,
            period.name,
            period.timezone,
            period.start_ms,
            period.end_ms,
            subject,
            revision,
            run,
            closed_at,
            closed_by,
            tuple(lines),
            tuple(totals),
        )

    def _write(self, inv: Invoice) -> None:
        head = ", ".join(
            (
                quote(inv.tenant),
                quote(inv.period),
                quote(inv.timezone),
                _time(inv.period_start_ms),
                _time(inv.period_end_ms),
                quote(inv.subject),
                str(inv.revision),
                quote(inv.id),
                quote(inv.run),
            )
        )
        tail = f"{_time(inv.closed_at_ms)}, {quote(inv.closed_by)}"
        rows = []
        for line in inv.lines:
            k, v = line.key, line.values
            rows.append(
                f"({head}, {quote(k.kind)}, {line.line}, {quote(k.type)}, {quote(k.provider)}, "
                f"{quote(k.model)}, {quote(k.feature)}, {quote(k.unit)}, {quote(k.description)}, "
                f"{quote(k.currency)}, {v.events}, {v.unpriced_events}, {_dec(v.quantity)}, "
                f"{v.input_tokens}, {v.output_tokens}, {_dec(line.unit_price)}, "
                f"{_dec(v.amount_exact)}, {_dec(v.amount)}, "
                f"[{', '.join(quote(b) for b in sorted(v.price_books))}], {tail})"
            )
        for n, total in enumerate(inv.totals, start=len(inv.lines) + 1):
            rows.append(
                f"({head}, 'total', {n}, '', '', '', '', '', '', {quote(total.currency)}, 0, 0, "
                f"{_dec(_ZERO)}, 0, 0, {_dec(_ZERO)}, {_dec(total.amount_exact)}, "
                f"{_dec(total.amount)}, [], {tail})"
            )
        token = quote(f"invoice/{inv.tenant}/{inv.period}/{inv.subject}/{inv.revision}")
        # async_insert=0: the read-back below must see it; the token makes a rival
        # insert of the same revision number a no-op (schemas/sql/090_invoices.sql).
        self.sink.query_raw(
            f"INSERT INTO {self.table} ({_INSERT_COLUMNS}) "
            f"SETTINGS async_insert = 0, insert_deduplication_token = {token} "
            f"VALUES {', '.join(rows)}",
            "CSV",
        )

    # -- the source: live events, or a billing run over them -------------------------------

    def _check_run(self, run: str) -> None:
        found = self.sink.scalar(
            f"SELECT count() FROM {self.sink.database}.billing_runs WHERE run = {quote(run)}"
        )
        if not found:
            raise UnknownRun(f"no billing run {run!r} (meterline replay --run {run} makes one)")

    def _source(
        self, tenant: str, period: Period, run: str | None, subject: str | None
    ) -> dict[str, dict[LineKey, Amounts]]:
        """Step 1: per customer, per line key, the source's totals for the period."""
        db = self.sink.database
        where = (
            f"tenant = {quote(tenant)} AND time >= {_time(period.start_ms)} "
            f"AND time < {_time(period.end_ms)}"
        )
        if subject is not None:
            where += f" AND subject = {quote(subject)}"
        columns = (
            "subject, type, provider, model, feature, unit, charge_currency, charge_amount, "
            "price_usd, priced, input_tokens, output_tokens, images, quantity, price_book, data"
        )
        if run is None:
            events = f"SELECT {columns} FROM {db}.usage_events WHERE {where}"
        else:
            # The run's events replace the live events of the same identity; live
            # events it did not replay (outside its log range) keep their live price.
            name = quote(run)
            events = (
                f"SELECT {columns} FROM {db}.billing_run_events WHERE run = {name} AND {where} "
                f"UNION ALL SELECT {columns} FROM {db}.usage_events WHERE {where} "
                f"AND (source, id) NOT IN (SELECT source, id FROM {db}.billing_run_events "
                f"WHERE run = {name} AND tenant = {quote(tenant)})"
            )
        charge = quote(CHARGE_TYPE)
        rows = self.sink.query_rows(
            f"""
            SELECT subject, type, provider, model, feature, unit,
                   if(type = {charge}, 'charge', 'usage') AS kind,
                   if(type = {charge}, charge_currency, 'USD') AS currency,
                   if(type = {charge}, JSONExtractString(data, 'data', 'description'), '')
                       AS description,
                   count() AS n, countIf(priced = 0) AS unpriced,
                   toString(sum(multiIf(type = {charge}, toDecimal128(1, 12),
                       type = {quote(TOKEN_TYPE)},
                       toDecimal128(input_tokens + output_tokens, 12),
                       type = {quote(IMAGE_TYPE)}, toDecimal128(images, 12), quantity)))
                       AS qty,
                   toString(sum(input_tokens)) AS tokens_in,
                   toString(sum(output_tokens)) AS tokens_out,
                   toString(sum(if(type = {charge}, charge_amount, price_usd))) AS amt,
                   arraySort(groupUniqArray(price_book)) AS books
            FROM ({events})
            GROUP BY subject, type, provider, model, feature, unit, kind, currency, description
            """
        )
        out: dict[str, dict[LineKey, Amounts]] = {}
        for r in rows:
            out.setdefault(r["subject"], {})[_key(r)] = Amounts(
                int(r["n"]),
                int(r["unpriced"]),
                Decimal(r["qty"]),
                int(r["tokens_in"]),
                int(r["tokens_out"]),
                Decimal(r["amt"]),
                price_books=frozenset(r["books"]),
            )
        return out

    def _invoiced_subjects(self, tenant: str, period: Period, subject: str | None) -> list[str]:
        # A customer billed before but absent from the source now (a re-bill that
        # dropped their events) still needs a revision taking the amount back.
        where = f"tenant = {quote(tenant)} AND period = {quote(period.name)}"
        if subject is not None:
            where += f" AND subject = {quote(subject)}"
        rows = self.sink.query_rows(f"SELECT DISTINCT subject FROM {self.table} WHERE {where}")
        return [r["subject"] for r in rows]

    def _billed(self, tenant: str, period: str, subject: str) -> _Billed:
        rows = self._rows(
            f"tenant = {quote(tenant)} AND period = {quote(period)} AND subject = {quote(subject)}"
        )
        billed = _Billed()
        for r in rows:
            if r["revision"] > billed.revision:
                billed.revision, billed.run = int(r["revision"]), r["run"]
            values = _amounts(r)
            if r["kind"] == "total":
                into, key = billed.totals, r["currency"]
            else:
                into, key = billed.lines, _key(r)  # type: ignore[assignment]
            old = into.get(key, Amounts())
            into[key] = Amounts(
                old.events + values.events,
                old.unpriced_events + values.unpriced_events,
                old.quantity + values.quantity,
                old.input_tokens + values.input_tokens,
                old.output_tokens + values.output_tokens,
                old.amount_exact + values.amount_exact,
                old.amount + values.amount,
                old.price_books | values.price_books,
            )
        return billed

    # -- reading ---------------------------------------------------------------------------

    def _rows(self, where: str) -> list[dict[str, Any]]:
        return self.sink.query_rows(
            f"SELECT {_STORED_COLUMNS} FROM {self.table} WHERE {where} "
            "ORDER BY subject, revision, line LIMIT 1 BY tenant, period, subject, revision, line"
        )

    def get(self, tenant: str, invoice_id: str) -> Invoice | None:
        found = _invoices(
            self._rows(f"tenant = {quote(tenant)} AND invoice_id = {quote(check_id(invoice_id))}")
        )
        return found[0] if found else None

    def get_revision(self, tenant: str, period: str, subject: str, revision: int) -> Invoice | None:
        found = _invoices(
            self._rows(
                f"tenant = {quote(tenant)} AND period = {quote(period)} "
                f"AND subject = {quote(subject)} AND revision = {revision}"
            )
        )
        return found[0] if found else None

    def list(self, tenant: str, period: str, subject: str | None = None) -> list[Invoice]:
        """Every revision of the period (of one customer), by customer then revision."""
        where = f"tenant = {quote(tenant)} AND period = {quote(period)}"
        if subject is not None:
            where += f" AND subject = {quote(subject)}"
        return _invoices(self._rows(where))


def _invoices(rows: Sequence[dict[str, Any]]) -> list[Invoice]:
    grouped: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        grouped.setdefault((r["subject"], int(r["revision"])), []).append(r)
    out = []
    for group in grouped.values():
        r0 = group[0]
        lines = tuple(
            Line(int(r["line"]), _key(r), _amounts(r), Decimal(r["unit_price"]))
            for r in group
            if r["kind"] != "total"
        )
        totals = tuple(
            Total(r["currency"], Decimal(r["amount_exact"]), Decimal(r["amount"]))
            for r in group
            if r["kind"] == "total"
        )
        out.append(
            Invoice(
                r0["invoice_id"],
                r0["tenant"],
                r0["period"],
                r0["timezone"],
                int(r0["start_ms"]),
                int(r0["end_ms"]),
                r0["subject"],
                int(r0["revision"]),
                r0["run"],
                int(r0["closed_ms"]),
                r0["closed_by"],
                lines,
                totals,
            )
        )
    return out


def _key(r: dict[str, Any]) -> LineKey:
    return LineKey(
        r["kind"],
        r["type"],
        r["provider"],
        r["model"],
        r["feature"],
        r["unit"],
        r["description"],
        r["currency"],
    )


def _amounts(r: dict[str, Any]) -> Amounts:
    return Amounts(
        int(r["events"]),
        int(r["unpriced_events"]),
        Decimal(r["quantity"]),
        int(r["input_tokens"]),
        int(r["output_tokens"]),
        Decimal(r["amount_exact"]),
        Decimal(r["amount"]),
        frozenset(r["price_books"]),
    )


def _sort_key(key: LineKey) -> tuple[str, ...]:
    # Usage first, charges after; inside, by currency then the line's names.
    return (
        (key.kind != "usage" and "1") or "0",
        key.currency,
        key.type,
        key.provider,
        key.model,
        key.feature,
        key.unit,
        key.description,
    )


def _time(ms: int) -> str:
    return f"fromUnixTimestamp64Milli(toInt64({ms}), 'UTC')"


def _dec(value: Decimal) -> str:
    # A string literal cast by the column: exact, never through a float.
    return quote(format(value, "f"))


__all__ = [
    "CSV_COLUMNS",
    "CloseRace",
    "InvalidPeriod",
    "Invoice",
    "InvoiceError",
    "Invoices",
    "Period",
    "SourceConflict",
    "UnknownRun",
    "csv_rows",
    "minor_units",
    "round_money",
]
