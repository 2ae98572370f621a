"""``POST /v1/sql``: SQL on this process's store, for ``meterline sql`` and the tests.

A chDB folder belongs to one process, so while ``meterline run`` holds it this
is the only way in. Guarded by the instance's admin token (in
``.meterline/instance.json``, mode 0600), never by tenant API keys: it reads
every tenant's rows.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Annotated

from pydantic import Field, JsonValue
from starlette.requests import Request
from starlette.responses import Response

from core.errors import StoreError
from ingest.guard import read_body
from ingest.openapi import Operation, Param, Reply
from ingest.problems import HTTPProblem
from ingest.replies import BEARER, INVALID, NOT_FOUND, TEXT, TOO_LARGE, UNAUTHORIZED
from query.reader import Reader

SQL_FORMATS = {
    "JSONCompact",
    "JSONEachRow",
    "CSVWithNames",
    "TSVWithNames",
    "PrettyCompact",
    "JSON",
}


async def post_sql(reader: Reader, request: Request) -> Response:
    supplied = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if reader.sink is None or not reader.sql_token:
        raise HTTPProblem(404, "not-found", "the SQL endpoint is not enabled here")
    if not hmac.compare_digest(supplied.encode(), reader.sql_token.encode()):
        raise HTTPProblem(401, "unauthorized", "a valid admin token is required")
    fmt = request.query_params.get("format", "JSONCompact")
    if fmt not in SQL_FORMATS:
        raise HTTPProblem(400, "bad-format", f"format must be one of {sorted(SQL_FORMATS)}")
    query = (await read_body(request, reader.max_sql_bytes)).decode("utf-8", "replace")
    try:
        out = await asyncio.to_thread(reader.sink.query_raw, query, fmt)
    except StoreError as exc:
        raise HTTPProblem(400, "sql-error", str(exc)) from exc
    return Response(out, 200, media_type="text/plain; charset=utf-8")


_FORMATS: list[JsonValue] = [*sorted(SQL_FORMATS)]
POST_SQL = Operation(
    "POST",
    "SQL on this process's store (admin token; meterline sql)",
    security=(BEARER,),
    parameters=(
        Param(
            "format",
            "query",
            Annotated[str, Field(json_schema_extra={"enum": _FORMATS})],
            "Default JSONCompact.",
        ),
    ),
    body=TEXT,
    responses={
        200: Reply("The engine's output.", TEXT),
        400: INVALID,
        401: UNAUTHORIZED,
        404: NOT_FOUND,
        413: TOO_LARGE,
    },
)
