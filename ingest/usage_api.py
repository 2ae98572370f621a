"""The seed-compatible usage API's write half: ``POST /api/usage``.

(``GET /api/usage`` is read-side: ``query/usage.py``.)

Users coming from a portal with this API keep their client code. A POST is a
token-usage CloudEvent like any other (``io.meterline.usage.tokens``, subject =
``project_id``, source ``/api/usage``, id = the ``Idempotency-Key`` header or a
new UUID), validated by the same rules and answered only once the log has it;
``cost_usd`` is computed synchronously by the processor's own price book, so the
answer and the stored row agree. Re-sending with the same Idempotency-Key is
safe: the processor keeps one event per (tenant, source, id).

Idempotency-Key (docs/gateway.md#idempotency-key): the event carries a hash of
the request's parameters (extension ``requesthash``); the processor's dedupe,
one partition per id, decides which request with a key is the first. With a key,
the answer is the stored row (looked up, or waited for after publishing): the
same parameters get the first answer (same id, same cost_usd), different ones
409. No shared state in the gateway, so it holds across processes and restarts.

Fields the seed API did not define are ignored (as the seed's own server did),
while every field it defines is required or checked, so a misspelt required
field fails instead of billing zero.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
)
from starlette.requests import Request
from starlette.responses import Response

from ingest.codec import media_type
from ingest.gateway import Gateway
from ingest.openapi import Operation, Param, Reply
from ingest.problems import HTTPProblem
from ingest.replies import (
    API_KEY,
    GUARDED,
    KEY_REUSED,
    NOT_SERVED,
    TOO_LARGE,
    UNAVAILABLE,
    UNSUPPORTED_MEDIA_TYPE,
    USAGE_INVALID,
)
from schemas.envelope import parse_event
from schemas.limits import EARLIEST_TIME, LATEST_TIME, TIME_RANGE_MESSAGE
from schemas.problems import Problem
from schemas.providers import ProviderName
from schemas.times import format_ms, to_ms
from schemas.usage import MAX_TOKENS, EventType

SOURCE = "/api/usage"
MAX_IDEMPOTENCY_KEY = 255
_LATEST = datetime(2200, 1, 1, tzinfo=UTC)
Name = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f-\x9f]+$")]
Tokens = Annotated[int, Field(ge=0, le=MAX_TOKENS, strict=True)]


class UsageIn(BaseModel):
    """The body of ``POST /api/usage``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    project_id: Name
    provider: ProviderName
    model: Name
    input_tokens: Tokens
    output_tokens: Tokens
    request_timestamp: datetime | None = None

    @field_validator("request_timestamp")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        # The event's time: the same bound the envelope applies, named after this field.
        if not EARLIEST_TIME <= value < LATEST_TIME:
            raise ValueError(TIME_RANGE_MESSAGE)
        return value


