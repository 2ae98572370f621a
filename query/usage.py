"""``GET /api/usage``: the seed-compatible usage read (portal clients keep their code).

Rows come from ``usage_events`` of the caller's tenant (the tenant of the API key,
never a parameter), token events only, as the seed's API returned them.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from core.errors import StoreError
from ingest.openapi import Operation, Param, Reply
from ingest.problems import HTTPProblem
from ingest.replies import API_KEY, GUARDED, NOT_FOUND, UNAVAILABLE, USAGE_INVALID
from ingest.usage_api import UsageOut, seed_json
from query.reader import Reader
from schemas.problems import Problem
from schemas.times import EPOCH, format_ms, from_ms, to_ms
from schemas.usage import EventType
from sinks.base import quote

MAX_ROWS = 10_000
_LIMIT = re.compile(r"[0-9]{1,6}")
_LATEST = datetime(2200, 1, 1, tzinfo=UTC)


class UsageList(BaseModel):
    """The body of ``GET /api/usage``: usage rows ordered by time."""

    model_config = ConfigDict(frozen=True)

    count: int = Field(ge=0)
    usage: list[UsageOut]


async def get_usage(reader: Reader, request: Request) -> Response:
    key = reader.guard.authorize(request, "read")
    params = request.query_params
    problems: list[Problem] = []
    project_id = params.get("project_id")
    if project_id is not None and not _printable(project_id):
        problems.append(Problem("invalid", "project_id", "must be 1-256 printable characters"))
    since = _bound(params.get("date_from"), "date_from", problems, end=False)
    until = _bound(params.get("date_to"), "date_to", problems, end=True)
    limit = params.get("limit", "1000")
    # ASCII digits only, and few of them: str.isdigit() accepts '²' (int() then
    # raises) and int() refuses more than 4,300 digits; both were a 500.
    if not _LIMIT.fullmatch(limit) or not 1 <= int(limit) <= MAX_ROWS:
        problems.append(Problem("invalid", "limit", f"must be an integer in 1..{MAX_ROWS}"))
    if problems:
        raise HTTPProblem(422, "invalid-query", "the query parameters are invalid", problems)
    if reader.sink is None:
        # 404 like /v1/sql when not enabled: a 5xx would send monitors and retries
        # after a condition that no retry changes.
        raise HTTPProblem(
            404,
            "reads-not-served-here",
            "this process has no store attached; query a `meterline run` process or ClickHouse",
        )
    where = [f"tenant = {quote(key.tenant)}", f"type = {quote(EventType.TOKENS.value)}"]
    if project_id is not None:
        where.append(f"subject = {quote(project_id)}")
    if since is not None:
        where.append(f"time >= fromUnixTimestamp64Milli({to_ms(since)}, 'UTC')")
    if until is not None:
        where.append(f"time < fromUnixTimestamp64Milli({to_ms(until)}, 'UTC')")
    sql = (
        "SELECT id, subject, provider, model, input_tokens, output_tokens, cost_usd, "
        "toUnixTimestamp64Milli(time) AS time_ms "
        f"FROM {reader.sink.database}.usage_events WHERE {' AND '.join(where)} "
        f"ORDER BY time, id LIMIT {int(limit)}"
    )
    try:
        rows = await asyncio.to_thread(reader.sink.query_rows, sql)
    except StoreError as exc:
        raise HTTPProblem(
            503, "store-unavailable", f"the store did not answer: {exc}", retry_after=1
        ) from exc
    # Through the models (~4 µs a row): the answer is what the document describes.
    usage = [_row(row) for row in rows]
    return seed_json(UsageList(count=len(usage), usage=usage))


def _row(row: dict[str, Any]) -> UsageOut:
    input_tokens, output_tokens = int(row["input_tokens"]), int(row["output_tokens"])
    moment = from_ms(int(row["time_ms"]))
    return UsageOut(
        id=row["id"],
        project_id=row["subject"],
        provider=row["provider"],
        model=row["model"],
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=input_tokens + output_tokens,
        cost_usd=Decimal(row["cost_usd"]),
        request_timestamp=format_ms(moment),
    )


def _printable(value: str) -> bool:
    return 0 < len(value) <= 256 and value.isprintable()


def _bound(raw: str | None, name: str, problems: list[Problem], *, end: bool) -> datetime | None:
    """A date (whole day; ``date_to`` inclusive) or an RFC 3339 / ISO 8601 instant."""
    if raw is None or raw == "":
        return None
    whole_day = len(raw) == 10
    try:
        if whole_day:
            moment = datetime.combine(date.fromisoformat(raw), datetime.min.time(), UTC)
        else:
            moment = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
            moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except ValueError:
        problems.append(Problem("invalid", name, "must be YYYY-MM-DD or an RFC 3339 timestamp"))
        return None
    except OverflowError:  # 0001-01-01T00:00+01:00 has no UTC datetime
        problems.append(Problem("invalid", name, "must be between 1970 and 2200"))
        return None
    # Checked before the day or millisecond is added below: 9999-12-31 + 1 day
    # overflowed (a 500), and 0001-01-01 reached the SQL.
    if not EPOCH <= moment < _LATEST:
        problems.append(Problem("invalid", name, "must be between 1970 and 2200"))
        return None
    # date_to is inclusive; the SQL compares with '<' on milliseconds.
    if end:
        return moment + (timedelta(days=1) if whole_day else timedelta(milliseconds=1))
    return moment


GET_USAGE = Operation(
    "GET",
    "The caller's tenant's token usage, from ClickHouse",
    security=API_KEY,
    parameters=(
        Param("project_id", "query", Annotated[str, Field(min_length=1, max_length=256)]),
        Param("date_from", "query", description="YYYY-MM-DD or RFC 3339, inclusive."),
        Param("date_to", "query", description="YYYY-MM-DD (whole day) or RFC 3339, inclusive."),
        Param("limit", "query", Annotated[int, Field(ge=1, le=MAX_ROWS)], "Default 1000."),
    ),
    responses={
        200: Reply("Usage rows ordered by time.", {"application/json": UsageList}),
        404: NOT_FOUND,
        422: USAGE_INVALID,
        503: UNAVAILABLE,
        **GUARDED,
    },
)
