"""``meterline sql`` and ``meterline migrate``: the store, directly or via the running instance."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.table import Table

from core.errors import MeterlineError
from meterline.cli._shared import DataDir, console, exit_on_error, fail
from meterline.cli._shared import settings as settings_for

if TYPE_CHECKING:
    from meterline.instance import Instance


def remote_sql(instance: Instance, query: str, fmt: str, database: str) -> bytes:
    import httpx

    try:
        response = httpx.post(
            f"{instance.url}/v1/sql",
            params={"format": fmt},
            content=query.encode(),
            headers={"authorization": f"Bearer {instance.token}", "x-database": database},
            timeout=60,
        )
    except httpx.HTTPError as exc:
        raise MeterlineError(f"cannot reach the running instance at {instance.url}: {exc}") from exc
    if response.status_code != 200:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise MeterlineError(detail)
    return response.content


def result_table(result: dict[str, Any], title: str | None = None) -> Table:
    table = Table(title=title)
    for column in result["meta"]:
        numeric = any(t in column["type"] for t in ("Int", "Decimal", "Float"))
        table.add_column(column["name"], justify="right" if numeric else "left")
    for row in result["data"]:
        table.add_row(*("" if v is None else str(v) for v in row))
    return table


def sql(
    query: Annotated[str, typer.Argument(help="SQL; tables resolve in the meterline database.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, csv or json")] = "table",
    data_dir: DataDir = None,
) -> None:
    """Run SQL against the configured store (through the running instance if there is one)."""
    formats = {"table": "JSONCompact", "csv": "CSVWithNames", "json": "JSONEachRow"}
    if fmt not in formats:
        raise fail(f"--format must be one of {', '.join(formats)}")
    settings = settings_for(data_dir=data_dir)
    from meterline.instance import Instance

    instance = Instance.find(settings.data_dir) if settings.store == "chdb" else None
    with exit_on_error():
        if instance is not None:
            body = remote_sql(instance, query, formats[fmt], settings.database)
        else:
            from meterline import runtime

            engine = runtime.build_engine(settings)
            try:
                body = engine.sql.query_raw(query, formats[fmt])
            finally:
                engine.close()
    if fmt == "table":
        console.print(result_table(orjson.loads(body)))
    else:
        sys.stdout.write(body.decode("utf-8"))


def migrate(
    cluster: Annotated[
        str | None,
        typer.Option(
            "--cluster",
            help="ClickHouse cluster: ON CLUSTER, Replicated*MergeTree and Distributed tables "
            "(env METERLINE_CLICKHOUSE_CLUSTER).",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print the SQL a new database gets; connect to nothing."),
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Apply pending schema migrations (recorded in schema_migrations) and create the topics."""
    overrides: dict[str, Any] = {"data_dir": data_dir}
    if cluster is not None:
        # A cluster is only ever a server store.
        overrides.update(clickhouse_cluster=cluster, store="clickhouse")
    settings = settings_for(**overrides)
    if dry_run:
        from sinks.migrations import dry_run as render

        with exit_on_error():
            sys.stdout.write(
                render(settings.database, settings.billing_timezone, settings.clickhouse_cluster)
            )
        return
    from meterline import runtime

    with exit_on_error():
        runtime.build_engine(settings).close()
        runtime.ensure_topics(settings)
    where = (
        f"cluster {settings.clickhouse_cluster!r}"
        if settings.clickhouse_cluster
        else settings.store
    )
    console.print(f"database {settings.database!r} is up to date ({where})")


def register(app: typer.Typer) -> None:
    app.command()(sql)
    app.command()(migrate)
