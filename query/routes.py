"""The read side's routes, mounted next to the gateway's by the shell (``meterline.serve``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from ingest.openapi import route
from query.alert_routes import (
    GET_ALERT,
    LIST_ALERTS,
    REDELIVER_ALERT,
    get_alert,
    list_alerts,
    redeliver_alert,
)
from query.budgets import (
    BUDGET_HISTORY,
    DELETE_BUDGET,
    GET_BUDGET,
    LIST_BUDGETS,
    PATCH_BUDGET,
    POST_BUDGET,
    budget_collection,
    budget_history,
    budget_item,
)
from query.entitlements import GET_ENTITLEMENT, get_entitlement
from query.invoice_routes import (
    GET_INVOICE,
    LIST_INVOICES,
    POST_CLOSE,
    get_invoice,
    list_invoices,
    post_close,
)
from query.meters import GET_METERS, get_meters
from query.portal import POST_REVOKE, POST_TOKEN, post_revoke, post_token
from query.reader import Reader
from query.sql import POST_SQL, post_sql
from query.usage import GET_USAGE, get_usage

Handler = Callable[[Reader, Request], Awaitable[Response]]


def routes(reader: Reader) -> list[BaseRoute]:
    def bind(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await handler(reader, request)

        return endpoint

    return [
        # POST /api/usage is the write path's (ingest/app.py); Starlette tries the
        # next route with the same path when the method does not match.
        route("/api/usage", bind(get_usage), GET_USAGE),
        route("/v1/sql", bind(post_sql), POST_SQL),
        route("/v1/usage", bind(get_meters), GET_METERS),
        route("/v1/portal/tokens", bind(post_token), POST_TOKEN),
        route("/v1/portal/tokens/revoke", bind(post_revoke), POST_REVOKE),
        route("/v1/budgets", bind(budget_collection), LIST_BUDGETS, POST_BUDGET),
        route(
            "/v1/budgets/{budget_id}",
            bind(budget_item),
            GET_BUDGET,
            PATCH_BUDGET,
            DELETE_BUDGET,
        ),
        route("/v1/budgets/{budget_id}/history", bind(budget_history), BUDGET_HISTORY),
        route(
            "/v1/subjects/{subject}/entitlements/{feature}",
            bind(get_entitlement),
            GET_ENTITLEMENT,
        ),
        route("/v1/alerts", bind(list_alerts), LIST_ALERTS),
        route("/v1/alerts/{alert_id}", bind(get_alert), GET_ALERT),
        route("/v1/alerts/{alert_id}/redeliver", bind(redeliver_alert), REDELIVER_ALERT),
        route("/v1/invoices/close", bind(post_close), POST_CLOSE),
        route("/v1/invoices", bind(list_invoices), LIST_INVOICES),
        route("/v1/invoices/{invoice_id}", bind(get_invoice), GET_INVOICE),
    ]
