"""``/v1/budgets``: create, list, read, update, delete budgets, and their history.

Scopes (docs/budgets.md): reading budgets needs ``read``; creating, changing
and deleting them needs ``budgets``. A key that reads usage for a customer page
must not be able to lift that customer's hard limit, so writing is its own
scope; keys configured without ``scopes`` have every scope, as before. Portal
tokens never reach these routes' writes (``Guard.authorize`` takes API keys only).

Every change is stored as a new version with who (the key's hash) and when;
``GET /v1/budgets/{id}/history`` lists them all, deletes included.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.requests import Request
from starlette.responses import Response

from core.errors import StoreError
from ingest.guard import read_body
from ingest.openapi import Operation, Param, Reply
from ingest.problems import HTTPProblem
from ingest.replies import API_KEY, GUARDED, NOT_FOUND, TOO_LARGE, UNAVAILABLE, USAGE_INVALID
from query.budget_store import Budget, Budgets, new_id
from query.reader import Reader
from schemas.problems import Problem

_MAX_BODY = 16_384
_M = TypeVar("_M", bound=BaseModel)
_T = TypeVar("_T")
# Decimal(38, 12): 26 integer digits, 12 fractional.
_AMOUNT = re.compile(r"^\d{1,26}(\.\d{1,12})?$")
_ID = re.compile(r"^bgt_[0-9a-f]{16}$")
Label = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")]
Amount = Annotated[
    str,
    Field(
        description="USD per period, a decimal string (at most 12 decimals), > 0.",
        examples=["250.00"],
    ),
]
Thresholds = Annotated[
    list[Annotated[int, Field(ge=1, le=1000)]],
    Field(min_length=1, max_length=10, description="Percent of amount, e.g. [50, 80, 100]."),
]


def _amount(value: str) -> str:
    if not _AMOUNT.match(value):
        raise ValueError("must be a decimal string like '250.00' (at most 12 decimals)")
    try:
        if Decimal(value) <= 0:
            raise ValueError("must be greater than 0")
    except InvalidOperation:
        raise ValueError("must be a decimal string") from None
    return value


class BudgetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: Label | None = Field(None, description="One subject; null: all subjects together.")
    feature: Label | None = Field(None, description="Only this feature; null: every feature.")
    model: Label | None = Field(None, description="Only this model; null: every model.")
    period: Literal["day", "month"] = Field(description="In the billing timezone.")
    metric: Literal["price_usd", "cost_usd"] = "price_usd"
    amount: Amount
    thresholds: Thresholds = [50, 80, 100]
    mode: Literal["soft", "hard"] = Field(
        "soft", description="soft: alerts only; hard: the entitlement check denies access."
    )

    @field_validator("amount")
    @classmethod
    def _check_amount(cls, value: str) -> str:
        return _amount(value)


class BudgetChange(BaseModel):
    """PATCH: only the fields given change; `null` clears subject/feature/model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: Label | None = None
    feature: Label | None = None
    model: Label | None = None
    period: Literal["day", "month"] | None = None
    metric: Literal["price_usd", "cost_usd"] | None = None
    amount: Amount | None = None
    thresholds: Thresholds | None = None
    mode: Literal["soft", "hard"] | None = None

    @field_validator("amount")
    @classmethod
    def _check_amount(cls, value: str | None) -> str | None:
        return None if value is None else _amount(value)


