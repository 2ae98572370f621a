"""``GET /api/usage`` (the read side): parameters checked, one tenant's rows, through a real run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from ingest.auth import hash_key
from tests.conftest import MeterlineFactory
from tests.ingest.conftest import ClientFactory
from tests.ingest.test_usage_api import BODY


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
