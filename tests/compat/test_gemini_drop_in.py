"""Coming from cmdrdata with Gemini: ``TrackedGemini`` is google-genai's ``Client``, metered.

google-genai's documented shape, ``Client(api_key=...).models.generate_content(model=...,
contents=...)`` and ``client.aio.models.generate_content(...)``, with cmdrdata's per-call
``customer_id=`` / ``custom_metadata=`` / ``track_usage=False``. The real google-genai
client talks to a fake server speaking the Gemini API's wire format (``:generateContent``
JSON, camelCase ``usageMetadata``); events go through the real gateway and processor.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from google.genai import errors as genai_errors
from google.genai import types as gtypes

from meterline.sdk import Meter
from meterline.sdk.compat import TrackedGemini
from tests.meterline.sdk.fakes.emitter_fake_server import FakeServer, Reply
from tests.meterline.sdk.fakes.emitter_payloads import gemini_error, gemini_response
from tests.support.stack import MeterlineProcess

# The fake's response (gemini-2.5-flash): 500 prompt tokens of which 256 cached, 80
# candidates + 220 thoughts: 244 x $0.30/M + 256 x $0.03/M + 300 x $2.50/M.
FLASH_COST = Decimal("0.00083088")


@pytest.fixture
def provider() -> Iterator[FakeServer]:
    server = FakeServer().start()
    yield server
    server.stop()


@pytest.fixture
def meter(stack: MeterlineProcess) -> Iterator[Meter]:
    meter = Meter(url=stack.url, source="/compat/gemini", flush_interval=0.05)
    yield meter
    meter.close()


def _client(provider: FakeServer, meter: Meter) -> Any:
    options = gtypes.HttpOptions(base_url=provider.url, api_version="v1beta")
    return TrackedGemini(api_key="g-key", http_options=options, meter=meter)


def test_generate_content_with_customer_id_sync_and_async_is_metered_and_priced(
    stack: MeterlineProcess, provider: FakeServer, meter: Meter
) -> None:
    subject = f"gem-{uuid.uuid4().hex[:8]}"
    run = uuid.uuid4().hex[:8]
    provider.expect(
        ":generateContent",
        Reply(200, gemini_response(f"gem-{run}-1")),
        Reply(200, gemini_response(f"gem-{run}-skip")),
        Reply(200, gemini_response(f"gem-{run}-2")),
    )
    client = _client(provider, meter)
    reply = client.models.generate_content(
        model="gemini-2.5-flash",
        contents="Hello",
        customer_id=subject,
        custom_metadata={"conversation_turns": 3},
    )
    assert reply.text == "Hi from Gemini"  # google-genai's own response object
    client.models.generate_content(
        model="gemini-2.5-flash", contents="internal", customer_id=subject, track_usage=False
    )

    async def main() -> None:
        await client.aio.models.generate_content(
            model="gemini-2.5-flash", contents="Hello", customer_id=subject
        )

    asyncio.run(main())
    assert meter.flush(timeout=30)
    query = (
        "SELECT id, provider, model, input_tokens, output_tokens, reasoning_tokens, "
        "toString(cost_usd) AS cost, status, metadata "
        f"FROM usage_events WHERE subject = '{subject}' ORDER BY id"
    )
    stack.wait_until(lambda: len(stack.sql(query)) >= 2, what="2 Gemini rows")
    rows = stack.sql(query)
    assert [r["id"] for r in rows] == [f"gem-{run}-1", f"gem-{run}-2"]  # not the skipped one
    for row in rows:
        assert (row["provider"], row["model"], row["status"]) == (
            "google",
            "gemini-2.5-flash",
            "ok",
        )
        assert (row["input_tokens"], row["output_tokens"], row["reasoning_tokens"]) == (
            "500",
            "300",
            "220",
        )
        assert Decimal(row["cost"]) == FLASH_COST
    assert rows[0]["metadata"] == {"conversation_turns": "3"}


def test_a_refused_gemini_call_raises_unchanged_and_is_recorded_as_failed(
    stack: MeterlineProcess, provider: FakeServer, meter: Meter
) -> None:
    subject = f"gem-err-{uuid.uuid4().hex[:8]}"
    provider.expect(":generateContent", gemini_error(429, "Resource has been exhausted"))
    client = _client(provider, meter)
    with pytest.raises(genai_errors.ClientError, match="exhausted"):
        client.models.generate_content(model="gemini-2.5-flash", contents="Hi", customer_id=subject)
    assert meter.flush(timeout=30)
    query = (
        "SELECT model, status, error_type, http_status, toString(cost_usd) AS cost "
        f"FROM usage_events WHERE subject = '{subject}'"
    )
    stack.wait_until(lambda: len(stack.sql(query)) >= 1, what="the failed call")
    assert stack.sql(query) == [
        {
            "model": "gemini-2.5-flash",
            "status": "error",
            "error_type": "ClientError",
            "http_status": 429,
            "cost": "0",
        }
    ]
