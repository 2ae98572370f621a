"""``/v1/invoices``: close a period into frozen invoices, list and read them (JSON or CSV).

Scopes (docs/invoices.md): closing needs ``invoices``: it writes a record finance
sends to customers, so a key that only reads usage (a dashboard, a customer page)
must not be able to freeze a month early or re-bill from a test run. Reading
needs ``read``. Keys configured without ``scopes`` have every scope. Portal
tokens are not accepted here: an invoice is the tenant's record, not usage.

The tenant is the key's; the period is a month in the billing timezone
(``METERLINE_BILLING_TIMEZONE``), never a parameter: one tenant's invoices must
all be cut at the same instants.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from core.errors import StoreError
from ingest.guard import read_body
from ingest.openapi import Operation, Param, Reply
from ingest.problems import HTTPProblem
from ingest.replies import API_KEY, GUARDED, NOT_FOUND, TOO_LARGE, UNAVAILABLE, USAGE_INVALID
from ingest.replies import problem as problem_reply
from query.invoices import (
    CSV_COLUMNS,
    CloseRace,
    Invoice,
    InvoiceError,
    Invoices,
    Period,
    SourceConflict,
    check_id,
    csv_rows,
)
from query.reader import Reader
from schemas.problems import Problem

_MAX_BODY = 4096
_T = TypeVar("_T")
CSV_TYPE = "text/csv; charset=utf-8"
Label = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")]


class CloseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    period: str = Field(description="The month, YYYY-MM, in the billing timezone; must be over.")
    run: Label | None = Field(
        None, description="Close from this billing run (meterline replay --run); null: live."
    )
    subject: Label | None = Field(None, description="One customer; null: every customer.")


class LineView(BaseModel):
    line: int
    kind: Literal["usage", "charge"]
    type: str
    provider: str
    model: str
    feature: str
    unit: str
    description: str
    currency: str
    events: int
    unpriced_events: int
    quantity: str = Field(description="Tokens (input + output), images, units or charges.")
    input_tokens: int
    output_tokens: int
    unit_price: str = Field(description="Exact amount / quantity of the whole line (average).")
    amount: str = Field(description="Rounded half-even to the currency's minor units.")
    amount_exact: str
    price_books: list[str]


class TotalView(BaseModel):
    currency: str
    amount: str = Field(description="The exact sum rounded once (half-even).")
    amount_exact: str


class InvoiceView(BaseModel):
    id: str
    period: str
    timezone: str
    period_start: str
    period_end: str
    subject: str
    revision: int = Field(description="1: first close; later revisions carry the difference.")
    run: str | None = Field(description="The billing run it was closed from; null: live.")
    closed_at: str
    closed_by: str
    price_books: list[str]
    lines: list[LineView]
    totals: list[TotalView] = Field(description="One per currency: never added across.")


class InvoiceList(BaseModel):
    invoices: list[InvoiceView]


def _store(reader: Reader) -> Invoices:
    if reader.invoices is None:
        raise HTTPProblem(404, "not-found", "invoices are not served by this process (no store)")
    return reader.invoices


async def _run(work: Callable[[], _T]) -> _T:
    try:
        return await asyncio.to_thread(work)
    except SourceConflict as exc:
        raise HTTPProblem(409, "source-conflict", str(exc)) from None
    except CloseRace as exc:
        raise HTTPProblem(503, "close-race", str(exc), retry_after=1) from None
    except StoreError as exc:
        raise HTTPProblem(503, "store-unavailable", f"invoices: {exc}", retry_after=1) from exc
    except InvoiceError as exc:
        raise _invalid("run" if "billing run" in str(exc) else "period", str(exc)) from None


def _invalid(name: str, message: str) -> HTTPProblem:
    return HTTPProblem(422, "invalid-parameter", message, [Problem("invalid", name, message)])


def _format(request: Request) -> str:
    fmt = request.query_params.get("format")
    if fmt is None:
        accept = request.headers.get("accept", "")
        return "csv" if "text/csv" in accept and "application/json" not in accept else "json"
    if fmt not in ("json", "csv"):
        raise _invalid("format", "must be json or csv")
    return fmt


def _check_params(request: Request, allowed: set[str]) -> None:
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        raise HTTPProblem(
            422,
            "invalid-parameter",
            "unknown query parameters",
            [Problem("unknown", name, "not a parameter of this route") for name in unknown],
        )


def _answer(invoices: list[Invoice], fmt: str, single: bool = False) -> Response:
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180
        writer.writerow(CSV_COLUMNS)
        for row in csv_rows(invoices):
            writer.writerow(row)
        return Response(buffer.getvalue().encode(), 200, media_type=CSV_TYPE)
    body: Any = invoices[0].public() if single else {"invoices": [i.public() for i in invoices]}
    return Response(orjson.dumps(body), 200, media_type="application/json")


async def post_close(reader: Reader, request: Request) -> Response:
    key = reader.guard.authorize(request, "invoices")
    store = _store(reader)
    _check_params(request, set())
    raw = await read_body(request, _MAX_BODY)
    try:
        spec = CloseRequest.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        problems = [
            Problem(e["type"], ".".join(str(p) for p in e["loc"]) or "body", e["msg"])
            for e in exc.errors()
        ]
        raise HTTPProblem(422, "invalid-body", "the request body is invalid", problems) from None
    try:
        period = Period.parse(spec.period, reader.billing_timezone)
    except InvoiceError as exc:
        raise _invalid("period", str(exc)) from None
    closed = await _run(
        lambda: store.close(
            key.tenant, period, run=spec.run, subject=spec.subject, closed_by=key.key_hash
        )
    )
    return _answer(closed, "json")


async def list_invoices(reader: Reader, request: Request) -> Response:
    key = reader.guard.authorize(request, "read")
    store = _store(reader)
    _check_params(request, {"period", "subject", "format"})
    fmt = _format(request)
    period = request.query_params.get("period")
    if period is None:
        raise _invalid("period", "is required (YYYY-MM)")
    try:
        # Reading a running month is fine (nothing is there); only the format is checked.
        Period.parse(period, reader.billing_timezone, now_ms=2**62)
    except InvoiceError as exc:
        raise _invalid("period", str(exc)) from None
    subject = request.query_params.get("subject")
    found = await _run(lambda: store.list(key.tenant, period, subject))
    return _answer(found, fmt)


async def get_invoice(reader: Reader, request: Request) -> Response:
    key = reader.guard.authorize(request, "read")
    store = _store(reader)
    _check_params(request, {"format"})
    fmt = _format(request)
    try:
        invoice_id = check_id(str(request.path_params["invoice_id"]))
    except InvoiceError as exc:
        raise _invalid("invoice_id", str(exc)) from None
    found = await _run(lambda: store.get(key.tenant, invoice_id))
    if found is None:
        raise HTTPProblem(404, "invoice-not-found", f"no invoice {invoice_id} in this tenant")
    return _answer([found], fmt, single=True)


CONFLICT = problem_reply(
    "SourceConflict",
    "The period was last closed from a billing run; closing it from the live tables "
    "would undo that re-bill.",
)
_FORMAT = Param(
    "format",
    "query",
    Literal["json", "csv"],
    "Default json, or csv when Accept is text/csv.",
)
_STORED = {503: UNAVAILABLE, **GUARDED}

POST_CLOSE = Operation(
    "POST",
    "Close a month into frozen invoices, one per customer (API key scope: invoices)",
    description="Idempotent: closing again changes nothing. After a re-bill (a billing run) "
    "the close writes a new revision carrying exactly the difference. See docs/invoices.md.",
    security=API_KEY,
    body={"application/json": CloseRequest},
    responses={
        200: Reply(
            "The latest revision of each customer's invoice.", {"application/json": InvoiceList}
        ),
        404: NOT_FOUND,
        409: CONFLICT,
        413: TOO_LARGE,
        422: USAGE_INVALID,
        **_STORED,
    },
)
LIST_INVOICES = Operation(
    "GET",
    "Every invoice revision of a month (API key scope: read)",
    security=API_KEY,
    parameters=(
        Param("period", "query", str, "The month, YYYY-MM.", required=True),
        Param("subject", "query", str, "One customer."),
        _FORMAT,
    ),
    responses={
        200: Reply(
            "Revisions by customer, then revision.",
            {"application/json": InvoiceList, "text/csv": str},
        ),
        404: NOT_FOUND,
        422: USAGE_INVALID,
        **_STORED,
    },
)
GET_INVOICE = Operation(
    "GET",
    "One invoice revision (API key scope: read)",
    security=API_KEY,
    parameters=(
        Param("invoice_id", "path", str, "The invoice id (inv_...).", required=True),
        _FORMAT,
    ),
    responses={
        200: Reply("The revision.", {"application/json": InvoiceView, "text/csv": str}),
        404: NOT_FOUND,
        422: USAGE_INVALID,
        **_STORED,
    },
)