class BudgetView(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    subject: str | None
    feature: str | None
    model: str | None
    period: Literal["day", "month"]
    metric: Literal["price_usd", "cost_usd"]
    amount: str
    thresholds: list[int]
    mode: Literal["soft", "hard"]
    version: int
    changed_at: str = Field(description="UTC, RFC 3339, milliseconds.")
    changed_by: str = Field(description="Hash of the API key that made this version.")


class BudgetList(BaseModel):
    budgets: list[BudgetView]


class BudgetVersion(BudgetView):
    action: Literal["create", "update", "delete"]


class BudgetHistory(BaseModel):
    versions: list[BudgetVersion]


def _store(reader: Reader) -> Budgets:
    if reader.budgets is None:
        raise HTTPProblem(404, "not-found", "budgets are not served by this process (no store)")
    return reader.budgets


async def _body(request: Request, model: type[_M]) -> _M:
    raw = await read_body(request, _MAX_BODY)
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        problems = [
            Problem(e["type"], ".".join(str(p) for p in e["loc"]) or "body", e["msg"])
            for e in exc.errors()
        ]
        raise HTTPProblem(422, "invalid-body", "the request body is invalid", problems) from None


async def _run(work: Callable[[], _T]) -> _T:
    try:
        return await asyncio.to_thread(work)
    except StoreError as exc:
        raise HTTPProblem(503, "store-unavailable", f"budgets: {exc}", retry_after=1) from exc


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def _budget_id(request: Request) -> str:
    budget_id = str(request.path_params["budget_id"])
    if not _ID.match(budget_id):
        raise HTTPProblem(
            422,
            "invalid-parameter",
            "the budget id is invalid",
            [Problem("invalid", "budget_id", f"must match {_ID.pattern}")],
        )
    return budget_id


async def _existing(store: Budgets, tenant: str, budget_id: str) -> Budget:
    found = await _run(lambda: store.latest(tenant, budget_id))
    if not found or found[0].deleted:
        raise HTTPProblem(404, "budget-not-found", f"no budget {budget_id} in this tenant")
    return found[0]


async def post_budget(reader: Reader, request: Request) -> Response:
    key = reader.guard.authorize(request, "budgets")
    store = _store(reader)
    spec = await _body(request, BudgetSpec)
    budget = Budget(
        tenant=key.tenant,
        id=new_id(),
        version=Budgets.next_version(None),
        action="create",
        subject=spec.subject or "",
        feature=spec.feature or "",
        model=spec.model or "",
        period=spec.period,
        metric=spec.metric,
        amount=Decimal(spec.amount),
        thresholds=tuple(sorted(set(spec.thresholds))),
        mode=spec.mode,
        deleted=False,
        changed_at=Budgets.now(),
        changed_by=key.key_hash,
    )
    await _run(lambda: store.write(budget))
    return _json(budget.public(), 201)


async def list_budgets(reader: Reader, request: Request) -> Response:
    key = reader.guard.authorize(request, "read")
    store = _store(reader)
    latest = await _run(lambda: store.latest(key.tenant))
    return _json({"budgets": [b.public() for b in latest if not b.deleted]})


async def get_budget(reader: Reader, request: Request) -> Response:
    key = reader.guard.authorize(request, "read")
    budget = await _existing(_store(reader), key.tenant, _budget_id(request))
    return _json(budget.public())


async def patch_budget(reader: Reader, request: Request) -> Response:
    key = reader.guard.authorize(request, "budgets")
    store = _store(reader)
    budget_id = _budget_id(request)
    change = await _body(request, BudgetChange)
    current = await _existing(store, key.tenant, budget_id)
    given = change.model_fields_set
    updates: dict[str, Any] = {}
    for name in ("subject", "feature", "model"):
        if name in given:
            updates[name] = getattr(change, name) or ""
    for name in ("period", "metric", "mode"):
        if getattr(change, name) is not None:
            updates[name] = getattr(change, name)
    if change.amount is not None:
        updates["amount"] = Decimal(change.amount)
    if change.thresholds is not None:
        updates["thresholds"] = tuple(sorted(set(change.thresholds)))
    # Concurrent PATCHes of one budget: each reads, then writes a higher version;
    # the later version wins and both are in the history (docs/budgets.md).
    budget = dataclasses.replace(
        current,
        **updates,
        version=Budgets.next_version(current),
        action="update",
        changed_at=Budgets.now(),
        changed_by=key.key_hash,
    )
    await _run(lambda: store.write(budget))
    return _json(budget.public())


async def delete_budget(reader: Reader, request: Request) -> Response:
    key = reader.guard.authorize(request, "budgets")
    store = _store(reader)
    current = await _existing(store, key.tenant, _budget_id(request))
    gone = dataclasses.replace(
        current,
        version=Budgets.next_version(current),
        action="delete",
        deleted=True,
        changed_at=Budgets.now(),
        changed_by=key.key_hash,
    )
    await _run(lambda: store.write(gone))
    return Response(status_code=204)


async def budget_history(reader: Reader, request: Request) -> Response:
    key = reader.guard.authorize(request, "read")
    store = _store(reader)
    budget_id = _budget_id(request)
    versions = await _run(lambda: store.history(key.tenant, budget_id))
    if not versions:
        raise HTTPProblem(404, "budget-not-found", f"no budget {budget_id} in this tenant")
    return _json({"versions": [{**v.public(), "action": v.action} for v in versions]})


async def budget_item(reader: Reader, request: Request) -> Response:
    """``/v1/budgets/{budget_id}``: one endpoint, the method picks the handler."""
    handler = {"GET": get_budget, "PATCH": patch_budget, "DELETE": delete_budget}
    return await handler[request.method](reader, request)


async def budget_collection(reader: Reader, request: Request) -> Response:
    return await (post_budget if request.method == "POST" else list_budgets)(reader, request)


_ID_PARAM = Param("budget_id", "path", str, "The budget's id (bgt_...).", required=True)
_ONE = Reply("The budget (current version).", {"application/json": BudgetView})
_STORED = {503: UNAVAILABLE, **GUARDED}
_BODY_ERRORS = {413: TOO_LARGE, 422: USAGE_INVALID}

POST_BUDGET = Operation(
    "POST",
    "Create a budget (API key scope: budgets)",
    description="See docs/budgets.md for the fields and what soft and hard budgets do.",
    security=API_KEY,
    body={"application/json": BudgetSpec},
    responses={201: _ONE, 404: NOT_FOUND, **_BODY_ERRORS, **_STORED},
)
LIST_BUDGETS = Operation(
    "GET",
    "List the tenant's budgets (API key scope: read)",
    security=API_KEY,
    responses={
        200: Reply("The current budgets.", {"application/json": BudgetList}),
        404: NOT_FOUND,
        **_STORED,
    },
)
GET_BUDGET = Operation(
    "GET",
    "One budget (API key scope: read)",
    security=API_KEY,
    parameters=(_ID_PARAM,),
    responses={200: _ONE, 404: NOT_FOUND, 422: USAGE_INVALID, **_STORED},
)
PATCH_BUDGET = Operation(
    "PATCH",
    "Change a budget: the fields given (API key scope: budgets)",
    security=API_KEY,
    parameters=(_ID_PARAM,),
    body={"application/json": BudgetChange},
    responses={200: _ONE, 404: NOT_FOUND, **_BODY_ERRORS, **_STORED},
)
DELETE_BUDGET = Operation(
    "DELETE",
    "Delete a budget (kept in its history; API key scope: budgets)",
    security=API_KEY,
    parameters=(_ID_PARAM,),
    responses={204: Reply("Deleted."), 404: NOT_FOUND, 422: USAGE_INVALID, **_STORED},
)
BUDGET_HISTORY = Operation(
    "GET",
    "Every version of a budget: who changed what, when (API key scope: read)",
    security=API_KEY,
    parameters=(_ID_PARAM,),
    responses={
        200: Reply("Versions, oldest first.", {"application/json": BudgetHistory}),
        404: NOT_FOUND,
        422: USAGE_INVALID,
        **_STORED,
    },
)
