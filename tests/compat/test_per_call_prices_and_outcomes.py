"""Coming from AgentMeter and cmdrdata: per-call prices, and each provider call's outcome.

AgentMeter states prices on the call (``input_token_price=``, ``output_token_price=``,
``unit_price=``); meterline carries them as ``data.unit_prices`` and uses them only
for tenants the operator allows (METERLINE_CLIENT_PRICE_TENANTS), marking the row
``price_source = 'client'``; any other tenant is priced from the book. cmdrdata
records each provider call's latency and errors; meterline's wrappers add the
outcome to the usage event and record a failed call as an event with zero usage,
never charged, so error rates and latency are one GROUP BY away in usage_events.

Real gateway and processor (API keys for two tenants), real openai client against
a fake provider server, rows read back from chDB.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import openai
import orjson
import pytest

from ingest.auth import hash_key
from meterline.sdk import Meter, customer, wrap
from tests.meterline.sdk.fakes.emitter_fake_server import FakeServer, Reply
from tests.meterline.sdk.fakes.emitter_payloads import openai_chat, openai_error
from tests.support.stack import MeterlineProcess

BOOK = """
format: 1
units:
  - {unit: page, cost_usd: 0.001, price_usd: 0.01}
currencies: {EUR: "1.08"}
rate_cards:
  fee-co: {request_fee_usd: 0.0001}
