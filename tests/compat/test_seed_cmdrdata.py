"""Coming from cmdrdata-openai / cmdrdata-anthropic: their README's usage, unchanged but for names.

The README's patterns ("Replace Your OpenAI Import"): construct ``TrackedOpenAI(api_key=...)``
and add ``customer_id=`` to each call; ``custom_metadata={...}`` (values of any type, e.g.
``len(history)``); ``track_usage=False`` for an internal call; ``customer_context(...)``
for a block, an explicit ``customer_id`` beating the context; ``AsyncTrackedOpenAI``.
What differs: the import (``meterline.sdk.compat``) and ``tracker_key=`` (meterline takes
its gateway from ``meter=`` or the environment). Real openai/anthropic clients talk to
fake provider servers; the events go through the real gateway and processor into chDB.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest

from meterline.sdk import Meter, wrap
from meterline.sdk.compat import (
    AsyncTrackedOpenAI,
    TrackedAnthropic,
    TrackedOpenAI,
    customer_context,
)
from tests.meterline.sdk.fakes.emitter_fake_server import FakeServer, Reply
from tests.meterline.sdk.fakes.emitter_payloads import anthropic_message, openai_chat
from tests.support.stack import MeterlineProcess

HELLO: Any = [{"role": "user", "content": "Hello!"}]
# The fake's chat completion: gpt-4o-2024-08-06, 1,200 prompt tokens of which 1,024
# cached, 300 completion tokens: 176 x $2.50/M + 1,024 x $1.25/M + 300 x $10/M.
CHAT_COST = Decimal("0.00472")
# The fake's message (claude-sonnet-4-5): 50 input, 10,000 cache reads, 1,000 5m and
# 2,000 1h cache writes, 420 output: $3, $0.30, $3.75, $6 and $15 per million.
MESSAGE_COST = Decimal("0.0252")


@pytest.fixture
def provider() -> Iterator[FakeServer]:
    server = FakeServer().start()
    yield server
    server.stop()


@pytest.fixture
def meter(stack: MeterlineProcess) -> Iterator[Meter]:
    meter = Meter(url=stack.url, source="/compat/cmdrdata", flush_interval=0.05)
    yield meter
    meter.close()


def _chat(provider: FakeServer, *ids: str) -> None:
    provider.expect("/chat/completions", *(Reply(body=openai_chat(id)) for id in ids))


def _rows(
    stack: MeterlineProcess, meter: Meter, subjects: list[str], n: int
) -> list[dict[str, Any]]:
    assert meter.flush(timeout=30)
    names = ", ".join(f"'{s}'" for s in subjects)
    query = (
        "SELECT id, subject, model, input_tokens, output_tokens, toString(cost_usd) AS cost, "
        f"metadata FROM usage_events WHERE subject IN ({names}) ORDER BY id"
    )
    stack.wait_until(lambda: len(stack.sql(query)) >= n, what=f"{n} rows")
    return stack.sql(query)


def test_tracked_openai_with_customer_id_per_call_is_metered_and_priced(
    provider: FakeServer, stack: MeterlineProcess, meter: Meter
) -> None:
    run = uuid.uuid4().hex[:8]
    explicit, in_context = f"customer-123-{run}", f"customer-456-{run}"
    _chat(provider, *(f"chatcmpl-{run}-{i}" for i in range(5)))
    client: Any = TrackedOpenAI(
        api_key="sk-test", base_url=provider.url + "/v1", max_retries=0, meter=meter
    )

    response = client.chat.completions.create(model="gpt-4", messages=HELLO, customer_id=explicit)
    client.chat.completions.create(
        model="gpt-4",
        messages=HELLO,
        customer_id=explicit,
        custom_metadata={"feature": "data_analysis", "plan_tier": "premium", "length": 3},
    )
    client.chat.completions.create(
        model="gpt-4", messages=HELLO, customer_id=explicit, track_usage=False
    )
    with customer_context(in_context):
        client.chat.completions.create(model="gpt-4", messages=HELLO)
        client.chat.completions.create(model="gpt-4", messages=HELLO, customer_id=explicit)

    assert isinstance(client, openai.OpenAI)
    assert response.choices[0].message.content == "Hello there!"
    # None of the seed's keywords reached OpenAI (it would have answered 400 / raised TypeError).
    sent = [request.json for request in provider.requests]
    assert [sorted(body) for body in sent] == [["messages", "model"]] * 5
    rows = _rows(stack, meter, [explicit, in_context], 4)
    assert [(r["id"][-1], r["subject"]) for r in rows] == [
        ("0", explicit),
        ("1", explicit),
        ("3", in_context),
        ("4", explicit),  # the explicit customer_id beats the context
    ]  # call 2 (track_usage=False) is not recorded
    assert rows[1]["metadata"] == {
        "feature": "data_analysis",
        "plan_tier": "premium",
        "length": "3",
    }
    assert {(r["model"], r["input_tokens"], r["output_tokens"]) for r in rows} == {
        ("gpt-4o-2024-08-06", "1200", "300")
    }
    assert sum(Decimal(r["cost"]) for r in rows) == 4 * CHAT_COST
    assert meter.stats().provider_errors == 0


@pytest.mark.parametrize("make", ["TrackedOpenAI", "wrap"])
def test_with_options_copy_is_the_same_class_and_metered_by_the_same_meter(
    make: str, provider: FakeServer, stack: MeterlineProcess, meter: Meter
) -> None:
    subject = f"opts-{uuid.uuid4().hex[:8]}"
    _chat(provider, f"chatcmpl-{subject}")
    options: Any = {"api_key": "sk-test", "base_url": provider.url + "/v1", "max_retries": 0}
    client: Any = (
        TrackedOpenAI(**options, meter=meter) if make == "TrackedOpenAI"
        else wrap(openai.OpenAI(**options), meter)
    )  # fmt: skip
    quick = client.with_options(timeout=10.0, max_retries=1)
    quick.chat.completions.create(model="gpt-4", messages=HELLO, meter_customer=subject)

    assert type(quick) is type(client)
    [row] = _rows(stack, meter, [subject], 1)
    assert Decimal(row["cost"]) == CHAT_COST


def test_async_tracked_openai_accepts_customer_id(
    provider: FakeServer, stack: MeterlineProcess, meter: Meter
) -> None:
    subject = f"customer-789-{uuid.uuid4().hex[:8]}"
    _chat(provider, f"chatcmpl-{subject}")

    async def main() -> None:
        client: Any = AsyncTrackedOpenAI(
            api_key="sk-test", base_url=provider.url + "/v1", max_retries=0, meter=meter
        )
        await client.chat.completions.create(model="gpt-4", messages=HELLO, customer_id=subject)

    asyncio.run(main())
    [row] = _rows(stack, meter, [subject], 1)
    assert Decimal(row["cost"]) == CHAT_COST


def test_tracked_anthropic_with_customer_id_per_call_is_metered_and_priced(
    provider: FakeServer, stack: MeterlineProcess, meter: Meter
) -> None:
    subject = f"anthropic-{uuid.uuid4().hex[:8]}"
    provider.expect("/v1/messages", Reply(body=anthropic_message(f"msg_{subject}")))
    client: Any = TrackedAnthropic(
        api_key="sk-ant-test", base_url=provider.url, max_retries=0, meter=meter
    )

    message = client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=1024,
        messages=HELLO,
        customer_id=subject,
        custom_metadata={"request_complexity": "high"},
    )

    assert message.content[0].text == "Bonjour!"
    assert "customer_id" not in provider.requests[-1].json
    [row] = _rows(stack, meter, [subject], 1)
    assert (row["model"], row["metadata"]) == (
        "claude-sonnet-4-5-20250929",
        {"request_complexity": "high"},
    )
    assert Decimal(row["cost"]) == MESSAGE_COST
