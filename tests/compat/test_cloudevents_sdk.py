"""Apps that build events with the official CloudEvents SDK (cloudevents 2.x) are metered.

Both ways such an app sends: the SDK's binary mode over HTTP as the SDK writes it
(JSON body, no Content-Type), and its CloudEvent objects handed to ``Meter.emit``.
"""

from __future__ import annotations

import httpx
from cloudevents.core.bindings.http import to_binary_event
from cloudevents.core.v1.event import CloudEvent as CoreEvent
from cloudevents.v1.conversion import to_binary
from cloudevents.v1.http import CloudEvent as V1Event

from meterline.sdk import Meter
from tests.support.stack import MeterlineProcess

TOKENS = "io.meterline.usage.tokens"
USAGE = {"provider": "openai", "model": "gpt-4o", "input_tokens": 1000}


def _costs(stack: MeterlineProcess, subject: str) -> list[dict[str, str]]:
    return stack.sql(
        f"SELECT id, cost_usd FROM usage_events WHERE subject = '{subject}' ORDER BY id"
    )


def test_sdk_binary_mode_as_sent_by_default_is_stored_and_priced(stack: MeterlineProcess) -> None:
    v1_headers, v1_body = to_binary(
        V1Event({"id": "ce-v1", "source": "/compat/ce", "type": TOKENS, "subject": "ce-bin"}, USAGE)
    )
    core = to_binary_event(
        CoreEvent(
            {
                "id": "ce-core",
                "source": "/compat/ce",
                "type": TOKENS,
                "subject": "ce-bin",
                "specversion": "1.0",
            },
            USAGE,
        )
    )
    for headers, body in ((v1_headers, v1_body), (core.headers, core.body)):
        response = httpx.post(f"{stack.url}/v1/events", content=body, headers=headers, timeout=30)
        assert response.status_code == 202, response.text

    stack.wait_until(lambda: len(_costs(stack, "ce-bin")) == 2, what="2 rows")
    assert _costs(stack, "ce-bin") == [
        {"id": "ce-core", "cost_usd": "0.0025"},
        {"id": "ce-v1", "cost_usd": "0.0025"},
    ]


def test_meter_emit_takes_cloudevent_objects_of_both_sdk_apis(stack: MeterlineProcess) -> None:
    meter = Meter(url=stack.url, source="/compat/ce", flush_interval=0.05)
    v1 = V1Event({"id": "emit-v1", "source": "/compat/ce", "type": TOKENS, "subject": "ce-emit"},
                 USAGE)  # fmt: skip
    core = CoreEvent({"id": "emit-core", "source": "/compat/ce", "type": TOKENS,
                      "subject": "ce-emit", "specversion": "1.0"}, USAGE)  # fmt: skip

    assert (meter.emit(v1), meter.emit(core)) == (True, True)
    assert meter.flush(timeout=30)
    assert (meter.stats().sent, meter.stats().invalid) == (2, 0)
    meter.close()

    stack.wait_until(lambda: len(_costs(stack, "ce-emit")) == 2, what="2 rows")
    assert _costs(stack, "ce-emit") == [
        {"id": "emit-core", "cost_usd": "0.0025"},
        {"id": "emit-v1", "cost_usd": "0.0025"},
    ]
