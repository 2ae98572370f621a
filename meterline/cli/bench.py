"""``meterline bench``: measure the pipeline against its limits (docs/benchmarks.md)."""

from __future__ import annotations

from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def bench(
        quick: Annotated[
            bool, typer.Option(help="Small run that proves every part works (for tests).")
        ] = False,
        events: Annotated[
            int, typer.Option(help="Events for the processor run (>= 2M for the RSS row).")
        ] = 2_100_000,
        peer: Annotated[bool, typer.Option(help="Run the Quix Streams peer.")] = True,
        bootstrap: Annotated[
            str | None, typer.Option(help="Kafka bootstrap (default: start deploy/kafka).")
        ] = None,
        stages: Annotated[
            bool,
            typer.Option(
                help="Instead: µs per event of each processor step (the profile; no Kafka; "
                "200k events, 20k with --quick)."
            ),
        ] = False,
        engine: Annotated[
            bool,
            typer.Option(
                help="Instead: the store's CPU per event (INSERT, views, lookup, merges; no "
                "Kafka), beside the processor's own Python, over --events (100k with --quick)."
            ),
        ] = False,
        only: Annotated[
            str | None,
            typer.Option(
                help="Run one row alone: 'entitlement' (the check at 1,000/s) or 'query' "
                "(GET /v1/usage over a month, three shapes)."
            ),
        ] = None,
    ) -> None:
        """Benchmark against real Kafka and chDB; print one table of ratios to limits/peers."""
        try:
            from bench.run import Options, run
            from bench.stages import measure, table
        except ImportError as exc:
            raise typer.BadParameter(
                f"{exc.name} is missing: run `meterline bench` from a source checkout "
                "with the server extra installed"
            ) from exc
        if engine:
            from bench import engine_floor

            if stages or only:
                raise typer.BadParameter("--engine runs alone: not with --stages or --only")
            if events < 1:
                raise typer.BadParameter(f"--events {events}: at least 1")
            floor = engine_floor.measure(100_000 if quick else events)
            typer.echo(engine_floor.table(floor))
            for line in floor.problems:
                typer.echo(f"CHECK FAILED: {line}", err=True)
            if floor.problems:
                raise typer.Exit(1)
            return
        if stages:
            typer.echo(table(measure(20_000 if quick else 200_000)))
            return
        if only not in (None, "entitlement", "query"):
            raise typer.BadParameter(
                f"--only {only!r}: the rows that run alone are 'entitlement' and 'query'"
            )
        report = run(
            Options(quick=quick, events=events, peer=peer, bootstrap=bootstrap, only=only),
            say=lambda line: typer.echo(line, err=True),
        )
        typer.echo(report.table())
        for line in report.checks:
            typer.echo(f"check ok: {line}")
        for line in report.notes:
            typer.echo(f"note: {line}")
        for line in report.problems:
            typer.echo(f"CHECK FAILED: {line}", err=True)
        if report.problems:
            raise typer.Exit(1)
