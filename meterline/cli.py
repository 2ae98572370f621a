"""The ``meterline`` command: one entry point, thin wrappers over the packages."""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from meterline import cli_bench, cli_keys, cli_ops, cli_price
from meterline.errors import MeterlineError
from schemas.times import now_rfc3339

app = typer.Typer(
    name="meterline",
    help="Usage metering for AI products: CloudEvents in, exact priced meters in ClickHouse out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Data folder (env METERLINE_DATA_DIR).")
]


def _missing_extras(exc: ImportError) -> typer.Exit:
    err.print(
        f"[red]error:[/red] {exc.name} is not installed: this command needs the server "
        "extras: pip install 'meterline\\[server]'"
    )
    return typer.Exit(2)


def _settings(**overrides: Any) -> Any:
    try:
        from meterline.config import load_settings
    except ImportError as exc:
        raise _missing_extras(exc) from None
    try:
        return load_settings(**overrides)
    except MeterlineError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None


def _serve() -> Any:
    """The server side, or a clear message when only the SDK is installed."""
    try:
        from meterline.serve import serve
    except ImportError as exc:
        raise _missing_extras(exc) from None
    return serve


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def dev(
    demo: Annotated[
        bool, typer.Option(help="Feed realistic demo traffic and show live meters.")
    ] = False,
    port: Annotated[int | None, typer.Option(help="Gateway port.")] = None,
    data_dir: DataDir = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Gateway + processor on this machine, no servers: embedded log + chDB."""
    _logging(verbose)
    # dev is local by definition: without METERLINE_API_KEYS_FILE it runs in open mode.
    settings = _settings(
        port=port,
        data_dir=data_dir,
        log="embedded",
        store="chdb",
        open_mode=True,
        log_format="text",
    )
    serve = _serve()

    if settings.api_keys_file is None:
        err.print(
            f"[bold yellow]OPEN MODE[/]: no API keys configured (METERLINE_API_KEYS_FILE), "
            f"every request is accepted as tenant {settings.tenant!r}. For local development "
            "only: `meterline gateway` and `meterline run` refuse to start like this."
        )

    def started(url: str) -> None:
        console.print(f"[bold green]meterline dev[/] is running at [bold]{url}[/]")
        console.print(f"data folder: {settings.data_dir.resolve()}")
        console.print("send an event:")
        console.print(_example_curl(url), highlight=False, soft_wrap=True)
        console.print(
            'query meters:  meterline sql "SELECT subject, model, sum(events), '
            'sum(cost_usd) FROM usage_meters GROUP BY ALL"',
            highlight=False,
        )
        if demo:
            from meterline.demo import DemoTraffic

            DemoTraffic(url).start()
            threading.Thread(target=_live_meters, args=(settings,), daemon=True).start()

    try:
        serve(settings, on_started=started)
    except MeterlineError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None


def _example_curl(url: str) -> str:
    event = {
        "specversion": "1.0",
        "id": "chatcmpl-123",
        "source": "/my/app",
        "type": "io.meterline.usage.tokens",
        "subject": "customer-42",
        # Now, not a fixed date: events older than the 35-day dedupe horizon go to
        # the dead-letter queue, and a newcomer's first event must show up.
        "time": now_rfc3339(),
        "data": {
            "provider": "openai",
            "model": "gpt-4o",
            "feature": "chat",
            "input_tokens": 1200,
            "output_tokens": 300,
        },
    }
    return (
        f"  curl -sS {url}/v1/events -H 'content-type: application/cloudevents+json' "
        f"-d '{orjson.dumps(event).decode()}'"
    )


def _live_meters(settings: Any) -> None:
    from meterline.instance import Instance

    query = (
        "SELECT subject, sum(events) AS events, sum(input_tokens) AS input_tokens, "
        "sum(output_tokens) AS output_tokens, sum(images) AS images, "
        # Presentation only: half-even to 6 places (storage keeps 12).
        "toString(roundBankers(sum(cost_usd), 6)) AS cost_usd, "
        "toString(roundBankers(sum(price_usd), 6)) AS price_usd, "
        "sum(unpriced_events) AS unpriced FROM usage_meters GROUP BY subject ORDER BY subject"
    )
    stop = threading.Event()
    while not stop.wait(5.0):
        instance = Instance.find(settings.data_dir)
        if instance is None:
            continue
        try:
            body = _remote_sql(instance, query, "JSONCompact", settings.database)
        except MeterlineError:
            continue
        console.print(_table(orjson.loads(body), title="usage_meters (demo, every 5 s)"))


def _remote_sql(instance: Any, query: str, fmt: str, database: str) -> bytes:
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


def _table(result: dict[str, Any], title: str | None = None) -> Table:
    table = Table(title=title)
    for column in result["meta"]:
        numeric = any(t in column["type"] for t in ("Int", "Decimal", "Float"))
        table.add_column(column["name"], justify="right" if numeric else "left")
    for row in result["data"]:
        table.add_row(*("" if v is None else str(v) for v in row))
    return table


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="SQL; tables resolve in the meterline database.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, csv or json")] = "table",
    data_dir: DataDir = None,
) -> None:
    """Run SQL against the configured store (through the running instance if there is one)."""
    formats = {"table": "JSONCompact", "csv": "CSVWithNames", "json": "JSONEachRow"}
    if fmt not in formats:
        err.print(f"[red]error:[/red] --format must be one of {', '.join(formats)}")
        raise typer.Exit(2)
    settings = _settings(data_dir=data_dir)
    from meterline.instance import Instance

    instance = Instance.find(settings.data_dir) if settings.store == "chdb" else None
    try:
        if instance is not None:
            body = _remote_sql(instance, query, formats[fmt], settings.database)
        else:
            from meterline import runtime

            sink = runtime.build_sink(settings)
            try:
                sink.migrate(settings.billing_timezone)
                body = sink.query_raw(query, formats[fmt])
            finally:
                sink.close()
    except MeterlineError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    if fmt == "table":
        console.print(_table(orjson.loads(body)))
    else:
        sys.stdout.write(body.decode("utf-8"))


@app.command()
def migrate(data_dir: DataDir = None) -> None:
    """Create or update meterline's tables and views (idempotent)."""
    settings = _settings(data_dir=data_dir)
    from meterline import runtime

    try:
        sink = runtime.build_sink(settings)
        sink.migrate(settings.billing_timezone)
        sink.close()
        runtime.ensure_topics(settings)
    except MeterlineError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    console.print(f"database {settings.database!r} is up to date ({settings.store})")


@app.command()
def run(
    port: Annotated[int | None, typer.Option(help="Gateway port.")] = None,
    data_dir: DataDir = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Gateway + processor in one process, with the configured log and store (env METERLINE_*)."""
    _logging(verbose)
    settings = _settings(port=port, data_dir=data_dir)
    serve = _serve()

    def started(url: str) -> None:
        console.print(f"meterline is running at {url} (log={settings.log}, store={settings.store})")

    try:
        serve(settings, on_started=started)
    except MeterlineError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None


@app.command()
def gateway(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """Run the HTTP gateway only (scale it out behind a load balancer)."""
    _logging(verbose)
    settings = _settings()
    serve = _serve()

    try:
        serve(settings, processor=False, sql_endpoint=False)
    except MeterlineError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None


@app.command()
def processor(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """Run the processor only (METERLINE_WORKERS consumer-group members in this process)."""
    _logging(verbose)
    settings = _settings()
    serve = _serve()

    try:
        serve(settings, gateway=False, sql_endpoint=False)
    except MeterlineError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None


# Commands that live in their own modules register themselves here.
cli_price.register(app)
cli_keys.register(app)
cli_ops.register(app)
cli_bench.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
