"""The real ``openai`` client against a fake OpenAI server, metered by the
wrapper, through a real gateway into the embedded log and chDB: the exact
CloudEvents stored, duplicates counted once, errors not metered."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import openai
import pytest

from meterline.sdk import Meter, count_tokens, customer, wrap
from tests.meterline.sdk.conftest import stored_events, wait_for
from tests.meterline.sdk.fakes.emitter_fake_server import FakeServer
from tests.meterline.sdk.fakes.emitter_payloads import (
    CREATED,
    iso,
    openai_chat,
    openai_chat_stream,
    openai_error,
    openai_response,
    openai_responses_stream,
)
from tests.support.stack import MeterlineProcess

PROMPT = "Say hello to the world please"
MESSAGES: Any = [{"role": "user", "content": PROMPT}]
SOURCE = "/tests/emitter/openai"


def token_event(
    subject: str, id: str, data: dict[str, Any], at: str = iso(CREATED)
) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": id,
        "source": SOURCE,
        "type": "io.meterline.usage.tokens",
        "subject": subject,
        "time": at,
        "datacontenttype": "application/json",
        "data": data,
    }


@pytest.fixture
def meter(emitter_stack: MeterlineProcess) -> Any:
    meter = Meter(url=emitter_stack.url, source=SOURCE, flush_interval=0.05)
    yield meter
    meter.close()


def client_for(server: FakeServer, meter: Meter) -> Any:
    return wrap(openai.OpenAI(api_key="sk-test", base_url=server.url + "/v1", max_retries=0), meter)


def settle(stack: MeterlineProcess, meter: Meter, subject: str, n: int) -> list[dict[str, Any]]:
    assert meter.flush(timeout=30)
    wait_for(lambda: len(stored_events(stack, subject)) >= n)
    return stored_events(stack, subject)


def test_chat_completion_is_metered_exactly_and_a_duplicate_counts_once(
    fake_provider: FakeServer, emitter_stack: MeterlineProcess, meter: Meter
) -> None:
    subject = f"acme-{uuid.uuid4().hex[:8]}"
    fake_provider.expect("/chat/completions", *[_json(openai_chat("chatcmpl-dup1"))] * 2)
    client = client_for(fake_provider, meter)
    before = emitter_stack.records_processed()
    with customer(subject, feature="chat", metadata={"env": "test"}):
        first = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        # The same provider response metered again (a retried job): same id.
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert type(first) is openai.types.chat.ChatCompletion
    assert first.choices[0].message.content == "Hello there!"
    assert meter.flush(timeout=30)
    assert meter.stats().sent == 2
    emitter_stack.wait_processed(before + 2)  # both copies read; one stored
    wait_for(lambda: stored_events(emitter_stack, subject))
    assert stored_events(emitter_stack, subject) == [
        token_event(
            subject,
            "chatcmpl-dup1",
            {
                "provider": "openai",
                "model": "gpt-4o-2024-08-06",
                "input_tokens": 1200,
                "output_tokens": 300,
                "cache_read_tokens": 1024,
                "reasoning_tokens": 128,
                "service_tier": "default",
                "feature": "chat",
                "metadata": {"env": "test"},
            },
        )
    ]


def test_streaming_asks_for_usage_and_hides_the_extra_chunk(
    fake_provider: FakeServer, emitter_stack: MeterlineProcess, meter: Meter
) -> None:
    subject = f"s-{uuid.uuid4().hex[:8]}"
    fake_provider.expect("/chat/completions", openai_chat_stream("chatcmpl-S1"))
    client = client_for(fake_provider, meter)
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        meter_customer=subject,
    )
    assert type(stream) is openai.Stream
    chunks = list(stream)
    assert fake_provider.requests[-1].json["stream_options"] == {"include_usage": True}
    assert all(chunk.choices for chunk in chunks)  # the caller never sees the usage chunk
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello world, how are you?"
    assert settle(emitter_stack, meter, subject, 1) == [
        token_event(
            subject,
            "chatcmpl-S1",
            {
                "provider": "openai",
                "model": "gpt-4o-mini-2024-07-18",
                "input_tokens": 50,
                "output_tokens": 7,
            },
        )
    ]


@pytest.mark.parametrize("cut", [False, True], ids=["usage-forbidden", "cut-off"])
def test_stream_without_usage_is_estimated_with_tiktoken(
    cut: bool, fake_provider: FakeServer, emitter_stack: MeterlineProcess, meter: Meter
) -> None:
    subject = f"e-{uuid.uuid4().hex[:8]}"
    fake_provider.expect(
        "/chat/completions", openai_chat_stream(f"chatcmpl-E{cut}", usage=False, cut=cut)
    )
    client = client_for(fake_provider, meter)
    options: dict[str, Any] = {} if cut else {"stream_options": {"include_usage": False}}
    with customer(subject):
        text = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True, **options
            )
            if c.choices
        )
    sent = fake_provider.requests[-1].json
    assert sent.get("stream_options") == (
        {"include_usage": True} if cut else {"include_usage": False}
    )
    model = "gpt-4o-mini-2024-07-18"
    assert settle(emitter_stack, meter, subject, 1) == [
        token_event(
            subject,
            f"chatcmpl-E{cut}",
            {
                "provider": "openai",
                "model": model,
                "input_tokens": count_tokens(model, PROMPT),
                "output_tokens": count_tokens(model, text),
                "estimated": True,
            },
        )
    ]
    assert text == "Hello world, how are you?"
    row = emitter_stack.sql(f"SELECT estimated FROM usage_events WHERE subject = '{subject}'")
    assert row == [{"estimated": 1}]
    meters = emitter_stack.sql(
        f"SELECT sum(estimated_events) AS n FROM usage_meters WHERE subject = '{subject}'"
    )
    assert int(meters[0]["n"]) == 1


def test_responses_api_plain_and_streamed(
    fake_provider: FakeServer, emitter_stack: MeterlineProcess, meter: Meter
) -> None:
    subject = f"r-{uuid.uuid4().hex[:8]}"
    fake_provider.expect(
        "/responses", _json(openai_response("resp_P1")), openai_responses_stream("resp_S1")
    )
    client = client_for(fake_provider, meter)
    with customer(subject):
        response = client.responses.create(model="o4-mini", input="Capital of France?")
        events = list(client.responses.create(model="gpt-4.1", input="Capital?", stream=True))
    assert response.output_text == "Paris."
    assert events[-1].type == "response.completed"
    got = sorted(settle(emitter_stack, meter, subject, 2), key=lambda e: e["id"])
    assert got == [
        token_event(
            subject,
            "resp_P1",
            {
                "provider": "openai",
                "model": "o4-mini-2025-04-16",
                "input_tokens": 2000,
                "output_tokens": 900,
                "cache_read_tokens": 1536,
                "reasoning_tokens": 832,
                "service_tier": "flex",
            },
            iso(CREATED + 0.5),
        ),
        token_event(
            subject,
            "resp_S1",
            {
                "provider": "openai",
                "model": "gpt-4.1-2025-04-14",
                "input_tokens": 40,
                "output_tokens": 5,
                "service_tier": "flex",
            },
            iso(CREATED + 0.5),
        ),
    ]


def test_async_client_and_async_stream(
    fake_provider: FakeServer, emitter_stack: MeterlineProcess, meter: Meter
) -> None:
    subject = f"a-{uuid.uuid4().hex[:8]}"
    fake_provider.expect(
        "/chat/completions", _json(openai_chat("chatcmpl-AS1")), openai_chat_stream("chatcmpl-AS2")
    )

    async def main() -> int:
        client: Any = wrap(
            openai.AsyncOpenAI(api_key="sk", base_url=fake_provider.url + "/v1", max_retries=0),
            meter,
        )
        with customer(subject):
            await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            stream = await client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True
            )
            assert type(stream) is openai.AsyncStream
            seen = [chunk async for chunk in stream]
        await client.close()
        return len(seen)

    assert asyncio.run(main()) == 4
    got = settle(emitter_stack, meter, subject, 2)
    assert sorted((e["id"], e["data"]["input_tokens"]) for e in got) == [
        ("chatcmpl-AS1", 1200),
        ("chatcmpl-AS2", 50),
    ]


def test_provider_errors_propagate_unchanged_and_are_recorded_with_zero_usage(
    fake_provider: FakeServer, emitter_stack: MeterlineProcess, meter: Meter
) -> None:
    subject = f"err-{uuid.uuid4().hex[:8]}"
    fake_provider.expect("/chat/completions", openai_error(400, "bad model"))
    client = client_for(fake_provider, meter)
    with customer(subject), pytest.raises(openai.BadRequestError, match="bad model"):
        client.chat.completions.create(model="nope", messages=MESSAGES)
    (event,) = settle(emitter_stack, meter, subject, 1)
    assert isinstance(event["data"].pop("latency_ms"), int)
    assert event["data"] == {
        "provider": "openai",
        "model": "nope",
        "input_tokens": 0,
        "output_tokens": 0,
        "status": "error",
        "error_type": "BadRequestError",
        "http_status": 400,
    }
    assert meter.stats().provider_errors == 1


def test_opt_out_and_missing_customer_call_the_provider_unmetered(
    fake_provider: FakeServer, meter: Meter
) -> None:
    fake_provider.expect("/chat/completions", *[_json(openai_chat("chatcmpl-O"))] * 2)
    client = client_for(fake_provider, meter)
    with customer("acme"):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, meter_skip=True)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # no customer at all
    assert "meter_skip" not in fake_provider.requests[0].json
    stats = meter.stats()
    assert (stats.enqueued, stats.untracked_no_customer) == (0, 1)


def _json(body: dict[str, Any]) -> Any:
    from tests.meterline.sdk.fakes.emitter_fake_server import Reply

    return Reply(200, body)


def _cut_off(how: str, stream: Any) -> None:
    if how == "close":
        next(iter(stream))
        stream.close()
    elif how == "with-exit":
        with stream:
            next(iter(stream))
    else:  # an exception in the consumer loop, then the exit hook (atexit runs it)
        from meterline.sdk.providers._common import finish_open_streams

        with pytest.raises(RuntimeError):
            for _chunk in stream:
                raise RuntimeError("the app's own bug")
        finish_open_streams()


@pytest.mark.parametrize("how", ["close", "with-exit", "error-then-exit"])
def test_stream_cut_off_early_is_recorded_without_waiting_for_garbage_collection(
    how: str, fake_provider: FakeServer, emitter_stack: MeterlineProcess, meter: Meter
) -> None:
    subject = f"cut-{uuid.uuid4().hex[:8]}"
    fake_provider.expect("/chat/completions", openai_chat_stream(f"chatcmpl-{how}"))
    client = client_for(fake_provider, meter)
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, meter_customer=subject
    )

    _cut_off(how, stream)

    # `stream` is still referenced here: its iterator cannot have been collected.
    [event] = settle(emitter_stack, meter, subject, 1)
    assert stream is not None
    assert event["id"] == f"chatcmpl-{how}"
    assert event["data"]["input_tokens"] > 0  # the prompt, estimated: usage never arrived
