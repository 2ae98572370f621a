"""The SDK records usage it used to drop silently, through the real gateway and processor.

AgentMeter users write ``amount=5.99``; apps attach request context as
metadata, sometimes more than 32 keys. Both were refused whole before: the
usage was lost for a cosmetic reason.
"""

from __future__ import annotations

from typing import Any

from meterline.sdk import Meter
from tests.support.stack import MeterlineProcess


def _rows(stack: MeterlineProcess, subject: str, columns: str) -> list[dict[str, Any]]:
    return stack.sql(f"SELECT {columns} FROM usage_events WHERE subject = '{subject}' ORDER BY id")


def test_float_charge_and_oversized_metadata_are_stored_exactly(stack: MeterlineProcess) -> None:
    meter = Meter(url=stack.url, source="/compat/sdk", flush_interval=0.05)
    labels = {f"label{i:02}": str(i) for i in range(40)}

    charged = meter.track_charge(5.99, customer="drop-cust", id="c-1")
    tokens = meter.track_tokens(
        "openai", "gpt-4o", input_tokens=1000, customer="drop-cust", metadata=labels, id="t-1"
    )
    assert meter.flush(timeout=30)
    stats = meter.stats()
    meter.close()

    assert (charged, tokens) == (True, True)
    assert (stats.sent, stats.invalid, stats.metadata_truncated) == (2, 0, 1)
    stack.wait_until(lambda: len(_rows(stack, "drop-cust", "id")) == 2, what="2 rows")
    charge, token = _rows(
        stack, "drop-cust", "toString(charge_amount) AS amount, cost_usd, length(metadata) AS n, "
        "metadata['metadata_truncated'] AS truncated"
    )  # fmt: skip
    assert charge["amount"] == "5.99"
    assert (token["cost_usd"], token["n"], token["truncated"]) == ("0.0025", "32", "true")


def test_what_is_still_refused_is_counted_and_logged_with_the_reason(
    stack: MeterlineProcess, caplog: Any
) -> None:
    meter = Meter(url=stack.url, source="/compat/sdk", flush_interval=0.05)
    assert meter.track_charge(-5.99, customer="drop-cust-2") is False
    assert meter.flush(timeout=30)
    assert meter.stats().invalid == 1
    meter.close()
    [record] = [r for r in caplog.records if r.name == "meterline.emitter"]
    assert record.levelname == "ERROR"
    assert "amount must be a finite number >= 0" in record.getMessage()
