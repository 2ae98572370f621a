"""``GET /v1/subjects/{subject}/entitlements/{feature}``: may this customer use this feature now?

The call an app makes before each model call (1,000/s, p99 < 5 ms), so it reads
no meters and, normally, nothing at all: it answers from the tenant's snapshot
of budgets and running totals (``TotalsSnapshots``, query/running_totals.py),
refreshed in the background by one read per tenant per second. A check waits on
the engine only when no usable snapshot exists (first check, a budget changed
in this process, or the snapshot is older than its maximum staleness).

Answer: ``has_access`` is false when a hard budget that applies is used up
(used >= amount). ``limit`` / ``used`` / ``remaining`` / ``resets_at`` are those
of the budget with the least remaining (hard budgets first); every applying
budget is listed under ``budgets``. No budget applies: access, and null figures.

Bound: ``used`` includes every batch the processor committed before the
snapshot's read began, at most ``REFRESH_S`` + one read's duration ago and never
more than ``MAX_STALE_S``; events in the batch in flight are not yet in it
(docs/budgets.md, "How current is used?").
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import orjson
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response

from core.errors import StoreError
from ingest.openapi import Operation, Param, Reply
from ingest.problems import HTTPProblem
from ingest.replies import API_KEY, GUARDED, NOT_FOUND, UNAVAILABLE, USAGE_INVALID
from query.budget_store import Budget, decimal_text
from query.principal import read_principal
from query.reader import Reader
from query.running_totals import Period, Snapshot, period_of
from schemas.problems import Problem

_LABEL = re.compile(r"^[^\x00-\x1f\x7f]{1,256}$")
# Answers kept per snapshot (one refresh interval): ~600 bytes each, so <= ~6 MB
# per tenant even when every check of a second asks a different question.
MAX_ANSWERS = 10_000


class BudgetStanding(BaseModel):
    id: str
    mode: Literal["soft", "hard"]
    period: Literal["day", "month"]
    metric: Literal["price_usd", "cost_usd"]
    limit: str
    used: str
    remaining: str
    exhausted: bool
    resets_at: str


class Entitlement(BaseModel):
    subject: str
    feature: str
    has_access: bool
    limit: str | None = Field(description="USD, decimal string; null: no budget applies.")
    used: str | None
    remaining: str | None
    resets_at: str | None = Field(description="UTC, RFC 3339: when the binding period ends.")
    budgets: list[BudgetStanding]


def _label(value: str, name: str, problems: list[Problem]) -> None:
    if not _LABEL.match(value):
        problems.append(Problem("invalid", name, "1 to 256 characters, no control characters"))


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def standing(budget: Budget, used: Decimal, period: Period) -> dict[str, Any]:
    """A ``BudgetStanding`` as a plain dict: the check's hot path skips pydantic."""
    return {
        "id": budget.id,
        "mode": budget.mode,
        "period": budget.period,
        "metric": budget.metric,
        "limit": decimal_text(budget.amount),
        "used": decimal_text(used),
        "remaining": decimal_text(max(budget.amount - used, Decimal(0))),
        "exhausted": used >= budget.amount,
        "resets_at": _rfc3339(period.resets_at),
    }


def answer(
    snapshot: Snapshot, subject: str, feature: str, model: str | None, now: datetime
) -> bytes:
    """The ``Entitlement`` body, computed once per snapshot and local day for each question.

    Memoized on the snapshot: at 1,000 checks/s the same customers ask again and
    again within a refresh, and the answer can change only with a new snapshot
    (or a new local day, which is in the key).
    """
    zone = snapshot.zone
    key = (subject, feature, model, now.astimezone(zone).date())
    found = snapshot.answers.get(key)
    if found is not None:
        return found
    standings: list[tuple[Budget, dict[str, Any]]] = []
    for budget in snapshot.applying(subject, feature, model):
        period = period_of(budget.period, now, zone)
        standings.append((budget, standing(budget, snapshot.used(budget, period), period)))
    has_access = not any(b.mode == "hard" and s["exhausted"] for b, s in standings)
    binding = min(
        standings,
        key=lambda bs: (bs[0].mode != "hard", bs[0].amount - Decimal(bs[1]["used"])),
        default=None,
    )
    body = orjson.dumps(
        {
            "subject": subject,
            "feature": feature,
            "has_access": has_access,
            "limit": binding[1]["limit"] if binding else None,
            "used": binding[1]["used"] if binding else None,
            "remaining": binding[1]["remaining"] if binding else None,
            "resets_at": binding[1]["resets_at"] if binding else None,
            "budgets": [s for _, s in standings],
        }
    )
    # Bounded: a flood of distinct questions within one refresh is answered, not kept.
    if len(snapshot.answers) < MAX_ANSWERS:
        snapshot.answers[key] = body
    return body


async def get_entitlement(reader: Reader, request: Request) -> Response:
    principal = await read_principal(reader, request)
    subject = str(request.path_params["subject"])
    feature = str(request.path_params["feature"])
    model = request.query_params.get("model")
    problems: list[Problem] = []
    _label(subject, "subject", problems)
    _label(feature, "feature", problems)
    if model is not None:
        _label(model, "model", problems)
    for name in sorted(set(request.query_params.keys()) - {"model"}):
        problems.append(Problem("unknown", name, "not a parameter of this operation"))
    if problems:
        raise HTTPProblem(422, "invalid-parameter", "the check is invalid", problems)
    token = principal.token
    if token is not None:
        # 403, not "no access": a page holding a token must not learn about others.
        if subject != token.subject:
            raise HTTPProblem(403, "forbidden-subject", "this token checks only its own subject")
        if token.features is not None and feature not in token.features:
            raise HTTPProblem(
                403, "forbidden-feature", "this token checks only the features it names"
            )
    if reader.budgets is None or reader.totals is None:
        raise HTTPProblem(404, "not-found", "entitlements are not served by this process")
    totals = reader.totals
    now = totals.now()
    snapshot = totals.usable(principal.tenant, now)
    if snapshot is None:
        try:
            snapshot = await totals.fresh(principal.tenant, now)
        except StoreError as exc:
            # No snapshot younger than MAX_STALE_S. Fail closed on a hard limit
            # would stop every customer while the store is away; fail open would
            # let spend run on numbers of unknown age. Neither is ours to pick:
            # 503, and the SDK's caller decides (docs/budgets.md).
            raise HTTPProblem(
                503,
                "store-unavailable",
                f"cannot read budgets and running totals: {exc}",
                retry_after=1,
            ) from exc
    return Response(answer(snapshot, subject, feature, model, now), media_type="application/json")


GET_ENTITLEMENT = Operation(
    "GET",
    "May this subject use this feature now? (before each model call)",
    description="API key (scope read) or a portal token for this subject. Served from "
    "a per-tenant snapshot of budgets and running totals refreshed every second; see "
    "docs/budgets.md for the bound.",
    security=API_KEY,
    parameters=(
        Param("subject", "path", str, "The customer (CloudEvents subject).", required=True),
        Param("feature", "path", str, "The feature about to be used.", required=True),
        Param("model", "query", str, "Also apply budgets limited to this model."),
    ),
    responses={
        200: Reply("The entitlement.", {"application/json": Entitlement}),
        404: NOT_FOUND,
        422: USAGE_INVALID,
        503: UNAVAILABLE,
        **GUARDED,
    },
)
