"""The seed-compatible usage API: POST in process, GET through a real `meterline run`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from core.log.base import TENANT_HEADER
from core.settings import load_settings
from ingest.auth import ApiKey, KeyStore, hash_key
from ingest.usage_api import UsageIn, request_hash
from meterline.runtime import build_price_book
from tests.conftest import MeterlineFactory
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


@pytest.mark.anyio
async def test_get_without_a_store_is_404_and_bad_query_is_422(
    make_client: ClientFactory,
) -> None:
    async with make_client() as client:
        no_store = await client.get("/api/usage", params={"project_id": "p"})
        bad = await client.get("/api/usage", params={"date_from": "yesterday", "limit": "0"})
    assert no_store.status_code == 404
    assert no_store.json()["type"].endswith("/reads-not-served-here")
    assert bad.status_code == 422
    assert [(p["field"], p["code"]) for p in bad.json()["problems"]] == [
        ("date_from", "invalid"),
        ("limit", "invalid"),
    ]


@pytest.mark.slow
def test_get_returns_only_the_callers_tenant_from_clickhouse(
    meterline_factory: MeterlineFactory, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text(
        f"{hash_key('key-a')}: tenant-a\n"
        f"{hash_key('key-b')}: tenant-b\n"
        f"{hash_key('key-a-ingest')}: {{tenant: tenant-a, scopes: [ingest]}}\n"
    )
    stack = meterline_factory(
        METERLINE_API_KEYS_FILE=str(keys), METERLINE_OPEN_MODE="false", METERLINE_PARTITIONS="2"
    )

    def call(method: str, key: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method, f"{stack.url}/api/usage", headers={"x-api-key": key}, timeout=30, **kwargs
        )

    # Recent: events older than the dedupe horizon (35 days) go to the DLQ, not the table.
    recent = {**BODY, "request_timestamp": (datetime.now(UTC) - timedelta(hours=1)).isoformat()}
    a = call("POST", "key-a", json=recent)
    a_again = call("POST", "key-a", json={**recent, "input_tokens": 1})
    b = call("POST", "key-b", json={**recent, "project_id": "proj-b"})
    assert (a.status_code, a_again.status_code, b.status_code) == (201, 201, 201)
    stack.wait_stored(3)

    since = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    mine = call("GET", "key-a", params={"project_id": "proj-1", "date_from": since})
    assert mine.status_code == 200
    assert mine.json()["count"] == 2
    assert {row["id"] for row in mine.json()["usage"]} == {a.json()["id"], a_again.json()["id"]}
    stored = {**a.json()}
    del stored["priced"]  # rows carry what the seed API returned, the flag is POST-only
    assert stored in mine.json()["usage"]
    theirs = call("GET", "key-b").json()
    assert [row["project_id"] for row in theirs["usage"]] == ["proj-b"]
    assert call("GET", "key-b", params={"project_id": "proj-1"}).json()["count"] == 0
    outside = call("GET", "key-a", params={"date_from": "2100-01-02", "date_to": "2100-01-03"})
    assert outside.json() == {"count": 0, "usage": []}
    injected = call("GET", "key-a", params={"project_id": "x' OR 1=1 OR subject = '"})
    assert injected.json() == {"count": 0, "usage": []}
    assert call("GET", "key-a-ingest").status_code == 403
    assert call("GET", "nope").status_code == 401
