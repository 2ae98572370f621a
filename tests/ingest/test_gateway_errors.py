"""Bad input gets a specific 4xx problem document, and nothing reaches the log."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from ingest.app import Gateway, create_app
from meterline.log.embedded import EmbeddedAdmin, EmbeddedProducer

pytestmark = pytest.mark.anyio
TOPIC = "events"


def event(i: int = 0, **data: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"chatcmpl-{i}",
        "source": "/app",
        "type": "io.meterline.usage.tokens",
        "subject": "acme",
        "data": {"provider": "openai", "model": "gpt-4o", "input_tokens": 3, **data},
    }


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    path = tmp_path / "log.sqlite3"
    EmbeddedAdmin(path).ensure_topic(TOPIC, 2)
    return path


@pytest.fixture
def producer(log_path: Path) -> Iterator[EmbeddedProducer]:
    producer = EmbeddedProducer(log_path, TOPIC)
    yield producer
    producer.close()


@pytest.fixture
async def client(producer: EmbeddedProducer) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        Gateway(
            producer,
            tenant="t1",
            max_body_bytes=200_000,
            max_event_bytes=100_000,
            max_batch_events=10,
        )
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        yield client


def logged(log_path: Path) -> int:
    return sum(EmbeddedAdmin(log_path).end_offsets(TOPIC).values())


BATCH = "application/cloudevents-batch+json"
STRUCTURED = "application/cloudevents+json"


async def post(client: httpx.AsyncClient, body: Any, content_type: str = BATCH) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return await client.post("/v1/events", content=content, headers={"content-type": content_type})


async def test_valid_batch_is_logged_with_tenant_header(
    client: httpx.AsyncClient, log_path: Path
) -> None:
    response = await post(client, [event(1), event(2)])
    assert response.status_code == 202
    assert response.json() == {"accepted": 2}
    assert logged(log_path) == 2


async def test_malformed_json_is_400(client: httpx.AsyncClient, log_path: Path) -> None:
    response = await post(client, b'[{"specversion": "1.0",', BATCH)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/malformed-json")
    assert logged(log_path) == 0


async def test_one_bad_event_rejects_the_whole_batch_with_its_index(
    client: httpx.AsyncClient, log_path: Path
) -> None:
    bad = event(2)
    del bad["source"]
    response = await post(client, [event(1), bad, event(3, input_tokens=-5)])
    assert response.status_code == 400
    body = response.json()
    assert body["status"] == 400
    assert [(p["index"], p["field"], p["code"]) for p in body["problems"]] == [
        (1, "source", "missing"),
        (2, "data.input_tokens", "greater_than_equal"),
    ]
    assert logged(log_path) == 0


async def test_wrong_types_are_400_naming_the_field(
    client: httpx.AsyncClient, log_path: Path
) -> None:
    response = await post(client, event(1, output_tokens="many"), STRUCTURED)
    assert response.status_code == 400
    assert response.json()["problems"] == [
        {
            "code": "int_type",
            "field": "data.output_tokens",
            "message": "Input should be a valid integer",
        }
    ]
    assert logged(log_path) == 0


async def test_oversized_body_is_413(client: httpx.AsyncClient, log_path: Path) -> None:
    big = [event(i, metadata={"note": "x" * 1000}) for i in range(250)]
    response = await post(client, big)
    assert response.status_code == 413
    assert response.json()["type"].endswith("/body-too-large")
    assert logged(log_path) == 0


async def test_too_many_events_in_one_request_is_413(
    client: httpx.AsyncClient, log_path: Path
) -> None:
    response = await post(client, [event(i) for i in range(11)])
    assert response.status_code == 413
    assert response.json()["type"].endswith("/batch-too-large")
    assert logged(log_path) == 0


async def test_oversized_event_is_413_but_64_kib_is_accepted(
    client: httpx.AsyncClient, log_path: Path
) -> None:
    ok = {
        "specversion": "1.0",
        "id": "big",
        "source": "/a",
        "type": "com.acme.blob",
        "data": {"blob": "x" * 65_536},
    }
    assert (await post(client, ok, STRUCTURED)).status_code == 202
    too_big = dict(ok, id="bigger", data={"blob": "x" * 120_000})
    response = await post(client, too_big, STRUCTURED)
    assert response.status_code == 413
    assert response.json()["problems"][0]["code"] == "event_too_large"
    assert logged(log_path) == 1


async def test_unsupported_media_type_is_415(client: httpx.AsyncClient, log_path: Path) -> None:
    response = await post(client, orjson.dumps(event()), "text/plain")
    assert response.status_code == 415
    assert logged(log_path) == 0


async def test_structured_mode_requires_one_object(
    client: httpx.AsyncClient, log_path: Path
) -> None:
    response = await post(client, [event()], STRUCTURED)
    assert response.status_code == 400
    assert response.json()["type"].endswith("/not-an-event")
    assert logged(log_path) == 0
