"""Seed 004 (the portal usage API): its client code runs unchanged against meterline.

The client functions below are the seed's documented usage pattern: POST one
record per LLM call, GET the rows back, format ``cost_usd`` with ``:.4f`` and
``sum`` it. They raised (ValueError, TypeError) while cost_usd was a JSON string.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx

from tests.support.stack import MeterlineProcess


# ---- the seed's client code (only the base URL is meterline's) ----
def record_usage(
    base: str, project_id: str, provider: str, model: str, input_tokens: int, output_tokens: int
) -> dict[str, Any]:
    response = httpx.post(
        f"{base}/api/usage",
        json={
            "project_id": project_id,
            "provider": provider,
            "model": model,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
        },
        timeout=30,
    )
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def fetch_usage(base: str, project_id: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{base}/api/usage", params={"project_id": project_id}, timeout=30)
    response.raise_for_status()
    rows: list[dict[str, Any]] = response.json()["usage"]
    return rows


def cost_report(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{row['model']}: {row['total_tokens']} tokens, ${row['cost_usd']:.4f}" for row in rows
    ]
    total = sum(row["cost_usd"] for row in rows)
    return "\n".join([*lines, f"total: ${total:.4f}"])


# ---- end of the seed's client code ----


def test_seed_client_formats_and_sums_cost_usd_from_post_and_get(
    stack: MeterlineProcess,
) -> None:
    posted = record_usage(stack.url, "seed004-a", "openai", "gpt-4o", 1000, 500)
    assert f"{posted['cost_usd']:.4f}" == "0.0075"  # $2.50/M in + $10/M out
    record_usage(stack.url, "seed004-a", "openai", "gpt-4o", 2000, 0)
    stack.wait_until(lambda: len(fetch_usage(stack.url, "seed004-a")) == 2, what="2 rows")

    report = cost_report(fetch_usage(stack.url, "seed004-a"))

    assert report == ("gpt-4o: 1500 tokens, $0.0075\ngpt-4o: 2000 tokens, $0.0050\ntotal: $0.0125")


def test_cost_usd_is_a_json_number_with_the_stored_decimal_digits(
    stack: MeterlineProcess,
) -> None:
    # 123,456,789 input tokens x $2.50/M + 7 output x $10/M = 308.6420425 exactly:
    # digits a float round trip may not keep in general, so the bytes are compared.
    response = httpx.post(
        f"{stack.url}/api/usage",
        json={
            "project_id": "seed004-b",
            "provider": "openai",
            "model": "gpt-4o",
            "input_tokens": 123_456_789,
            "output_tokens": 7,
        },
        timeout=30,
    )
    assert response.status_code == 201, response.text
    assert b'"cost_usd":308.6420425,' in response.content
    stack.wait_until(lambda: fetch_usage(stack.url, "seed004-b") != [], what="the row")
    [stored] = stack.sql(
        "SELECT toString(cost_usd) AS c FROM usage_events WHERE subject = 'seed004-b'"
    )
    got = httpx.get(f"{stack.url}/api/usage", params={"project_id": "seed004-b"}, timeout=30)
    assert Decimal(stored["c"]) == Decimal("308.6420425")
    assert b'"cost_usd":308.6420425,' in got.content


def test_native_sql_api_keeps_cost_usd_as_a_decimal_string(stack: MeterlineProcess) -> None:
    record_usage(stack.url, "seed004-c", "openai", "gpt-4o", 1000, 0)
    stack.wait_until(lambda: fetch_usage(stack.url, "seed004-c") != [], what="the row")
    rows = stack.sql("SELECT cost_usd FROM usage_events WHERE subject = 'seed004-c'")
    assert rows == [{"cost_usd": "0.0025"}]
