"""Invoice closing on the real engine (chDB): revisions, idempotency, rounding, currencies.

Rows are put into ``usage_events`` / ``billing_run_events`` directly (the processor's
own tests prove how they get there; tests/e2e/test_invoices.py runs the whole way).
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from query.invoices import (
    CSV_COLUMNS,
    InvalidPeriod,
    Invoices,
    Period,
    SourceConflict,
    UnknownRun,
    csv_rows,
    round_money,
)
from sinks.base import quote
from sinks.chdb_sink import ChdbEngine
from sinks.migrations import migrate

OCT = "2026-10"
OCT_MID = "2026-10-15 12:00:00.000"


@pytest.fixture()
def engine(tmp_path: Path) -> Iterator[ChdbEngine]:
    chdb = ChdbEngine(tmp_path / "db", "itest")
    migrate(chdb)
    yield chdb
    chdb.close()


def put(
    engine: ChdbEngine,
    table: str,
    *,
    id: str,
    subject: str = "acme",
    time: str = OCT_MID,
    type: str = "io.meterline.usage.tokens",
    model: str = "gpt-4o",
    price: str = "0",
    tokens: tuple[int, int] = (0, 0),
    charge: tuple[str, str] | None = None,
    book: str = "book-1",
    run: str | None = None,
    tenant: str = "default",
) -> None:
    amount, currency = charge or ("0", "")
    data = '{"data": {"description": "setup"}}' if charge else "{}"
    unit = "charge" if charge else "token"
    cols = (
        "tenant, id, source, type, subject, time, provider, model, feature, unit, input_tokens, "
        "output_tokens, charge_amount, charge_currency, price_usd, priced, price_book, data"
    )
    values = (
        f"{quote(tenant)}, {quote(id)}, '/app', {quote(type)}, {quote(subject)}, "
        f"toDateTime64({quote(time)}, 3, 'UTC'), 'openai', {quote(model)}, 'chat', "
        f"{quote(unit)}, {tokens[0]}, {tokens[1]}, {quote(amount)}, {quote(currency)}, "
        f"{quote(price)}, 1, {quote(book)}, {quote(data)}"
    )
    if run is not None:
        cols, values = "run, " + cols, f"{quote(run)}, " + values
    engine.run_sql(
        f"INSERT INTO itest.{table} ({cols}) SETTINGS async_insert = 0 VALUES ({values})", "CSV"
    )


def add_run(engine: ChdbEngine, run: str) -> None:
    engine.run_sql(
        f"INSERT INTO itest.billing_runs SETTINGS async_insert = 0 VALUES ({quote(run)}, "
        "'book-2', now64(3), now64(3), now64(3))",
        "CSV",
    )


def oct_period(timezone: str = "UTC") -> Period:
    return Period.parse(OCT, timezone)


def test_many_small_amounts_are_summed_exactly_then_rounded_once_half_even(
    engine: ChdbEngine,
) -> None:
    # 1,000 events of $0.004: rounding each line to cents would bill $0.00;
    # the exact sum is $4.000, which is what the customer owes.
    engine.run_sql(
        "INSERT INTO itest.usage_events (tenant, id, source, type, subject, time, model, unit, "
        "input_tokens, output_tokens, price_usd, priced, price_book) SETTINGS async_insert = 0 "
        "SELECT 'default', toString(number), '/app', 'io.meterline.usage.tokens', 'acme', "
        f"toDateTime64({quote(OCT_MID)}, 3, 'UTC'), 'gpt-4o', 'token', 10, 5, '0.004', 1, 'b' "
        "FROM numbers(1000)",
        "CSV",
    )
    invoices = Invoices(engine.sql)
    [inv] = invoices.close("default", oct_period())
    assert inv.revision == 1
    [line] = inv.lines
    assert (line.values.events, line.values.quantity) == (1000, Decimal(15000))
    assert (line.values.amount_exact, line.values.amount) == (Decimal(4), Decimal(4))
    assert line.unit_price == Decimal("0.000266666667")  # 4 / 15000, 12 places
    assert [(t.currency, t.amount) for t in inv.totals] == [("USD", Decimal("4.00"))]


def test_total_is_the_rounded_exact_sum_not_the_sum_of_rounded_lines(engine: ChdbEngine) -> None:
    # Three models at $0.005 each: rounded lines 0.00+0.00+0.00 (half-even) vs total 0.015 -> 0.02.
    for model in ("a", "b", "c"):
        put(engine, "usage_events", id=model, model=model, price="0.005")
    [inv] = Invoices(engine.sql).close("default", oct_period())
    assert [line.values.amount for line in inv.lines] == [Decimal("0.00")] * 3
    assert [(t.amount_exact, t.amount) for t in inv.totals] == [(Decimal("0.015"), Decimal("0.02"))]


def test_closing_twice_changes_nothing(engine: ChdbEngine) -> None:
    put(engine, "usage_events", id="a", price="1.25")
    invoices = Invoices(engine.sql)
    first = invoices.close("default", oct_period())
    second = invoices.close("default", oct_period())
    assert second == first
    assert engine.sql.scalar("SELECT count() FROM itest.invoice_lines") == 2  # line + total


def test_charges_are_their_own_lines_and_currencies_are_never_added(engine: ChdbEngine) -> None:
    put(engine, "usage_events", id="u", price="1.005")
    put(
        engine,
        "usage_events",
        id="c1",
        type="io.meterline.usage.charge",
        charge=("10.50", "EUR"),
        price="11.34",
    )
    put(
        engine,
        "usage_events",
        id="c2",
        type="io.meterline.usage.charge",
        charge=("1000", "JPY"),
        price="6.70",
    )
    [inv] = Invoices(engine.sql).close("default", oct_period())
    kinds = [(line.key.kind, line.key.currency, line.values.amount) for line in inv.lines]
    assert kinds == [
        ("usage", "USD", Decimal("1.00")),
        ("charge", "EUR", Decimal("10.50")),
        ("charge", "JPY", Decimal("1000")),
    ]
    assert inv.lines[1].key.description == "setup"
    assert {t.currency: t.amount for t in inv.totals} == {
        "EUR": Decimal("10.50"),
        "JPY": Decimal("1000"),
        "USD": Decimal("1.00"),
    }


def test_a_rebill_is_a_new_revision_with_exactly_the_difference(engine: ChdbEngine) -> None:
    put(engine, "usage_events", id="a", price="1.001", book="book-1")
    put(engine, "usage_events", id="b", model="gpt-4o-mini", price="0.5", book="book-1")
    invoices = Invoices(engine.sql)
    [first] = invoices.close("default", oct_period())
    # The run re-priced "a" only; "b" keeps its live price.
    add_run(engine, "fix")
    put(engine, "billing_run_events", id="a", price="0.750", book="book-2", run="fix")
    [second] = invoices.close("default", oct_period(), run="fix")
    assert (second.revision, second.run) == (2, "fix")
    [line] = second.lines
    assert (line.key.model, line.values.events, line.values.amount_exact) == (
        "gpt-4o",
        0,
        Decimal("-0.251"),
    )
    assert line.values.price_books == frozenset({"book-2"})
    # Revision 1 is untouched, and both revisions add up to the re-billed total.
    assert invoices.get("default", first.id) == first
    assert first.totals[0].amount + second.totals[0].amount == round_money(Decimal("1.25"), "USD")
    assert invoices.close("default", oct_period(), run="fix") == [second]
    with pytest.raises(SourceConflict, match="last closed from billing run 'fix'"):
        invoices.close("default", oct_period())


def test_period_is_the_calendar_month_in_the_billing_timezone(engine: ChdbEngine) -> None:
    # 2026-09-30 23:30 UTC is October 1st in Paris; 2026-10-31 23:30 UTC is November there.
    put(engine, "usage_events", id="in", time="2026-09-30 23:30:00.000", price="1")
    put(engine, "usage_events", id="out", time="2026-10-31 23:30:00.000", price="2")
    [inv] = Invoices(engine.sql).close("default", oct_period("Europe/Paris"))
    assert inv.totals[0].amount_exact == Decimal(1)
    assert inv.public()["period_start"] == "2026-09-30T22:00:00.000Z"
    assert inv.public()["period_end"] == "2026-10-31T23:00:00.000Z"


def test_one_customer_and_one_tenant_only(engine: ChdbEngine) -> None:
    put(engine, "usage_events", id="a", subject="acme", price="1")
    put(engine, "usage_events", id="b", subject="globex", price="2")
    put(engine, "usage_events", id="c", subject="acme", price="4", tenant="other")
    invoices = Invoices(engine.sql)
    [inv] = invoices.close("default", oct_period(), subject="globex")
    assert (inv.subject, inv.totals[0].amount_exact) == ("globex", Decimal(2))
    assert [i.subject for i in invoices.close("default", oct_period())] == ["acme", "globex"]
    assert [i.subject for i in invoices.list("other", OCT)] == []


def test_csv_has_every_line_and_a_total_row_per_currency(engine: ChdbEngine) -> None:
    put(engine, "usage_events", id="a", price="1.5")
    [inv] = Invoices(engine.sql).close("default", oct_period())
    rows = csv_rows([inv])
    assert [r[6] for r in rows] == ["usage", "total"]
    total = dict(zip(CSV_COLUMNS, rows[-1], strict=True))
    assert (total["currency"], total["amount"], total["amount_exact"]) == ("USD", "1.50", "1.5")


def test_bad_periods_and_runs_are_refused_with_the_reason(engine: ChdbEngine) -> None:
    with pytest.raises(InvalidPeriod, match="must be a month as YYYY-MM"):
        Period.parse("2026-13", "UTC")
    with pytest.raises(InvalidPeriod, match="is not over"):
        Period.parse("2026-11", "UTC", now_ms=1_795_000_000_000)
    with pytest.raises(InvalidPeriod, match="not an IANA timezone"):
        Period.parse(OCT, "Mars/Olympus")
    with pytest.raises(UnknownRun, match="no billing run 'nope'"):
        Invoices(engine.sql).close("default", oct_period(), run="nope")
