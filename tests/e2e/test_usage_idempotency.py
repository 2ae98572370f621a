"""``Idempotency-Key`` on ``POST /api/usage`` through the real gateway, log and processor.

Issue 11: the same key with a different body answered 201 with the new body's
cost while the stored row kept the first. Now the stored row is the answer.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.stack import MeterlineProcess

FIRST = {"project_id": "cust", "provider": "openai", "model": "gpt-4o",
         "input_tokens": 1000, "output_tokens": 100}  # fmt: skip


def post(stack: MeterlineProcess, body: dict[str, Any], key: str | None) -> httpx.Response:
    headers = {"idempotency-key": key} if key else {}
    return httpx.post(f"{stack.url}/api/usage", json=body, headers=headers, timeout=30)


def test_same_key_same_body_answers_the_stored_result_and_stores_one_row(
    embedded_stack: MeterlineProcess,
) -> None:
    first = post(embedded_stack, FIRST, "req-1")
    again = post(embedded_stack, FIRST, "req-1")
    assert (first.status_code, again.status_code) == (201, 201), again.text
    assert first.json()["id"] == again.json()["id"] == "req-1"
    # Same cost AND same time: the retry, sent later without request_timestamp,
    # gets the first request's stored row, not a new answer.
    assert again.json() == first.json()
    assert b'"cost_usd":0.0035,' in first.content  # 1000 x 2.50/M + 100 x 10/M, a JSON number
    rows = embedded_stack.sql("SELECT input_tokens, cost_usd FROM usage_events WHERE id = 'req-1'")
    assert rows == [{"input_tokens": "1000", "cost_usd": "0.0035"}]


def test_same_key_with_other_parameters_is_409_and_the_first_row_stays(
    embedded_stack: MeterlineProcess,
) -> None:
    first = post(embedded_stack, FIRST, "req-2")
    changed = post(embedded_stack, {**FIRST, "input_tokens": 999_999}, "req-2")
    assert first.status_code == 201
    assert changed.status_code == 409
    assert changed.headers["content-type"] == "application/problem+json"
    problem = changed.json()
    assert problem["type"].endswith("/idempotency-key-reused")
    assert problem["problems"] == [
        {
            "field": "Idempotency-Key",
            "code": "reused",
            "message": "already used with other parameters",
        }
    ]
    embedded_stack.wait_caught_up()
    rows = embedded_stack.sql("SELECT input_tokens, cost_usd FROM usage_events WHERE id = 'req-2'")
    assert rows == [{"input_tokens": "1000", "cost_usd": "0.0035"}]


def test_without_a_key_each_post_is_its_own_event(embedded_stack: MeterlineProcess) -> None:
    one, two = post(embedded_stack, FIRST, None), post(embedded_stack, FIRST, None)
    assert (one.status_code, two.status_code) == (201, 201)
    assert one.json()["id"] != two.json()["id"]
    embedded_stack.wait_stored(2)
