"""Coming from AgentMeter: its README's three payment models, by decorator and by context manager.

AgentMeter's patterns: ``@meter_token_based_pay(client, tokens_extractor=extract_tokens)``
with ``extract_tokens(*args, result=None, **kwargs) -> (input_tokens, output_tokens)``;
``with track_token_based_pay(...) as usage: usage["tokens_in"] = 1000 ...``; the same
for API requests (``usage["api_calls"]``) and instant pay (``usage["amount"] = 9.99``);
a block that raises lets the exception through. What differs: the names
(``meter_tokens``, ``metered_tokens``/``metered_requests``/``metered_charge``; the usage
keys are meterline's ``input_tokens``/``output_tokens``, the model is an argument) and
the unit prices, which come from meterline's price book, not the call.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from meterline.sdk import (
    Meter,
    meter_requests,
    meter_tokens,
    metered_charge,
    metered_requests,
    metered_tokens,
)
from tests.support.stack import MeterlineProcess

# gpt-4o: $2.50 per million input tokens, $10 per million output tokens.
GPT_4O_1000_IN_500_OUT = Decimal("0.0075")


@pytest.fixture
def meter(stack: MeterlineProcess) -> Iterator[Meter]:
    meter = Meter(url=stack.url, source="/compat/agentmeter", flush_interval=0.05)
    yield meter
    meter.close()


def _rows(stack: MeterlineProcess, meter: Meter, subject: str, n: int) -> list[dict[str, Any]]:
    assert meter.flush(timeout=30)
    return stack.subject_rows(
        subject,
        n,
        (
            "type, model, input_tokens, output_tokens, unit, toString(quantity) AS quantity, "
            "toString(charge_amount) AS amount, toString(cost_usd) AS cost, metadata "
        ),
    )


class Reply:
    """What ``model.generate(prompt)`` returns in the README: text plus token counts."""

    def __init__(self, text: str, prompt_tokens: int, completion_tokens: int) -> None:
        self.text, self.prompt_tokens, self.completion_tokens = (
            text,
            prompt_tokens,
            completion_tokens,
        )


def extract_tokens(*args: Any, result: Reply | None = None, **kwargs: Any) -> tuple[int, int]:
    # The README's extractor, unchanged: the call's arguments and its result.
    assert result is not None
    return result.prompt_tokens, result.completion_tokens


def test_token_decorator_with_extractor_records_priced_tokens(
    stack: MeterlineProcess, meter: Meter
) -> None:
    subject = f"user-{uuid.uuid4().hex[:8]}"

    @meter_tokens(
        "openai", "gpt-4o", tokens_extractor=extract_tokens, customer=subject, meter=meter
    )
    def llm_call(prompt: str) -> Reply:
        return Reply(prompt.upper(), 1000, 500)

    assert llm_call("hello").text == "HELLO"
    assert llm_call(prompt="again").text == "AGAIN"

    rows = _rows(stack, meter, subject, 2)
    assert {(r["model"], r["input_tokens"], r["output_tokens"]) for r in rows} == {
        ("gpt-4o", "1000", "500")
    }
    assert sum(Decimal(r["cost"]) for r in rows) == 2 * GPT_4O_1000_IN_500_OUT


def test_context_managers_record_what_the_block_filled_in(
    stack: MeterlineProcess, meter: Meter
) -> None:
    subject = f"user-{uuid.uuid4().hex[:8]}"

    with metered_tokens("openai", "gpt-4o", customer=subject, meter=meter) as usage:
        usage["input_tokens"] = 1000
        usage["output_tokens"] = 500
        usage["metadata"]["step"] = "plan"
    with metered_requests(customer=subject, feature="search", meter=meter) as usage:
        usage["metadata"]["operation"] = "search"
    with metered_charge(customer=subject, description="ai_analysis", meter=meter) as usage:
        usage["amount"] = 9.99
        usage["metadata"]["feature"] = "ai_analysis"

    # Keyed by type: the three can share a millisecond, and their ids are random.
    by_type = {row["type"].rsplit(".", 1)[-1]: row for row in _rows(stack, meter, subject, 3)}
    token, request, charge = by_type["tokens"], by_type["units"], by_type["charge"]
    assert (token["input_tokens"], token["output_tokens"], token["metadata"]) == (
        "1000",
        "500",
        {"step": "plan"},
    )
    assert Decimal(token["cost"]) == GPT_4O_1000_IN_500_OUT
    assert (request["unit"], request["quantity"], request["metadata"]) == (
        "api_call",
        "1",
        {"operation": "search"},
    )
    assert (charge["amount"], charge["metadata"]) == ("9.99", {"feature": "ai_analysis"})


def test_a_raising_block_records_consumed_tokens_but_no_sale(
    stack: MeterlineProcess, meter: Meter
) -> None:
    subject = f"user-{uuid.uuid4().hex[:8]}"
    before = stack.records_processed()
    tokens = metered_tokens("openai", "gpt-4o", customer=subject, meter=meter)
    with pytest.raises(RuntimeError, match="parse failed"), tokens as usage:
        usage["input_tokens"], usage["output_tokens"] = 1000, 500
        raise RuntimeError("parse failed")  # after the provider billed the tokens
    charge = metered_charge(4.99, customer=subject, meter=meter)
    with pytest.raises(RuntimeError, match="export failed"), charge:
        raise RuntimeError("export failed")

    @meter_requests(customer=subject, meter=meter)
    def search(query: str) -> list[str]:
        raise LookupError(query)

    with pytest.raises(LookupError):
        search("python tutorials")

    assert meter.flush(timeout=30)
    stack.wait_processed(before + meter.stats().sent)  # a stray sale would be stored by now
    [token] = _rows(stack, meter, subject, 1)  # the tokens only
    assert Decimal(token["cost"]) == GPT_4O_1000_IN_500_OUT


def test_the_seeds_key_names_fail_at_the_assignment_instead_of_losing_usage(
    meter: Meter,
) -> None:
    subject = f"user-{uuid.uuid4().hex[:8]}"
    tokens = metered_tokens("openai", "gpt-4o", customer=subject, meter=meter)
    unknown = pytest.raises(KeyError, match="meterline usage has no 'tokens_in'; its keys are: ")
    with unknown, tokens as usage:
        usage["tokens_in"] = 1000
    assert meter.flush(timeout=30)
    assert meter.stats().enqueued == 0  # all counts 0: nothing recorded, nothing half-written
