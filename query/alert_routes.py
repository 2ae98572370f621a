"""``/v1/alerts``: the tenant's budget alerts, their delivery log, and redelivery.

Reading needs the ``read`` scope; redelivering needs ``budgets`` (it sends to the
tenant's endpoint, an action, not a read). ``POST /v1/alerts/{id}/redeliver``
makes ONE signed webhook attempt now, with the alert's own ``webhook-id`` and
bytes, and answers with the delivery-log row it wrote (``meterline alerts replay``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from core.errors import StoreError
from ingest.openapi import Operation, Param, Reply
from ingest.problems import HTTPProblem
from ingest.replies import API_KEY, GUARDED, NOT_FOUND, UNAVAILABLE, USAGE_INVALID
from query.alert_store import LOG, WEBHOOK, Alert, AlertStore, Delivery
from query.reader import Reader
from schemas.problems import Problem

_ID = re.compile(r"^alr_[0-9a-f]{32}$")
_T = TypeVar("_T")


class DeliveryView(BaseModel):
    channel: str
    attempt: int
    outcome: str
    status: int | None
    error: str | None
    target: str
    at: str
    by_replay: bool


class AlertView(BaseModel):
    id: str
    budget_id: str
    period_start: str
    threshold: int
    created_at: str
    webhook: str | None  # newest outcome; null: not attempted yet
    log: str | None
    event: dict[str, Any]
    deliveries: list[DeliveryView] | None = None


class AlertList(BaseModel):
    alerts: list[AlertView]


def _view(alert: Alert, states: dict[tuple[str, str], Delivery]) -> dict[str, Any]:
    webhook = states.get((alert.alert_id, WEBHOOK))
    log = states.get((alert.alert_id, LOG))
    return {
        "id": alert.alert_id,
        "budget_id": alert.budget_id,
        "period_start": alert.period_start.isoformat().replace("+00:00", "Z"),
        "threshold": alert.threshold,
        "created_at": alert.created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "webhook": webhook.outcome if webhook else None,
        "log": log.outcome if log else None,
        "event": orjson.loads(alert.event),
    }


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


async def _run(work: Callable[[], _T]) -> _T:
    try:
        return await asyncio.to_thread(work)
    except StoreError as exc:
        raise HTTPProblem(503, "store-unavailable", f"alerts: {exc}", retry_after=1) from exc


def _store(reader: Reader) -> AlertStore:
    if reader.alerts is None:
        raise HTTPProblem(404, "not-found", "alerts are not served by this process")
    return reader.alerts


def _alert_id(request: Request) -> str:
    value = str(request.path_params["alert_id"])
    if not _ID.match(value):
        raise HTTPProblem(
            422,
            "invalid-parameter",
            "not an alert id",
            [Problem("invalid", "alert_id", "alr_ and 32 hex digits")],
        )
    return value


async def list_alerts(reader: Reader, request: Request) -> Response:
    key = reader.guard.authorize(request, "read")
    store = _store(reader)
    alerts = await _run(lambda: store.newest(key.tenant))
    states = await _run(lambda: store.states(key.tenant, [a.alert_id for a in alerts]))
    return _json({"alerts": [_view(a, states) for a in alerts]})


async def get_alert(reader: Reader, request: Request) -> Response:
    key = reader.guard.authorize(request, "read")
    store = _store(reader)
    wanted = _alert_id(request)
    alert = await _run(lambda: store.get(key.tenant, wanted))
    if alert is None:
        raise HTTPProblem(404, "alert-not-found", f"no alert {wanted} in this tenant")
    rows = await _run(lambda: store.history(key.tenant, wanted))
    states = {(r.alert_id, r.channel): r for r in rows}
    return _json({**_view(alert, states), "deliveries": [r.public() for r in rows]})


async def redeliver_alert(reader: Reader, request: Request) -> Response:
    key = reader.guard.authorize(request, "budgets")
    store = _store(reader)
    deliverer = reader.deliverer
    if deliverer is None:
        raise HTTPProblem(404, "not-found", "alert delivery is not served by this process")
    wanted = _alert_id(request)
    alert = await _run(lambda: store.get(key.tenant, wanted))
    if alert is None:
        raise HTTPProblem(404, "alert-not-found", f"no alert {wanted} in this tenant")
    row = await _run(lambda: deliverer.attempt(alert, WEBHOOK, 1, by_replay=True))
    return _json(row.public())


_ID_PARAM = Param("alert_id", "path", str, "The alert's id (alr_...).", required=True)
_STORED = {503: UNAVAILABLE, **GUARDED}
LIST_ALERTS = Operation(
    "GET",
    "The tenant's budget alerts, newest first, with delivery state (API key scope: read)",
    security=API_KEY,
    responses={200: Reply("Alerts.", {"application/json": AlertList}), 404: NOT_FOUND, **_STORED},
)
GET_ALERT = Operation(
    "GET",
    "One alert and its delivery log (API key scope: read)",
    security=API_KEY,
    parameters=(_ID_PARAM,),
    responses={
        200: Reply("The alert.", {"application/json": AlertView}),
        404: NOT_FOUND,
        422: USAGE_INVALID,
        **_STORED,
    },
)
REDELIVER_ALERT = Operation(
    "POST",
    "Send an alert's webhook again, once, now (API key scope: budgets)",
    description="Same webhook-id and body as the first delivery; answers the delivery-log row.",
    security=API_KEY,
    parameters=(_ID_PARAM,),
    responses={
        200: Reply("The attempt.", {"application/json": DeliveryView}),
        404: NOT_FOUND,
        422: USAGE_INVALID,
        **_STORED,
    },
)
