"""The seed-compatible usage API: POST in process, GET through a real `meterline run`."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from core.log.base import TENANT_HEADER
from core.settings import load_settings
from ingest.auth import ApiKey, KeyStore, hash_key
from ingest.usage_api import UsageIn, request_hash
from meterline.runtime import build_price_book
from tests.ingest.conftest import ClientFactory, LogTap

BODY = {
    "project_id": "proj-1",
    "provider": "openai",
    "model": "gpt-4o",
    "input_tokens": 1000,
    "output_tokens": 500,
    "request_timestamp": "2025-01-01T12:00:00Z",
}


@pytest.fixture(scope="module")
def price_book() -> Any:
    return build_price_book(load_settings())


@pytest.mark.anyio
async def test_post_is_201_priced_and_logged_as_a_token_event(
    make_client: ClientFactory, tap: LogTap, price_book: Any
) -> None:
    store = KeyStore({hash_key("k"): ApiKey(hash_key("k"), "acme")})
    async with make_client(keys=store, price_book=price_book) as client:
        response = await client.post(
            "/api/usage",
            json={**BODY, "extra_field_from_the_portal": 1},
            headers={"x-api-key": "k", "idempotency-key": "req-42"},
        )
    assert response.status_code == 201
    assert response.json() == {
        "id": "req-42",
        "project_id": "proj-1",
        "provider": "openai",
        "model": "gpt-4o",
        "input_tokens": 1000,
        "output_tokens": 500,
        "total_tokens": 1500,
        "cost_usd": 0.0075,  # $2.50/M in + $10/M out, from the same price book
        "priced": True,
        "request_timestamp": "2025-01-01T12:00:00.000Z",
    }
    [record] = tap.records()
    assert record.key == b"req-42"
    assert record.header(TENANT_HEADER) == b"acme"
    assert orjson.loads(record.value) == {
        "specversion": "1.0",
        "id": "req-42",
        "source": "/api/usage",
        "type": "io.meterline.usage.tokens",
        "subject": "proj-1",
        "time": "2025-01-01T12:00:00.000Z",
        "datacontenttype": "application/json",
        # What a reuse of the key must repeat (docs/gateway.md#idempotency-key).
        "requesthash": request_hash(UsageIn.model_validate(BODY)),
        "data": {
            "provider": "openai",
            "model": "gpt-4o",
            "input_tokens": 1000,
            "output_tokens": 500,
        },
    }


@pytest.mark.anyio
async def test_post_without_idempotency_key_gets_a_uuid_and_unknown_models_are_unpriced(
    make_client: ClientFactory, price_book: Any
) -> None:
    async with make_client(price_book=price_book) as client:
        response = await client.post("/api/usage", json={**BODY, "model": "my-own-llm"})
    body = response.json()
    assert response.status_code == 201
    assert len(body["id"]) == 36 and body["id"].count("-") == 4
    assert (body["cost_usd"], body["priced"]) == (0, False)


@pytest.mark.anyio
async def test_invalid_usage_is_422_naming_each_field_and_logs_nothing(
    make_client: ClientFactory, tap: LogTap, price_book: Any
) -> None:
    bad = {**BODY, "input_tokens": -1, "model": ""}
    del bad["provider"]
    async with make_client(price_book=price_book) as client:
        response = await client.post("/api/usage", json=bad)
        not_json = await client.post(
            "/api/usage", content=b"{", headers={"content-type": "application/json"}
        )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "type": "https://meterline.dev/problems/invalid-usage",
        "title": "Unprocessable content",
        "status": 422,
        "detail": "the usage record is invalid",
        "problems": [
            {"code": "missing", "field": "provider", "message": "Field required"},
            {
                "code": "string_too_short",
                "field": "model",
                "message": "String should have at least 1 character",
            },
            {
                "code": "greater_than_equal",
                "field": "input_tokens",
                "message": "Input should be greater than or equal to 0",
            },
        ],
    }
    assert not_json.status_code == 422
    assert [p["code"] for p in not_json.json()["problems"]] == ["json_invalid"]
    assert tap.count() == 0
