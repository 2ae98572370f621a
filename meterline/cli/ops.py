"""``meterline verify`` and ``meterline replay``: checking and re-billing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.table import Table

from core.errors import MeterlineError
from meterline.cli._shared import console, err
from meterline.cli._shared import settings as _settings
from schemas.times import parse_ms

Instant = Annotated[
    str, typer.Option(help="RFC 3339 instant or a date (UTC), e.g. 2025-01-01T00:00:00Z")
]


def parse_instant(text: str) -> int:
    """RFC 3339 or YYYY-MM-DD (UTC midnight) -> epoch milliseconds."""
    try:
        return parse_ms(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an ISO 8601 / RFC 3339 instant") from None


def verify_command(
    from_: Annotated[str, typer.Option("--from", help="Start (event time), inclusive.")],
    to: Annotated[str, typer.Option("--to", help="End (event time), exclusive.")],
    repair_rollups: Annotated[
        bool,
        typer.Option(
            "--repair-rollups",
            help="Add to the hourly/daily tables what they lack against the minutes in the "
            "range, and to the running totals (usage_running_totals) what they lack against "
            "usage_events, then check again (stop the processors first: an INSERT landing "
            "meanwhile looks torn). Counts ABOVE their source are only reported.",
        ),
    ] = False,
) -> None:
    """Check the range before invoicing (exit 1 on any problem): meters recomputed from
    usage_events equal usage_meters, the hourly and daily meters (usage_meters_1h, _1d)
    equal the finer ones, the tenant-wide ones (usage_meters_1h_tenant, _1d_tenant) equal
    the minutes summed over subject, the budgets' running totals (usage_running_totals) equal
    usage_events per subject and tenant-wide, each (tenant, source, id) is stored once, and the
    dedupe index (usage_event_ids) holds every stored id."""
    settings = _settings()
    from meterline import runtime
    from processor.verify import (
        check_identities,
        repair_days,
        repair_hours,
        repair_running_totals,
        repair_tenant_days,
        repair_tenant_hours,
        verify,
        verify_days,
        verify_hours,
        verify_running_totals,
        verify_tenant_days,
        verify_tenant_hours,
    )

    start, end = parse_instant(from_), parse_instant(to)
    try:
        engine = runtime.build_engine(settings)
        try:
            if repair_rollups:
                # The start-up repair mends only the hours recent events fall in; this
                # mends any range, e.g. after an upgrade whose backfill (migrations
                # 120-123) was cut short by a crash. Hours before days: a correction
                # of an hour reaches its day through the day table's view. The running
                # totals (fed from usage_events, independent of the meters) after them:
                # e.g. a migration 130 backfill cut short by a crash.
                for repair in (
                    repair_hours,
                    repair_days,
                    repair_tenant_hours,
                    repair_tenant_days,
                    repair_running_totals,
                ):
                    repair(engine.sql, start, end)
            differences = verify(engine.sql, start, end)
            hours = verify_hours(engine.sql, start, end)
            hours += verify_days(engine.sql, start, end)
            hours += verify_tenant_hours(engine.sql, start, end)
            hours += verify_tenant_days(engine.sql, start, end)
            totals = verify_running_totals(engine.sql, start, end)
            identities = check_identities(engine.sql, start, end)
        finally:
            engine.close()
    except MeterlineError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    if identities.duplicated:
        examples = ", ".join(f"{t}/{s}/{i} x{n}" for (t, s, i), n in identities.duplicate_examples)
        console.print(
            f"[red]{identities.duplicated} event id(s) stored more than once in usage_events "
            f"(tenant/source/id x copies), e.g. {escape(examples)}[/red]"
        )
    if identities.unindexed:
        examples = ", ".join(f"{t}/{s}/{i}" for t, s, i in identities.unindexed_examples)
        console.print(
            f"[red]{identities.unindexed} stored event id(s) missing from the dedupe index "
            f"usage_event_ids (a re-send would be stored again), e.g. {escape(examples)}[/red]"
        )
    if hours:
        # GET /v1/usage answers whole hours and days from these tables: wrong there.
        examples = ", ".join(
            # The tenant-wide tables' groups have no subject: "*" there.
            f"{d.group['tenant']}/{d.group['window_start']}/{d.group.get('subject', '*')} "
            f"{d.column} "
            f"{d.in_meters} (minutes: {d.from_events})"
            for d in hours[:5]
        )
        console.print(
            f"[red]{len(hours)} difference(s) between usage_meters_1h and usage_meters, "
            "usage_meters_1d and usage_meters_1h, or usage_meters_1h_tenant/_1d_tenant and "
            "usage_meters (tenant/window/subject column coarser "
            f"(finer)), e.g. {escape(examples)}[/red]"
        )
    if totals:
        # The entitlement check and the budget alerts read this table: a group short of
        # its events under-enforces a hard budget and misses its alerts.
        examples = ", ".join(
            f"{d.group['tenant']}/{d.group['bucket']}/{d.group['subject'] or '*'}/"
            f"{d.group['feature']}/{d.group['model']} {d.column} {d.in_meters} "
            f"(events: {d.from_events})"
            for d in totals[:5]
        )
        console.print(
            f"[red]{len(totals)} difference(s) between the budgets' running totals "
            "(usage_running_totals) and usage_events (tenant/bucket/subject/feature/model "
            f"column totals (events); subject * is the tenant-wide row), e.g. "
            f"{escape(examples)}[/red]"
        )
    if not differences:
        if identities or hours or totals:
            raise typer.Exit(1)
        console.print(
            "[green]usage_meters matches usage_events exactly; every event id is stored once "
            "and indexed[/green]"
        )
        return
    table = Table(title=f"{len(differences)} difference(s)")
    for name in (
        "tenant",
        "window_start",
        "subject",
        "model",
        "feature",
        "column",
        "events",
        "meters",
    ):
        table.add_column(name)
    for d in differences:
        g = d.group
        table.add_row(
            g["tenant"],
            str(g["window_start"]),
            g["subject"],
            g["model"],
            g["feature"],
            d.column,
            str(d.from_events),
            str(d.in_meters),
        )
    console.print(table)
    raise typer.Exit(1)


def replay_command(
    from_: Annotated[str, typer.Option("--from", help="Start (log ingest time), inclusive.")],
    to: Annotated[str, typer.Option("--to", help="End (log ingest time), exclusive.")],
    run: Annotated[
        str, typer.Option(help="Name of the billing run to write (re-runs are no-ops).")
    ],
    price_book: Annotated[
        Path | None, typer.Option(help="Price book YAML to re-price with (default: catalog only).")
    ] = None,
) -> None:
    """Re-price a range of the log into a separate billing run; print old vs new per subject."""
    settings = _settings(price_book=price_book)
    from meterline import runtime
    from processor.replay import compare, plan, replay

    start, end = parse_instant(from_), parse_instant(to)
    try:
        book = runtime.build_price_book(settings)
        mappings = runtime.build_mappings(settings)
        admin = runtime.build_admin(settings)
        engine = runtime.build_engine(settings)
    except MeterlineError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    try:
        total = sum(e - s for s, e in plan(admin, settings.topic, start, end).values())
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err,
        ) as bar:
            task = bar.add_task(f"replaying into run {run!r}", total=total)
            result = replay(
                admin,
                engine,
                book,
                topic=settings.topic,
                run=run,
                from_ms=start,
                to_ms=end,
                progress=lambda n: bar.advance(task, n),
                mappings=mappings,
            )
        rows = compare(engine.sql, run)
    except MeterlineError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    finally:
        engine.close()
    console.print(
        f"run {run!r} with price book {result.price_book}: {result.records} records read, "
        f"{result.stored} events written, {result.duplicates} duplicates or already in the run, "
        f"{result.invalid} invalid, {result.unpriced} unpriced"
    )
    for reason, count in sorted(result.dead.items()):
        console.print(f"  {count} dead-lettered: {reason} (not re-published; see the live DLQ)")
    for letter in result.examples:
        record = letter.record
        console.print(
            f"  e.g. {record.topic}/{record.partition}/{record.offset}: {letter.reason}: "
            f"{escape(letter.detail[:200])}"
        )
    table = Table(title=f"billing run {run!r}: old (live) vs new, per subject")
    for name in (
        "subject",
        "events",
        "old cost_usd",
        "new cost_usd",
        "old price_usd",
        "new price_usd",
        "Δ price",
    ):
        table.add_column(name, justify="left" if name == "subject" else "right")
    for r in rows:
        table.add_row(
            r.subject,
            str(r.events),
            str(r.old_cost_usd),
            str(r.new_cost_usd),
            str(r.old_price_usd),
            str(r.new_price_usd),
            str(r.new_price_usd - r.old_price_usd),
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add the operations commands to the main CLI."""
    app.command("verify")(verify_command)
    app.command("replay")(replay_command)