"""
# gpt-4o: $2.50 per million input tokens, $10 per million output tokens.
GPT_4O_1000_IN_500_OUT = Decimal("0.0075")
# The fake's chat completion (gpt-4o-2024-08-06, 1,200 prompt of which 1,024 cached, 300
# completion): 176 x $2.50/M + 1,024 x $1.25/M + 300 x $10/M.
CHAT_COST = Decimal("0.00472")
AGENTMETER_PRICES = {"input_token": "0.00001", "output_token": "0.00003"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeterlineProcess]:
    root = tmp_path_factory.mktemp("per-call")
    keys, book = root / "keys.yaml", root / "book.yaml"
    keys.write_text(f"{hash_key('key-pricer')}: pricer\n{hash_key('key-plain')}: plain\n")
    book.write_text(BOOK)
    process = MeterlineProcess(
        root / "data",
        {
            "METERLINE_LOG": "embedded",
            "METERLINE_STORE": "chdb",
            "METERLINE_PARTITIONS": "2",
            "METERLINE_API_KEYS_FILE": str(keys),
            "METERLINE_PRICE_BOOK": str(book),
            "METERLINE_CLIENT_PRICE_TENANTS": "pricer",
        },
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture
def provider() -> Iterator[FakeServer]:
    server = FakeServer().start()
    yield server
    server.stop()


def _meter(stack: MeterlineProcess, key: str) -> Meter:
    return Meter(url=stack.url, api_key=key, source="/compat/per-call", flush_interval=0.05)


def _rows(stack: MeterlineProcess, meter: Meter, subject: str, n: int) -> list[dict[str, Any]]:
    assert meter.flush(timeout=30)
    return stack.subject_rows(
        subject,
        n,
        (
            "tenant, type, model, unit, input_tokens, output_tokens, price_source, status, "
            "error_type, http_status, latency_ms, priced, toString(cost_usd) AS cost, "
            "toString(price_usd) AS price, JSONExtractRaw(data, 'data', 'unit_prices') AS stated "
        ),
    )


def test_an_allowed_tenant_is_charged_its_stated_prices_and_the_row_says_client(
    stack: MeterlineProcess,
) -> None:
    subject = f"agent-{uuid.uuid4().hex[:8]}"
    meter = _meter(stack, "key-pricer")
    try:
        t0 = int(time.time()) - 60  # three distinct times: the rows come back in this order
        meter.track_tokens(
            "openai",
            "gpt-4o",
            input_tokens=1000,
            output_tokens=500,
            customer=subject,
            unit_prices=AGENTMETER_PRICES,
            time=t0,
        )
        meter.track_units(
            "page",
            3,
            customer=subject,
            price="0.05",
            currency="EUR",
            time=t0 + 1,
        )
        meter.track_tokens(
            "openai", "gpt-4o", input_tokens=1000, output_tokens=500, customer=subject, time=t0 + 2
        )
        rows = _rows(stack, meter, subject, 3)
    finally:
        meter.close()
    stated, units, from_book = rows
    # 1,000 x $0.00001 + 500 x $0.00003; the provider cost stays the catalog's.
    assert (stated["price_source"], Decimal(stated["price"])) == ("client", Decimal("0.025"))
    assert Decimal(stated["cost"]) == GPT_4O_1000_IN_500_OUT
    # 3 pages x EUR 0.05 x 1.08 USD/EUR (the book's rate); cost from the book's page rule.
    assert (units["price_source"], Decimal(units["price"])) == ("client", Decimal("0.162"))
    assert Decimal(units["cost"]) == Decimal("0.003")
    # No stated price: the book, as ever.
    assert (from_book["price_source"], Decimal(from_book["price"])) == (
        "book",
        GPT_4O_1000_IN_500_OUT,
    )
    assert {r["tenant"] for r in rows} == {"pricer"} and all(r["priced"] == 1 for r in rows)


def test_a_tenant_not_allowed_is_priced_from_the_book_and_its_stated_price_is_kept(
    stack: MeterlineProcess,
) -> None:
    subject = f"plain-{uuid.uuid4().hex[:8]}"
    meter = _meter(stack, "key-plain")
    try:
        assert meter.track_tokens(
            "openai",
            "gpt-4o",
            input_tokens=1000,
            output_tokens=500,
            customer=subject,
            unit_prices=AGENTMETER_PRICES,
        )
        (row,) = _rows(stack, meter, subject, 1)
    finally:
        meter.close()
    assert row["tenant"] == "plain"
    assert (row["price_source"], Decimal(row["price"]), Decimal(row["cost"])) == (
        "book",
        GPT_4O_1000_IN_500_OUT,
        GPT_4O_1000_IN_500_OUT,
    )
    # Not dead-lettered, not dropped: billed at the book price, the claim on record.
    assert orjson.loads(row["stated"]) == AGENTMETER_PRICES


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"unit_prices": {"unit": "0.1"}},
            "unit_prices of a tokens event needs input_token and output_token",
        ),
        (
            {"unit_prices": {"input_token": "-0.1", "output_token": "0"}},
            "greater than or equal to 0",
        ),
        ({"unit_prices": {"input_token": "1", "output_token": "1", "currency": "XTS"}}, "XTS"),
        ({"status": "failed"}, "must be 'ok', 'error' or ''"),
        ({"error_type": "Timeout"}, "error_type is only for status 'error'"),
    ],
)
def test_a_bad_price_or_outcome_is_refused_at_the_gateway_naming_the_field(
    stack: MeterlineProcess, data: dict[str, Any], message: str
) -> None:
    event = {
        "specversion": "1.0",
        "id": uuid.uuid4().hex,
        "source": "/compat/per-call",
        "type": "io.meterline.usage.tokens",
        "subject": "bad-input",
        "data": {"provider": "openai", "model": "gpt-4o", "input_tokens": 1, **data},
    }
    response = stack.post(
        event,
        "application/cloudevents+json",
        headers={"authorization": "Bearer key-pricer"},
    )
    assert response.status_code == 400, response.text
    assert message in response.text


def test_wrapped_calls_record_latency_and_outcome_and_a_failed_call_is_never_charged(
    stack: MeterlineProcess, provider: FakeServer
) -> None:
    provider.expect(
        "/chat/completions",
        Reply(body=openai_chat(f"chatcmpl-{uuid.uuid4().hex[:8]}")),
        openai_error(429, "Rate limit reached for gpt-4o"),
        Reply(body=openai_chat(f"chatcmpl-{uuid.uuid4().hex[:8]}")),
    )
    meter = _meter(stack, "key-plain")
    client: Any = wrap(
        openai.OpenAI(api_key="sk-test", base_url=provider.url + "/v1", max_retries=0), meter
    )
    messages: Any = [{"role": "user", "content": "Hello!"}]
    # fee-co's rate card adds $0.0001 per priced event: a failed call must not pay it.
    subject = "fee-co"  # one test writes this subject, in this module's own stack
    try:
        with customer(subject):
            client.chat.completions.create(model="gpt-4o", messages=messages)
            with pytest.raises(openai.RateLimitError):
                client.chat.completions.create(model="gpt-4o", messages=messages)
            client.chat.completions.create(model="gpt-4o", messages=messages)
        rows = _rows(stack, meter, subject, 3)
    finally:
        meter.close()
    ok = [r for r in rows if r["status"] == "ok"]
    (failed,) = [r for r in rows if r["status"] == "error"]
    assert len(ok) == 2
    for row in ok:
        assert (row["model"], row["error_type"], row["http_status"]) == ("gpt-4o-2024-08-06", "", 0)
        assert Decimal(row["price"]) == CHAT_COST + Decimal("0.0001")
        assert isinstance(row["latency_ms"], int)
    assert failed["model"] == "gpt-4o"  # the requested model: no response named one
    assert (failed["error_type"], failed["http_status"]) == ("RateLimitError", 429)
    assert (failed["input_tokens"], failed["output_tokens"]) == ("0", "0")  # UInt64: text
    assert (Decimal(failed["cost"]), Decimal(failed["price"]), failed["priced"]) == (
        Decimal(0),
        Decimal(0),
        1,
    )

    # Calls, errors and latency per model, in plain SQL on usage_events.
    per_model = stack.sql(
        "SELECT model, status, error_type, count() AS calls, max(latency_ms) AS slowest "
        f"FROM usage_events WHERE subject = '{subject}' AND status != '' "
        "GROUP BY model, status, error_type ORDER BY model"
    )
    assert [(r["model"], r["status"], r["error_type"], int(r["calls"])) for r in per_model] == [
        ("gpt-4o", "error", "RateLimitError", 1),
        ("gpt-4o-2024-08-06", "ok", "", 2),
    ]
