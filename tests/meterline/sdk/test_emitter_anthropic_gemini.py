"""The real ``anthropic`` and ``google-genai`` clients against fake servers,
metered by the wrappers, through a real gateway into the embedded stack."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import anthropic
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as gtypes

from meterline.sdk import Meter, count_tokens, customer, wrap
from tests.meterline.sdk.conftest import stored_events, wait_for
from tests.meterline.sdk.fakes.emitter_fake_server import FakeServer, Reply
from tests.meterline.sdk.fakes.emitter_payloads import (
    anthropic_error,
    anthropic_message,
    anthropic_stream,
    gemini_error,
    gemini_response,
    gemini_stream,
)
from tests.support.stack import MeterlineProcess

SOURCE = "/tests/emitter/providers"
MESSAGES: Any = [{"role": "user", "content": "Hello"}]


@pytest.fixture
def meter(emitter_stack: MeterlineProcess) -> Iterator[Meter]:
    meter = Meter(url=emitter_stack.url, source=SOURCE, flush_interval=0.05)
    yield meter
    meter.close()


def settle(stack: MeterlineProcess, meter: Meter, subject: str, n: int) -> list[dict[str, Any]]:
    assert meter.flush(timeout=30)
    wait_for(lambda: len(stored_events(stack, subject)) >= n)
    return sorted(stored_events(stack, subject), key=lambda e: e["id"])


def envelope(subject: str, id: str, at: str | None, data: dict[str, Any]) -> dict[str, Any]:
    """The expected event; ``at=None`` for a call-time stamp (checked by ``recent``)."""
    event = {
        "specversion": "1.0",
        "id": id,
        "source": SOURCE,
        "type": "io.meterline.usage.tokens",
        "subject": subject,
        "time": at,
        "datacontenttype": "application/json",
        "data": data,
    }
    if at is None:
        del event["time"]
    return event


def recent(event: dict[str, Any]) -> str:
    """Anthropic has no creation time: the call time, checked then taken out."""
    at = event.pop("time")
    moment = datetime.fromisoformat(at.replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - moment).total_seconds()) < 120 and len(at) == 24
    return str(at)


def anthropic_client(server: FakeServer, meter: Meter) -> Any:
    return wrap(anthropic.Anthropic(api_key="k", base_url=server.url, max_retries=0), meter)


def test_anthropic_message_stream_and_helper_stream(
    fake_provider: FakeServer, emitter_stack: MeterlineProcess, meter: Meter
) -> None:
    subject = f"an-{uuid.uuid4().hex[:8]}"
    fake_provider.expect(
        "/v1/messages",
        Reply(200, anthropic_message("msg_P1")),
        anthropic_stream("msg_S1"),
        anthropic_stream("msg_H1"),
        Reply(200, anthropic_message("msg_P1")),
    )
    client = anthropic_client(fake_provider, meter)
    with customer(subject, feature="support"):
        message = client.messages.create(
            model="claude-sonnet-4-5", max_tokens=100, messages=MESSAGES
        )
        raw = list(
            client.messages.create(
                model="claude-haiku-4-5", max_tokens=100, messages=MESSAGES, stream=True
            )
        )
        with client.messages.stream(
            model="claude-haiku-4-5", max_tokens=100, messages=MESSAGES
        ) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        client.messages.create(model="claude-sonnet-4-5", max_tokens=100, messages=MESSAGES)
    assert type(message) is anthropic.types.Message and message.content[0].type == "text"
    assert [e.type for e in raw][-1] == "message_stop"
    assert text == "Hello from Claude, streaming." and final.usage.output_tokens == 15
    got = settle(emitter_stack, meter, subject, 3)
    streamed = {
        "provider": "anthropic",
        "model": "claude-haiku-4-5-20251001",
        "input_tokens": 25 + 2048,
        "output_tokens": 15,
        "cache_read_tokens": 2048,
        "feature": "support",
    }
    for event in got:
        recent(event)
    assert got == [
        envelope(subject, "msg_H1", None, streamed),
        envelope(
            subject,
            "msg_P1",
            None,
            {
                "provider": "anthropic",
                "model": "claude-sonnet-4-5-20250929",
                "input_tokens": 13050,
                "output_tokens": 420,
                "cache_read_tokens": 10000,
                "cache_write_tokens": 1000,
                "cache_write_1h_tokens": 2000,
                "service_tier": "standard",
                "feature": "support",
            },
        ),
        envelope(subject, "msg_S1", None, streamed),
    ]


def test_anthropic_cut_stream_async_and_errors(
    fake_provider: FakeServer, emitter_stack: MeterlineProcess, meter: Meter
) -> None:
    subject = f"ac-{uuid.uuid4().hex[:8]}"
    fake_provider.expect(
        "/v1/messages",
        anthropic_stream("msg_C1", cut=True),
        anthropic_error(400, "invalid_request_error", "max_tokens: too big"),
    )

    async def main() -> str:
        client: Any = wrap(
            anthropic.AsyncAnthropic(api_key="k", base_url=fake_provider.url, max_retries=0), meter
        )
        with customer(subject):
            stream = await client.messages.create(
                model="claude-haiku-4-5", max_tokens=10, messages=MESSAGES, stream=True
            )
            assert type(stream) is anthropic.AsyncStream
            parts = [e.delta.text async for e in stream if e.type == "content_block_delta"]
            with pytest.raises(anthropic.BadRequestError, match="too big"):
                await client.messages.create(model="x", max_tokens=10, messages=MESSAGES)
        await client.close()
        return "".join(parts)

    text = asyncio.run(main())
    got = {e["data"]["model"]: e for e in settle(emitter_stack, meter, subject, 2)}
    recent(got["claude-haiku-4-5-20251001"])
    assert got["claude-haiku-4-5-20251001"]["data"] == {
        "provider": "anthropic",
        "model": "claude-haiku-4-5-20251001",
        "input_tokens": 25 + 2048,
        "cache_read_tokens": 2048,
        "output_tokens": count_tokens("claude", text),
        "estimated": True,
    }
    # The refused call: recorded with zero usage and its error (never charged).
    failed = got["x"]["data"]
    assert isinstance(failed.pop("latency_ms"), int)
    assert failed == {
        "provider": "anthropic",
        "model": "x",
        "input_tokens": 0,
        "output_tokens": 0,
        "status": "error",
        "error_type": "BadRequestError",
        "http_status": 400,
    }
    assert meter.stats().provider_errors == 1


def gemini_client(server: FakeServer, meter: Meter) -> Any:
    options = gtypes.HttpOptions(base_url=server.url, api_version="v1beta")
    return wrap(genai.Client(api_key="g-key", http_options=options), meter)


def test_gemini_generate_and_stream_sync_and_async(
    fake_provider: FakeServer, emitter_stack: MeterlineProcess, meter: Meter
) -> None:
    subject = f"g-{uuid.uuid4().hex[:8]}"
    fake_provider.expect(
        ":generateContent",
        Reply(200, gemini_response("gem-P1")),
        Reply(200, gemini_response("gem-A1")),
    )
    fake_provider.expect(
        ":streamGenerateContent",
        gemini_stream("gem-S1"),
        gemini_stream("gem-C1", cut=True),
        gemini_stream("gem-AS1"),
    )
    client = gemini_client(fake_provider, meter)
    with customer(subject):
        response = client.models.generate_content(model="gemini-2.5-flash", contents="Hi")
        streamed = "".join(
            c.text or ""
            for c in client.models.generate_content_stream(
                model="gemini-2.5-pro", contents="Tell a story"
            )
        )
        cut = "".join(
            c.text or ""
            for c in client.models.generate_content_stream(
                model="gemini-2.5-pro", contents="Tell a story"
            )
        )

        async def main() -> None:
            await client.aio.models.generate_content(model="gemini-2.5-flash", contents="Hi")
            async for _ in await client.aio.models.generate_content_stream(
                model="gemini-2.5-pro", contents="Tell a story"
            ):
                pass

        asyncio.run(main())
    assert response.text == "Hi from Gemini" and streamed == cut == "Once upon a time"
    got = settle(emitter_stack, meter, subject, 5)
    plain = {
        "provider": "google",
        "model": "gemini-2.5-flash",
        "input_tokens": 500,
        "output_tokens": 300,
        "cache_read_tokens": 256,
        "reasoning_tokens": 220,
    }
    stream = {
        "provider": "google",
        "model": "gemini-2.5-pro",
        "input_tokens": 12,
        "output_tokens": 34,
        "reasoning_tokens": 30,
    }
    # The Gemini API (not Vertex) reports no creation time; the SDK drops
    # createTime there, so every event carries the call time.
    for event in got:
        recent(event)
    assert got == [
        envelope(subject, "gem-A1", None, plain),
        envelope(subject, "gem-AS1", None, stream),
        envelope(
            subject,
            "gem-C1",
            None,
            {
                "provider": "google",
                "model": "gemini-2.5-pro",
                "input_tokens": count_tokens("gemini", "Tell a story"),
                "output_tokens": count_tokens("gemini", "Once upon a time"),
                "estimated": True,
            },
        ),
        envelope(subject, "gem-P1", None, plain),
        envelope(subject, "gem-S1", None, stream),
    ]


def test_gemini_error_is_raised_unchanged_and_recorded_as_a_failed_call(
    fake_provider: FakeServer, emitter_stack: MeterlineProcess, meter: Meter
) -> None:
    subject = f"g-err-{uuid.uuid4().hex[:8]}"
    fake_provider.expect(":generateContent", gemini_error(400, "API key not valid"))
    client = gemini_client(fake_provider, meter)
    with customer(subject), pytest.raises(genai_errors.ClientError, match="API key not valid"):
        client.models.generate_content(model="gemini-2.5-flash", contents="Hi")
    (event,) = settle(emitter_stack, meter, subject, 1)
    assert isinstance(event["data"].pop("latency_ms"), int)
    assert event["data"] == {
        "provider": "google",
        "model": "gemini-2.5-flash",
        "input_tokens": 0,
        "output_tokens": 0,
        "status": "error",
        "error_type": "ClientError",
        "http_status": 400,
    }
    assert meter.stats().provider_errors == 1
