"""Provider names as apps send them: ``OPENAI`` and ``openai`` are one meter group."""

from __future__ import annotations

from typing import Any

from tests.support.stack import MeterlineProcess


def _event(id_: str, provider: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": id_,
        "source": "/compat/providers",
        "type": "io.meterline.usage.tokens",
        "subject": "prov-cust",
        "data": {"provider": provider, "model": "gpt-4o", "input_tokens": 1000},
    }


def test_provider_spellings_meter_and_price_as_one_group(stack: MeterlineProcess) -> None:
    sent = [_event("p-1", "openai"), _event("p-2", "OPENAI"), _event("p-3", " OpenAI ")]
    assert stack.post(sent).status_code == 202
    stack.wait_until(
        lambda: (
            stack.sql("SELECT count() AS n FROM usage_events WHERE subject = 'prov-cust'")
            == [{"n": "3"}]
        ),
        what="3 rows",
    )

    meters = stack.sql(
        "SELECT provider, toString(sum(events)) AS events, toString(sum(cost_usd)) AS cost "
        "FROM usage_meters WHERE subject = 'prov-cust' GROUP BY provider"
    )

    assert meters == [{"provider": "openai", "events": "3", "cost": "0.0075"}]  # 3 x 1000 x $2.50/M
