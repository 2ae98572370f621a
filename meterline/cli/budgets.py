"""``meterline budgets``: list, create, update, delete budgets and show their history.

Through the gateway's ``/v1/budgets`` API (docs/budgets.md), never by writing
the store directly: the gateway records who (the API key) made each change, and
its processes see their own changes at once. ``--url`` defaults to
METERLINE_URL, else http://127.0.0.1:8080; ``--api-key`` to METERLINE_API_KEY
(a key with the ``budgets`` scope to change budgets; none in open mode).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from meterline.cli._api import Key, Url, api_request, print_json
from meterline.cli._shared import console, fail

BudgetId = Annotated[str, typer.Argument(help="The budget's id (bgt_...).")]


def list_command(url: Url = None, api_key: Key = None) -> None:
    """The tenant's budgets, as JSON."""
    print_json(api_request("GET", "/v1/budgets", url, api_key))


def create_command(
    period: Annotated[str, typer.Option(help="day or month (billing timezone).")],
    amount: Annotated[str, typer.Option(help="USD per period, e.g. 250.00.")],
    subject: Annotated[str | None, typer.Option(help="One subject (default: all).")] = None,
    feature: Annotated[str | None, typer.Option(help="Only this feature.")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    metric: Annotated[str, typer.Option(help="price_usd or cost_usd.")] = "price_usd",
    threshold: Annotated[
        list[int] | None, typer.Option(help="Alert threshold in % (repeat); default 50 80 100.")
    ] = None,
    hard: Annotated[bool, typer.Option("--hard/--soft", help="Hard: deny entitlement.")] = False,
    url: Url = None,
    api_key: Key = None,
) -> None:
    """Create a budget and print it (with its id)."""
    body: dict[str, Any] = {
        "period": period,
        "amount": amount,
        "metric": metric,
        "mode": "hard" if hard else "soft",
    }
    for name, value in (("subject", subject), ("feature", feature), ("model", model)):
        if value is not None:
            body[name] = value
    if threshold:
        body["thresholds"] = threshold
    print_json(api_request("POST", "/v1/budgets", url, api_key, body))


def update_command(
    budget_id: BudgetId,
    amount: Annotated[str | None, typer.Option(help="New USD amount.")] = None,
    period: Annotated[str | None, typer.Option(help="day or month.")] = None,
    metric: Annotated[str | None, typer.Option(help="price_usd or cost_usd.")] = None,
    mode: Annotated[str | None, typer.Option(help="soft or hard.")] = None,
    threshold: Annotated[list[int] | None, typer.Option(help="Replace the thresholds.")] = None,
    url: Url = None,
    api_key: Key = None,
) -> None:
    """Change the given fields of a budget (a new version; the old one stays in history)."""
    body: dict[str, Any] = {
        k: v
        for k, v in (("amount", amount), ("period", period), ("metric", metric), ("mode", mode))
        if v is not None
    }
    if threshold:
        body["thresholds"] = threshold
    if not body:
        raise fail("nothing to change: give --amount, --period, --metric, --mode or --threshold")
    print_json(api_request("PATCH", f"/v1/budgets/{budget_id}", url, api_key, body))


def delete_command(budget_id: BudgetId, url: Url = None, api_key: Key = None) -> None:
    """Delete a budget (its history is kept)."""
    api_request("DELETE", f"/v1/budgets/{budget_id}", url, api_key)
    console.print(f"deleted {budget_id}")


def history_command(budget_id: BudgetId, url: Url = None, api_key: Key = None) -> None:
    """Every version of a budget: who changed what, when."""
    print_json(api_request("GET", f"/v1/budgets/{budget_id}/history", url, api_key))


def register(app: typer.Typer) -> None:
    """Add ``meterline budgets list|create|update|delete|history``."""
    budgets = typer.Typer(help="Budgets (spend limits) through the gateway.", no_args_is_help=True)
    budgets.command("list")(list_command)
    budgets.command("create")(create_command)
    budgets.command("update")(update_command)
    budgets.command("delete")(delete_command)
    budgets.command("history")(history_command)
    app.add_typer(budgets, name="budgets")
