"""HTTP -> log -> processor -> ClickHouse engine: totals are exact, duplicates count once."""

from __future__ import annotations

import orjson
import pytest

from tests.support.events import ground_truth, make_events, stored_totals, totals_query
from tests.support.stack import MeterlineProcess


def _send_with_retries_and_duplicates(stack: MeterlineProcess) -> tuple[list[dict], int]:
    events = make_events(600, seed=11)
    for start in range(0, len(events), 100):
        response = stack.post(events[start : start + 100])
        assert response.status_code == 202, response.text
        assert response.json() == {"accepted": 100}
    # A client retrying: the same events again, in separate requests, at new offsets.
    resent = events[::7]
    for event in resent:
        assert stack.post(event, "application/cloudevents+json").status_code == 202
    # Plain JSON mode too, one array.
    assert stack.post(events[::50], "application/json").status_code == 202
    return events, len(events) + len(resent) + len(events[::50])


def _assert_exact(stack: MeterlineProcess, events: list[dict], sent: int) -> None:
    truth = ground_truth(events)
    # Every record sent has been read and finished: any duplicate would be stored by now.
    stack.wait_processed(sent)
    assert stack.stored() == sum(t["events"] for t in truth.values())
    assert stored_totals(stack.sql(totals_query("usage_events"))) == truth
    assert stored_totals(stack.sql(totals_query("usage_meters"))) == truth
    unpriced = stack.sql("SELECT countIf(priced = 0) AS n FROM usage_events")[0]["n"]
    assert int(unpriced) == sum(
        t["events"] for (_, model, _), t in truth.items() if model == "llama-own-70b"
    )


def test_embedded_pipeline_counts_each_event_once_with_exact_totals(
    embedded_stack: MeterlineProcess,
) -> None:
    _assert_exact(embedded_stack, *_send_with_retries_and_duplicates(embedded_stack))


@pytest.mark.kafka
def test_kafka_pipeline_counts_each_event_once_with_exact_totals(
    kafka_stack: MeterlineProcess,
) -> None:
    _assert_exact(kafka_stack, *_send_with_retries_and_duplicates(kafka_stack))


def test_the_example_event_printed_by_dev_is_stored(embedded_stack: MeterlineProcess) -> None:
    from meterline.cli.server import example_curl

    command = example_curl(embedded_stack.url)
    event = orjson.loads(command.split(" -d '", 1)[1].rstrip("'"))
    assert embedded_stack.post(event, "application/cloudevents+json").status_code == 202
    embedded_stack.wait_stored(1)
    row = embedded_stack.sql("SELECT subject, model, priced FROM usage_events")[0]
    assert row == {"subject": "customer-42", "model": "gpt-4o", "priced": 1}
