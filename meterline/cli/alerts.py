"""``meterline alerts``: list budget alerts, show one's delivery log, replay failed deliveries.

Through the gateway's ``/v1/alerts`` API (docs/budgets.md#alerts): the running
process owns the store and the webhook secrets. ``replay`` sends each alert's
webhook once more, with its own webhook-id and body, so a receiver that already
has it deduplicates it. ``--url`` / ``--api-key`` as for ``meterline budgets``.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from meterline.cli._api import Key, Url, api_request, print_json
from meterline.cli._shared import fail

AlertId = Annotated[str, typer.Argument(help="The alert's id (alr_...).")]


def list_command(
    failed: Annotated[
        bool, typer.Option("--failed", help="Only failed webhook deliveries.")
    ] = False,
    url: Url = None,
    api_key: Key = None,
) -> None:
    """The tenant's alerts, newest first, with their delivery state, as JSON."""
    alerts = api_request("GET", "/v1/alerts", url, api_key)["alerts"]
    print_json({"alerts": [a for a in alerts if not failed or a["webhook"] == "failed"]})


def show_command(alert_id: AlertId, url: Url = None, api_key: Key = None) -> None:
    """One alert: its CloudEvent and every delivery attempt."""
    print_json(api_request("GET", f"/v1/alerts/{alert_id}", url, api_key))


def replay_command(
    alert_ids: Annotated[list[str] | None, typer.Argument(help="Alert ids (alr_...).")] = None,
    failed: Annotated[
        bool, typer.Option("--failed", help="Every alert whose webhook delivery failed.")
    ] = False,
    url: Url = None,
    api_key: Key = None,
) -> None:
    """Send alerts' webhooks again, once each; exit 1 if any attempt fails."""
    ids = list(alert_ids or [])
    if failed:
        alerts = api_request("GET", "/v1/alerts", url, api_key)["alerts"]
        ids += [a["id"] for a in alerts if a["webhook"] == "failed" and a["id"] not in ids]
    if not ids:
        raise fail("nothing to replay: give alert ids or --failed", 2)
    results: list[dict[str, Any]] = []
    for alert in ids:
        row = api_request("POST", f"/v1/alerts/{alert}/redeliver", url, api_key)
        results.append({"id": alert, **row})
    print_json({"replayed": results})
    if any(r["outcome"] != "delivered" for r in results):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``meterline alerts list|show|replay``."""
    alerts = typer.Typer(help="Budget alerts and their webhook deliveries.", no_args_is_help=True)
    alerts.command("list")(list_command)
    alerts.command("show")(show_command)
    alerts.command("replay")(replay_command)
    app.add_typer(alerts, name="alerts")
