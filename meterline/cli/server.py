"""``meterline dev``, ``run``, ``gateway`` and ``processor``: start the pipeline's processes."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Annotated

import orjson
import typer

from core.errors import MeterlineError
from meterline.cli._shared import (
    DataDir,
    Verbose,
    configure_logging,
    console,
    err,
    exit_on_error,
    serve_function,
)
from meterline.cli._shared import settings as settings_for
from meterline.cli.store import remote_sql, result_table
from schemas.times import now_rfc3339

if TYPE_CHECKING:
    from core.settings import Settings


def dev(
    demo: Annotated[
        bool, typer.Option(help="Feed realistic demo traffic and show live meters.")
    ] = False,
    port: Annotated[int | None, typer.Option(help="Gateway port.")] = None,
    data_dir: DataDir = None,
    verbose: Verbose = False,
) -> None:
    """Gateway + processor on this machine, no servers: embedded log + chDB."""
    configure_logging(verbose)
    # dev is local by definition: without METERLINE_API_KEYS_FILE it runs in open mode.
    settings = settings_for(
        port=port,
        data_dir=data_dir,
        log="embedded",
        store="chdb",
        open_mode=True,
        log_format="text",
    )
    serve = serve_function()

    if settings.api_keys_file is None:
        err.print(
            f"[bold yellow]OPEN MODE[/]: no API keys configured (METERLINE_API_KEYS_FILE), "
            f"every request is accepted as tenant {settings.tenant!r}. For local development "
            "only: `meterline gateway` and `meterline run` refuse to start like this."
        )

    def started(url: str) -> None:
        console.print(f"[bold green]meterline dev[/] is running at [bold]{url}[/]")
        console.print(f"dashboard: [bold]{url}/ui[/]")
        console.print(f"data folder: {settings.data_dir.resolve()}")
        console.print("send an event:")
        console.print(example_curl(url), highlight=False, soft_wrap=True)
        console.print(
            'query meters:  meterline sql "SELECT subject, model, sum(events), '
            'sum(cost_usd) FROM usage_meters GROUP BY ALL"',
            highlight=False,
        )
        if demo:
            from meterline.demo import DemoTraffic

            DemoTraffic(url).start()
            threading.Thread(target=_live_meters, args=(settings, url), daemon=True).start()

    with exit_on_error():
        serve(settings, on_started=started)


def example_curl(url: str) -> str:
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


def _live_meters(settings: Settings, url: str) -> None:
    """The demo's meters table, redrawn in place every 5 s (rich Live) rather than scrolled."""
    from rich.live import Live
    from rich.text import Text

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
    title = f"usage_meters (demo, every 5 s) - dashboard: {url}/ui"
    # auto_refresh off: the table changes every 5 s, redrawing it 4x a second would
    # only cost CPU the demo's gateway and processor share.
    with Live(Text(f"waiting for the first meters... dashboard: {url}/ui"), console=console,
              auto_refresh=False) as live:  # fmt: skip
        while not stop.wait(5.0):
            instance = Instance.find(settings.data_dir)
            if instance is None:
                continue
            try:
                body = remote_sql(instance, query, "JSONCompact", settings.database)
            except MeterlineError:
                continue
            live.update(result_table(orjson.loads(body), title=title), refresh=True)


def run(
    port: Annotated[int | None, typer.Option(help="Gateway port.")] = None,
    data_dir: DataDir = None,
    verbose: Verbose = False,
) -> None:
    """Gateway + processor in one process, with the configured log and store (env METERLINE_*)."""
    configure_logging(verbose)
    settings = settings_for(port=port, data_dir=data_dir)
    serve = serve_function()

    def started(url: str) -> None:
        console.print(f"meterline is running at {url} (log={settings.log}, store={settings.store})")

    with exit_on_error():
        serve(settings, on_started=started)


def gateway(verbose: Verbose = False) -> None:
    """Run the HTTP gateway only (scale it out behind a load balancer)."""
    configure_logging(verbose)
    settings = settings_for()
    serve = serve_function()

    with exit_on_error():
        serve(settings, processor=False, sql_endpoint=False)


def processor(verbose: Verbose = False) -> None:
    """Run the processor only (METERLINE_WORKERS consumer-group members in this process)."""
    configure_logging(verbose)
    settings = settings_for()
    serve = serve_function()

    with exit_on_error():
        serve(settings, gateway=False, sql_endpoint=False)


def register(app: typer.Typer) -> None:
    for command in (dev, run, gateway, processor):
        app.command()(command)
