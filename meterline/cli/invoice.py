"""``meterline invoice``: close a month into frozen invoices and print them (JSON or CSV).

With a running embedded instance on the data folder (chDB belongs to one
process), it goes through that instance's ``POST /v1/invoices/close``, with
``--api-key`` / METERLINE_API_KEY (scope ``invoices``; none in open mode).
Otherwise it opens the store itself, as ``meterline replay`` does, and closes
for ``--tenant`` (default ``default``, the open-mode tenant). docs/invoices.md.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from typing import Annotated, Any

import orjson
import typer

from meterline.cli._shared import DataDir, exit_on_error, fail, settings


def invoice_command(
    period: Annotated[str, typer.Option(help="The month, YYYY-MM, in the billing timezone.")],
    run: Annotated[
        str | None, typer.Option(help="Close from this billing run (meterline replay --run).")
    ] = None,
    customer: Annotated[str | None, typer.Option(help="One customer (subject) only.")] = None,
    tenant: Annotated[str, typer.Option(help="Tenant, when the store is opened directly.")] = (
        "default"
    ),
    fmt: Annotated[str, typer.Option("--format", "-f", help="json or csv")] = "json",
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="API key (env METERLINE_API_KEY).")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Close PERIOD per customer into frozen invoices (idempotent); print the latest revisions."""
    if fmt not in ("json", "csv"):
        raise fail("--format must be json or csv")
    config = settings(**({"data_dir": data_dir} if data_dir else {}))
    from meterline.instance import Instance

    instance = Instance.find(config.data_dir) if config.store == "chdb" else None
    body: dict[str, Any] = {"period": period, "run": run, "subject": customer}
    if instance is not None:
        sys.stdout.write(_remote(instance.url, api_key, body, fmt))
        return
    from meterline import runtime
    from query.invoices import CSV_COLUMNS, Invoices, Period, csv_rows

    with exit_on_error():
        engine = runtime.build_engine(config)
        try:
            closed = Invoices(engine.sql).close(
                tenant,
                Period.parse(period, config.billing_timezone),
                run=run,
                subject=customer,
                closed_by="cli",
            )
        finally:
            engine.close()
    if fmt == "json":
        sys.stdout.write(orjson.dumps({"invoices": [i.public() for i in closed]}).decode() + "\n")
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(csv_rows(closed))
    sys.stdout.write(buffer.getvalue())


def _remote(url: str, api_key: str | None, body: dict[str, Any], fmt: str) -> str:
    import httpx

    key = api_key or os.environ.get("METERLINE_API_KEY")
    headers = {"authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.post(
            f"{url}/v1/invoices/close", content=orjson.dumps(body), headers=headers, timeout=300
        )
        if response.status_code >= 400:
            raise fail(f"{response.status_code}: {response.text}", 1)
        closed = response.json()["invoices"]
        if fmt == "json":
            return response.text + "\n"
        parts = []
        for n, one in enumerate(closed):
            got = httpx.get(
                f"{url}/v1/invoices/{one['id']}", params={"format": "csv"}, headers=headers
            )
            got.raise_for_status()
            lines = got.text.splitlines(keepends=True)
            parts.extend(lines if n == 0 else lines[1:])
        return "".join(parts)
    except httpx.HTTPError as exc:
        raise fail(f"cannot reach the running instance at {url}: {exc}", 1) from None


def register(app: typer.Typer) -> None:
    app.command("invoice")(invoice_command)
