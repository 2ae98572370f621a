"""The gateway refuses what cannot be stored (issue 11): a 400/422 naming the
field and the rule, never a 5xx, and nothing reaches the log."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.ingest.conftest import STRUCTURED, ClientFactory, LogTap
from tests.support.unstorable import UNSTORABLE, custom_event

pytestmark = pytest.mark.anyio


def invalid_events(problems: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "https://meterline.dev/problems/invalid-events",
        "title": "Invalid events",
        "status": 400,
        "detail": "1 of 1 events are invalid; nothing was accepted",
        "problems": problems,
    }


@pytest.mark.parametrize(
    ("event", "expected"),
    [pytest.param(event, expected, id=name) for name, event, expected in UNSTORABLE],
)
async def test_unstorable_event_is_400_naming_the_field_and_nothing_is_logged(
    make_client: ClientFactory,
    tap: LogTap,
    event: dict[str, Any],
    expected: list[tuple[str, str, str]],
) -> None:
    async with make_client() as client:
        # json, not orjson: orjson cannot write the 500-deep case, a client can.
        response = await client.post(
            "/v1/events", content=json.dumps(event), headers={"content-type": STRUCTURED}
        )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == invalid_events(
        [{"field": f, "code": c, "message": m} for f, c, m in expected]
    )
    assert tap.count() == 0


async def test_a_batch_names_each_unstorable_event_by_index(
    make_client: ClientFactory, tap: LogTap
) -> None:
    batch = [
        custom_event({"quantity": "2"}, id="ok"),
        custom_event({"quantity": "-1"}, id="neg"),
        custom_event(time="9999-12-31T23:59:59Z", id="far"),
    ]
    async with make_client() as client:
        response = await client.post(
            "/v1/events",
            content=json.dumps(batch),
            headers={"content-type": "application/cloudevents-batch+json"},
        )
    assert response.status_code == 400
    assert [(p["index"], p["field"], p["code"]) for p in response.json()["problems"]] == [
        (1, "data.quantity", "greater_than_equal"),
        (2, "time", "value_error"),
    ]
    assert tap.count() == 0


async def test_binary_mode_data_nested_too_deep_is_400(
    make_client: ClientFactory, tap: LogTap
) -> None:
    body = "[" * 300 + "]" * 300
    headers = {
        "content-type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": "deep",
        "ce-source": "/t",
        "ce-type": "com.acme.custom",
    }
    async with make_client() as client:
        response = await client.post("/v1/events", content=body, headers=headers)
    assert response.status_code == 400
    assert [(p["field"], p["code"]) for p in response.json()["problems"]] == [("data", "too_deep")]
    assert tap.count() == 0


async def test_an_event_at_the_bounds_is_accepted_and_logged(
    make_client: ClientFactory, tap: LogTap
) -> None:
    event = custom_event(
        {"unit": "page", "quantity": "9999999999999999.999999999999"},
        time="2099-12-31T23:59:59.999Z",
    )
    async with make_client() as client:
        response = await client.post(
            "/v1/events", content=json.dumps(event), headers={"content-type": STRUCTURED}
        )
    assert response.status_code == 202
    [record] = tap.records()
    assert json.loads(record.value) == event


# --- GET /api/usage parameters --------------------------------------------------------

RANGE = "must be between 1970 and 2200"
DATE = "must be YYYY-MM-DD or an RFC 3339 timestamp"
LIMIT = "must be an integer in 1..10000"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param("limit=%C2%B2", [("limit", LIMIT)], id="superscript two"),
        pytest.param("limit=" + "9" * 5000, [("limit", LIMIT)], id="5000 nines"),
        pytest.param("limit=%D9%A1", [("limit", LIMIT)], id="Arabic-Indic one"),
        pytest.param("limit=+5", [("limit", LIMIT)], id="signed"),
        pytest.param("date_to=9999-12-31", [("date_to", RANGE)], id="date_to 9999"),
        pytest.param("date_from=0001-01-01", [("date_from", RANGE)], id="date_from year 1"),
        pytest.param(
            "date_from=0001-01-01T00:00:00%2B01:00", [("date_from", RANGE)], id="before year 1"
        ),
        pytest.param(
            "date_to=9999-12-31T23:59:59.999999Z", [("date_to", RANGE)], id="last instant"
        ),
        pytest.param("date_from=" + "9" * 5000, [("date_from", DATE)], id="5000 nines date"),
    ],
)
async def test_usage_query_parameters_are_422_naming_the_parameter(
    make_client: ClientFactory, query: str, expected: list[tuple[str, str]]
) -> None:
    async with make_client() as client:
        response = await client.get(f"/api/usage?{query}")
    assert response.status_code == 422
    assert response.json()["type"] == "https://meterline.dev/problems/invalid-query"
    assert [(p["field"], p["message"]) for p in response.json()["problems"]] == expected


async def test_usage_query_at_the_bounds_passes_validation(make_client: ClientFactory) -> None:
    # No store is attached: 404 proves the parameters themselves were accepted.
    async with make_client() as client:
        response = await client.get(
            "/api/usage?limit=10000&date_from=1970-01-01&date_to=2199-12-31"
        )
    assert response.status_code == 404


async def test_post_usage_far_future_timestamp_is_422_naming_it(
    make_client: ClientFactory, tap: LogTap
) -> None:
    body = {
        "project_id": "p",
        "provider": "openai",
        "model": "gpt-4o",
        "input_tokens": 1,
        "output_tokens": 1,
        "request_timestamp": "2150-01-01T00:00:00Z",
    }
    async with make_client() as client:
        response = await client.post("/api/usage", json=body)
    assert response.status_code == 422
    assert [(p["field"], p["code"]) for p in response.json()["problems"]] == [
        ("request_timestamp", "value_error")
    ]
    assert tap.count() == 0