class UsageOut(BaseModel):
    """One usage record as the seed API answered it (``GET /api/usage`` rows)."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="The Idempotency-Key, or a new UUID.")
    project_id: str
    provider: str
    model: str
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    total_tokens: int = Field(ge=0)
    cost_usd: SeedDecimal = Field(
        description="Provider cost in USD, a JSON number written with the exact decimal "
        "digits of the stored Decimal (0 when unpriced).",
    )
    request_timestamp: str = Field(json_schema_extra={"format": "date-time"})


class UsageRecorded(UsageOut):
    """The answer to ``POST /api/usage``: the record and whether a price rule matched."""

    priced: bool = Field(description="False when no price rule matched.")


@dataclass(frozen=True)
class StoredUsage:
    """What the store holds for one ``/api/usage`` event."""

    request_hash: str
    cost_usd: Decimal
    priced: bool
    time: str  # RFC 3339, milliseconds, UTC


# (tenant, id) -> the stored row of source /api/usage, or None: built by the shell.
UsageLookup = Callable[[str, str], StoredUsage | None]
REQUEST_HASH = "requesthash"


def request_hash(usage: UsageIn) -> str:
    """The parameters a reused Idempotency-Key must repeat (Stripe's rule).

    ``request_timestamp`` counts only when sent: a retry without one is the same
    request even though its arrival time differs.
    """
    stamp = None if usage.request_timestamp is None else to_ms(usage.request_timestamp)
    canonical = orjson.dumps(
        [usage.project_id, usage.provider, usage.model, usage.input_tokens,
         usage.output_tokens, stamp]
    )  # fmt: skip
    return hashlib.sha256(canonical).hexdigest()[:32]


def decimal_str(value: Decimal) -> str:
    """Exact, no exponent, no trailing zeros: Decimal('0.004500000000') -> '0.0045'."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


# The seed API answered cost_usd as a JSON number and its clients compute with
# it (f"{cost_usd:.4f}", sum(...)): a string there raised in their code. The
# number is written with the Decimal's own digits (orjson.Fragment), never via a
# float, so 0.000000123456789012 reaches the client as stored. The native /v1
# API keeps decimal strings: a JSON parser reading doubles cannot round those.
SeedDecimal = Annotated[
    Decimal, WithJsonSchema({"type": "number", "minimum": 0, "title": "Cost Usd"})
]


def _exact_number(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(decimal_str(value).encode("ascii"))
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def seed_json(model: BaseModel, status_code: int = 200) -> Response:
    """A seed-compatible answer: the model's fields, Decimals as exact JSON numbers."""
    return Response(
        orjson.dumps(model.model_dump(), default=_exact_number),
        status_code=status_code,
        media_type="application/json",
    )


async def post_usage(gateway: Gateway, request: Request) -> Response:
    key = gateway.authorize(request, "ingest")
    kind = media_type(request.headers.get("content-type"))
    if kind and kind != "application/json" and not kind.endswith("+json"):
        raise HTTPProblem(415, "unsupported-media-type", "send the usage as application/json")
    body = await gateway.read_body(request)
    try:
        usage = UsageIn.model_validate_json(body or b"null")
    except ValidationError as exc:
        raise HTTPProblem(
            422, "invalid-usage", "the usage record is invalid", _problems(exc)
        ) from None
    given_key = request.headers.get("idempotency-key", "").strip()
    event_id = given_key or str(uuid.uuid4())
    if len(event_id) > MAX_IDEMPOTENCY_KEY:
        raise HTTPProblem(
            422,
            "invalid-usage",
            "the usage record is invalid",
            [Problem("too_long", "Idempotency-Key", f"at most {MAX_IDEMPOTENCY_KEY} characters")],
        )
    moment = usage.request_timestamp or datetime.now(UTC)
    stamp = format_ms(moment)
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id,
        "source": SOURCE,
        "type": EventType.TOKENS.value,
        "subject": usage.project_id,
        "time": stamp,
        "datacontenttype": "application/json",
        REQUEST_HASH: request_hash(usage),
        "data": {
            "provider": usage.provider,
            "model": usage.model,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
        },
    }
    parsed = parse_event(event)
    if isinstance(parsed, list):  # only the Idempotency-Key can still be wrong here
        problems = [
            Problem(p.code, "Idempotency-Key" if p.field == "id" else p.field, p.message)
            for p in parsed
        ]
        raise HTTPProblem(422, "invalid-usage", "the usage record is invalid", problems)
    price_book = gateway.price_book
    if price_book is None:
        raise HTTPProblem(501, "pricing-not-configured", "this gateway has no price book")
    priced = price_book.price(EventType.TOKENS.value, parsed.usage, to_ms(moment), usage.project_id)
    # The answer is built (and checked against its model) before anything is
    # logged: failing after the publish would answer 500 for a logged event, and a
    # retry without Idempotency-Key would then bill it twice.
    recorded = UsageRecorded(
        id=event_id,
        project_id=usage.project_id,
        provider=usage.provider,
        model=usage.model,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        total_tokens=usage.input_tokens + usage.output_tokens,
        cost_usd=priced.cost_usd,
        priced=priced.priced,
        request_timestamp=stamp,
    )
    request.state.events = 1
    lookup: UsageLookup | None = gateway.stored_usage
    if given_key and lookup is not None:
        stored = await asyncio.to_thread(lookup, key.tenant, event_id)
        if stored is None:
            await gateway.publish(gateway.messages([(parsed, orjson.dumps(event))], key.tenant))
            stored = await _wait_stored(lookup, key.tenant, event_id, gateway.usage_wait_s)
        if stored.request_hash != event[REQUEST_HASH]:
            raise HTTPProblem(
                409,
                "idempotency-key-reused",
                f"Idempotency-Key {event_id!r} was already used with different parameters; "
                "use a new key for a new request",
                [Problem("reused", "Idempotency-Key", "already used with other parameters")],
                title="Idempotency-Key reused",
            )
        return _answer(
            recorded.model_copy(
                update={
                    "cost_usd": stored.cost_usd,
                    "priced": stored.priced,
                    "request_timestamp": stored.time,
                }
            )
        )
    await gateway.publish(gateway.messages([(parsed, orjson.dumps(event))], key.tenant))
    return _answer(recorded)


async def _wait_stored(
    lookup: UsageLookup, tenant: str, event_id: str, wait_s: float
) -> StoredUsage:
    """The processor decides which request with this key came first: wait for its row."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        stored = await asyncio.to_thread(lookup, tenant, event_id)
        if stored is not None:
            return stored
    # Durable in the log already: the retry finds the row (or waits again).
    raise HTTPProblem(
        503,
        "usage-not-stored-yet",
        "the usage is recorded but not processed yet; retry with the same Idempotency-Key",
        retry_after=1,
    )


def _answer(recorded: UsageRecorded) -> Response:
    return seed_json(recorded, 201)


def _problems(exc: ValidationError) -> list[Problem]:
    out = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(part) for part in err["loc"]) or "body"
        out.append(Problem(err["type"], field, err["msg"].removeprefix("Value error, ")))
    return out


POST_USAGE = Operation(
    "POST",
    "Record one LLM call (seed-compatible usage API)",
    security=API_KEY,
    parameters=(
        Param(
            "Idempotency-Key",
            "header",
            Annotated[str, Field(max_length=MAX_IDEMPOTENCY_KEY)],
            "Becomes the event id; re-sending the same request returns the stored result, "
            "re-using it with other parameters is 409.",
        ),
    ),
    body={"application/json": UsageIn},
    responses={
        201: Reply("Logged and priced.", {"application/json": UsageRecorded}),
        409: KEY_REUSED,
        413: TOO_LARGE,
        415: UNSUPPORTED_MEDIA_TYPE,
        422: USAGE_INVALID,
        501: NOT_SERVED,
        503: UNAVAILABLE,
        **GUARDED,
    },
)
