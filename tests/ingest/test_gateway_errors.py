"""Every status of POST /v1/events: the exact response, and what reached the log.

A refused request must leave the log untouched (the request is all-or-nothing);
an accepted one must be in the log as sent, with the key's tenant.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import orjson
import pytest

from core.errors import LogUnavailable
from core.log.base import TENANT_HEADER, LogProducer, OutMessage
from ingest.auth import ApiKey, KeyStore, hash_key
from ingest.ratelimit import RateLimiter
from tests.ingest.conftest import BATCH, STRUCTURED, ClientFactory, LogTap

pytestmark = pytest.mark.anyio
PROBLEM = "application/problem+json"
ACME_KEY, READER_KEY, LIMITED_KEY = "mlk_acme-secret", "mlk_reader-secret", "mlk_limited-secret"


def event(i: int = 0, **data: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"chatcmpl-{i}",
        "source": "/app",
        "type": "io.meterline.usage.tokens",
        "subject": "acme",
        "data": {"provider": "openai", "model": "gpt-4o", "input_tokens": 3, **data},
    }


def keys() -> KeyStore:
    return KeyStore(
        {
            hash_key(ACME_KEY): ApiKey(hash_key(ACME_KEY), "acme"),
            hash_key(READER_KEY): ApiKey(hash_key(READER_KEY), "acme", scopes=frozenset({"read"})),
            hash_key(LIMITED_KEY): ApiKey(hash_key(LIMITED_KEY), "slow", rate_limit=0.5, burst=1),
        }
    )


async def post(
    client: httpx.AsyncClient,
    body: Any,
    content_type: str = BATCH,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return await client.post(
        "/v1/events", content=content, headers={"content-type": content_type, **(headers or {})}
    )


def problem(status: int, code: str, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": f"https://meterline.dev/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        **extra,
    }


def assert_problem(response: httpx.Response, expected: dict[str, Any]) -> None:
    assert response.headers["content-type"] == PROBLEM
    assert response.json() == expected
    assert response.status_code == expected["status"]


# --- 202 ---------------------------------------------------------------------------


async def test_valid_batch_is_logged_as_sent_with_the_tenant_of_the_key(
    make_client: ClientFactory, tap: LogTap
) -> None:
    sent = [event(1), event(2)]
    sent[1]["tenant"] = "someone-else"  # an extension; it must not choose the tenant
    async with make_client(keys=keys()) as client:
        response = await post(client, sent, headers={"authorization": f"Bearer {ACME_KEY}"})
    assert response.status_code == 202
    assert response.json() == {"accepted": 2}
    records = tap.records()
    assert sorted((orjson.loads(r.value) for r in records), key=lambda e: e["id"]) == sent
    assert {r.header(TENANT_HEADER) for r in records} == {b"acme"}
    assert {r.key for r in records} == {b"chatcmpl-1", b"chatcmpl-2"}


async def test_x_api_key_header_works_like_bearer(make_client: ClientFactory, tap: LogTap) -> None:
    async with make_client(keys=keys()) as client:
        response = await post(client, event(1), STRUCTURED, {"x-api-key": ACME_KEY})
    assert response.status_code == 202
    assert [r.header(TENANT_HEADER) for r in tap.records()] == [b"acme"]


async def test_null_attributes_are_logged_as_unset(make_client: ClientFactory, tap: LogTap) -> None:
    sent = dict(event(1), time=None, dataschema=None)
    async with make_client() as client:
        assert (await post(client, sent, STRUCTURED)).status_code == 202
    assert orjson.loads(tap.records()[0].value) == event(1)


async def test_empty_batch_is_accepted_and_logs_nothing(
    make_client: ClientFactory, tap: LogTap
) -> None:
    async with make_client() as client:
        response = await post(client, [])
    assert (response.status_code, response.json()) == (202, {"accepted": 0})
    assert tap.count() == 0


# --- 400 ---------------------------------------------------------------------------


async def test_malformed_json_is_400(make_client: ClientFactory, tap: LogTap) -> None:
    async with make_client() as client:
        response = await post(client, b'[{"specversion": "1.0",', BATCH)
    assert_problem(
        response,
        problem(
            400,
            "malformed-json",
            "Invalid events",
            "body is not valid JSON: unexpected end of data: line 1 column 24 (char 23)",
        ),
    )
    assert tap.count() == 0


async def test_one_bad_event_rejects_the_whole_batch_naming_each_index(
    make_client: ClientFactory, tap: LogTap
) -> None:
    bad = event(2)
    del bad["source"]
    async with make_client() as client:
        response = await post(client, [event(1), bad, event(3, input_tokens=-5)])
    assert_problem(
        response,
        problem(
            400,
            "invalid-events",
            "Invalid events",
            "2 of 3 events are invalid; nothing was accepted",
            problems=[
                {"index": 1, "field": "source", "code": "missing", "message": "Field required"},
                {
                    "index": 2,
                    "field": "data.input_tokens",
                    "code": "greater_than_equal",
                    "message": "Input should be greater than or equal to 0",
                },
            ],
        ),
    )
    assert tap.count() == 0


async def test_a_batch_of_one_still_names_the_index(make_client: ClientFactory) -> None:
    async with make_client() as client:
        response = await post(client, [dict(event(), id="")])
    assert response.json()["problems"] == [
        {
            "index": 0,
            "field": "id",
            "code": "string_too_short",
            "message": "String should have at least 1 character",
        }
    ]


async def test_wrong_types_are_400_naming_the_field(
    make_client: ClientFactory, tap: LogTap
) -> None:
    async with make_client() as client:
        response = await post(client, event(1, output_tokens="many"), STRUCTURED)
    assert_problem(
        response,
        problem(
            400,
            "invalid-events",
            "Invalid events",
            "1 of 1 events are invalid; nothing was accepted",
            problems=[
                {
                    "code": "int_type",
                    "field": "data.output_tokens",
                    "message": "Input should be a valid integer",
                }
            ],
        ),
    )
    assert tap.count() == 0


async def test_structured_mode_requires_one_object(make_client: ClientFactory, tap: LogTap) -> None:
    async with make_client() as client:
        response = await post(client, [event()], STRUCTURED)
    assert_problem(
        response,
        problem(
            400,
            "not-an-event",
            "Invalid events",
            "application/cloudevents+json needs one JSON object",
        ),
    )
    assert tap.count() == 0


# --- 401 / 403 -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "code", "detail"),
    [
        (
            {},
            "missing-api-key",
            "send an API key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
        ),
        ({"authorization": "Bearer mlk_wrong"}, "invalid-api-key", "the API key is not valid"),
        ({"x-api-key": "mlk_wrong"}, "invalid-api-key", "the API key is not valid"),
        (
            {"authorization": f"Basic {ACME_KEY}"},
            "invalid-authorization",
            "Authorization must be 'Bearer <api key>' (or send X-API-Key)",
        ),
    ],
)
async def test_missing_or_wrong_key_is_401(
    make_client: ClientFactory, tap: LogTap, headers: dict[str, str], code: str, detail: str
) -> None:
    async with make_client(keys=keys()) as client:
        response = await post(client, [event(1)], headers=headers)
    assert_problem(response, problem(401, code, "Authentication required", detail))
    assert response.headers["www-authenticate"] == 'Bearer realm="meterline"'
    assert tap.count() == 0


async def test_key_without_the_ingest_scope_is_403(make_client: ClientFactory, tap: LogTap) -> None:
    async with make_client(keys=keys()) as client:
        response = await post(client, [event(1)], headers={"x-api-key": READER_KEY})
    assert_problem(
        response,
        problem(
            403,
            "forbidden",
            "Forbidden",
            "this API key does not have the 'ingest' scope (it has read)",
        ),
    )
    assert tap.count() == 0


# --- 413 ---------------------------------------------------------------------------


async def test_oversized_body_is_413(make_client: ClientFactory, tap: LogTap) -> None:
    big = [event(i, metadata={"note": "x" * 1000}) for i in range(250)]
    async with make_client() as client:
        response = await post(client, big)
    size = len(orjson.dumps(big))
    assert_problem(
        response,
        problem(413, "body-too-large", "Payload too large", f"body of {size} bytes exceeds 200000"),
    )
    assert tap.count() == 0


async def test_oversized_streamed_body_without_length_is_413(
    make_client: ClientFactory, tap: LogTap
) -> None:
    async def chunks() -> Any:
        for _ in range(30):
            yield b" " * 10_000

    async with make_client() as client:
        response = await client.post(
            "/v1/events", content=chunks(), headers={"content-type": BATCH}
        )
    assert_problem(
        response,
        problem(413, "body-too-large", "Payload too large", "body exceeds 200000 bytes"),
    )
    assert tap.count() == 0


async def test_too_many_events_in_one_request_is_413(
    make_client: ClientFactory, tap: LogTap
) -> None:
    async with make_client() as client:
        response = await post(client, [event(i) for i in range(11)])
    assert_problem(
        response,
        problem(
            413,
            "batch-too-large",
            "Payload too large",
            "11 events in one request; the limit is 10",
        ),
    )
    assert tap.count() == 0


async def test_oversized_event_is_413_but_64_kib_is_accepted(
    make_client: ClientFactory, tap: LogTap
) -> None:
    ok = {
        "specversion": "1.0",
        "id": "big",
        "source": "/a",
        "type": "com.acme.blob",
        "data": {"blob": "x" * 65_536},
    }
    too_big = dict(ok, id="bigger", data={"blob": "x" * 120_000})
    async with make_client() as client:
        assert (await post(client, ok, STRUCTURED)).status_code == 202
        response = await post(client, [ok, too_big])
    size = len(orjson.dumps(too_big))
    assert_problem(
        response,
        problem(
            413,
            "event-too-large",
            "Payload too large",
            "an event exceeds the size limit",
            problems=[
                {
                    "index": 1,
                    "field": "event",
                    "code": "event_too_large",
                    "message": f"{size} bytes; the limit is 100000",
                }
            ],
        ),
    )
    assert [orjson.loads(r.value)["id"] for r in tap.records()] == ["big"]


# --- 415 ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "shown"),
    [("text/plain", "text/plain"), ("application/cloudevents+xml", "application/cloudevents+xml")],
)
async def test_unsupported_media_type_is_415(
    make_client: ClientFactory, tap: LogTap, content_type: str, shown: str
) -> None:
    async with make_client() as client:
        response = await post(client, orjson.dumps(event()), content_type)
    assert_problem(
        response,
        problem(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            f"Content-Type {shown!r} is not accepted; use one of application/cloudevents+json, "
            "application/cloudevents-batch+json, application/json, or binary mode (any media "
            "type with ce-specversion and the other ce- headers)",
        ),
    )
    assert tap.count() == 0


# --- 429 ---------------------------------------------------------------------------


async def test_over_the_key_rate_is_429_with_retry_after(
    make_client: ClientFactory, tap: LogTap
) -> None:
    now = [100.0]
    limiter = RateLimiter(clock=lambda: now[0])
    headers = {"x-api-key": LIMITED_KEY}
    async with make_client(keys=keys(), limiter=limiter) as client:
        assert (await post(client, [event(1)], headers=headers)).status_code == 202
        now[0] += 0.5  # a quarter of a token back at 0.5/s: 1.5 s to go, rounded up
        response = await post(client, [event(2)], headers=headers)
        assert_problem(
            response,
            problem(
                429,
                "rate-limited",
                "Too many requests",
                "this API key is over its request rate; retry after Retry-After seconds",
            ),
        )
        assert response.headers["retry-after"] == "2"
        other = await post(client, [event(3)], headers={"x-api-key": ACME_KEY})
        assert other.status_code == 202  # buckets are per key
        now[0] += 1.5
        assert (await post(client, [event(2)], headers=headers)).status_code == 202
    assert sorted(orjson.loads(r.value)["id"] for r in tap.records()) == [
        "chatcmpl-1",
        "chatcmpl-2",
        "chatcmpl-3",
    ]


# --- 503 ---------------------------------------------------------------------------


class UnavailableLog(LogProducer):
    """A log that never acknowledges (the real Kafka case is in test_kafka_unavailable.py)."""

    topic = "events"

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        raise LogUnavailable("Kafka did not acknowledge in time", retry_after=2.0)

    def publish_sync(self, messages: Sequence[OutMessage]) -> None:
        raise LogUnavailable("Kafka did not acknowledge in time", retry_after=2.0)

    def ready(self) -> bool:
        return False

    def close(self) -> None:
        pass


async def test_log_that_cannot_acknowledge_is_503_with_retry_after(
    make_client: ClientFactory,
) -> None:
    async with make_client(log_producer=UnavailableLog()) as client:
        response = await post(client, [event(1)])
        ready = await client.get("/readyz")
    assert_problem(
        response,
        problem(
            503,
            "log-unavailable",
            "Log unavailable",
            "Kafka did not acknowledge in time; nothing is acknowledged, retry the same request",
        ),
    )
    assert response.headers["retry-after"] == "2"
    assert ready.status_code == 503
    assert ready.json()["problems"] == [
        {"code": "unreachable", "field": "log", "message": "the log did not answer in time"}
    ]


# --- 404 / 405 -----------------------------------------------------------------------


async def test_unknown_route_and_method_are_problem_documents(make_client: ClientFactory) -> None:
    async with make_client() as client:
        missing = await client.get("/v2/events")
        wrong = await client.get("/v1/events")
    assert_problem(missing, problem(404, "not-found", "Not found", "Not Found"))
    assert_problem(
        wrong, problem(405, "method-not-allowed", "Method not allowed", "Method Not Allowed")
    )
    # Starlette builds Allow from a set: the order varies between processes.
    assert sorted(wrong.headers["allow"].split(", ")) == ["OPTIONS", "POST"]
