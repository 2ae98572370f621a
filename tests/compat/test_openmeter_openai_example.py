"""Coming from OpenMeter: its OpenAI example's events, sent as it sends them, are priced.

The example (openmeter.io, "OpenAI Example", Node.js) reports each completion with
``openmeter.ingestEvents({specversion, id: completion.id, source: 'my-app',
type: 'openai', subject, time: new Date(created * 1000).toISOString(), data:
{total_tokens, prompt_tokens, completion_tokens, model}})``; the OpenMeter SDK
POSTs that as ``application/cloudevents+json`` to ``/api/v1/events`` and expects
204. Here only the base URL changes.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.support.stack import MeterlineProcess


def _to_iso_string(moment: datetime) -> str:
    """JavaScript's ``Date.prototype.toISOString``: UTC, milliseconds, 'Z'."""
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


# What the example sends for OpenAI's documented response (chatcmpl-abc123,
# gpt-3.5-turbo-0301, 13 prompt + 7 completion tokens), as the SDK serialises it.
# ``created`` is now rather than the documentation's 2023: an event older than the
# dedupe horizon (35 days) is dead-lettered, as it must be, and never stored.
EXAMPLE_EVENT = {
    "specversion": "1.0",
    "id": "chatcmpl-abc123",
    "source": "my-app",
    "type": "openai",
    "subject": "my-awesome-user-id",
    "time": _to_iso_string(datetime.now(UTC).replace(microsecond=0)),
    "data": {
        "total_tokens": 20,
        "prompt_tokens": 13,
        "completion_tokens": 7,
        "model": "gpt-3.5-turbo-0301",
    },
}

# A user's own shape, declared in the file METERLINE_EVENT_MAPPINGS names: an
# OpenMeter meter definition pasted as it is (camelCase, SUM of a string value).
MAPPINGS_YAML = """
mappings:
  - slug: pages_rendered
    eventType: render
    aggregation: SUM
    valueProperty: $.pages
    groupBy:
      model: $.renderer
      format: $.format
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeterlineProcess]:
    root = tmp_path_factory.mktemp("openmeter")
    mappings = root / "mappings.yaml"
    mappings.write_text(MAPPINGS_YAML)
    process = MeterlineProcess(
        root / "data",
        {
            "METERLINE_LOG": "embedded",
            "METERLINE_STORE": "chdb",
            "METERLINE_PARTITIONS": "2",
            "METERLINE_EVENT_MAPPINGS": str(mappings),
        },
    )
    process.start()
    yield process
    process.stop()


def _post_openmeter(stack: MeterlineProcess, body: Any, content_type: str) -> httpx.Response:
    return httpx.post(
        f"{stack.url}/api/v1/events",
        content=orjson.dumps(body),
        headers={"content-type": content_type},
        timeout=30,
    )


def _row(stack: MeterlineProcess, id_: str) -> dict[str, Any]:
    stack.wait_until(
        lambda: bool(stack.sql(f"SELECT 1 FROM usage_events WHERE id = '{id_}'")),
        what=f"row {id_}",
    )
    rows = stack.sql(
        "SELECT type, provider, model, input_tokens, output_tokens, unit, "
        "toString(quantity) AS quantity, toString(cost_usd) AS cost, "
        "toString(price_usd) AS price, priced, matched_model, metadata "
        f"FROM usage_events WHERE id = '{id_}'"
    )
    assert len(rows) == 1
    return rows[0]


def test_openmeter_openai_example_is_priced_like_the_native_token_event(
    stack: MeterlineProcess,
) -> None:
    native = {
        **EXAMPLE_EVENT,
        "id": "native-abc123",
        "type": "io.meterline.usage.tokens",
        "data": {
            "provider": "openai",
            "model": "gpt-3.5-turbo-0301",
            "input_tokens": 13,
            "output_tokens": 7,
        },
    }

    sent = _post_openmeter(stack, EXAMPLE_EVENT, "application/cloudevents+json")
    assert (sent.status_code, sent.content) == (204, b"")
    assert stack.post(native, "application/cloudevents+json").status_code == 202

    mapped, expected = _row(stack, "chatcmpl-abc123"), _row(stack, "native-abc123")
    assert mapped.pop("type") == "openai"  # stored as sent; metered as token usage
    assert expected.pop("type") == "io.meterline.usage.tokens"
    assert mapped == expected
    assert mapped["priced"] == 1 and mapped["input_tokens"] == "13"
    assert mapped["cost"] != "0"  # priced from the catalog, not merely equal by being zero


def test_openmeter_batch_route_is_all_or_nothing_with_the_same_problems(
    stack: MeterlineProcess,
) -> None:
    # The streaming example of an older OpenMeter version sent total_tokens only:
    # input and output cannot be told apart, so it is refused, naming the field.
    total_only = {
        **EXAMPLE_EVENT,
        "id": "om-total-only",
        "data": {"total_tokens": 20, "model": "m"},
    }
    good = {**EXAMPLE_EVENT, "id": "om-good"}

    refused = _post_openmeter(stack, [good, total_only], "application/cloudevents-batch+json")

    assert refused.status_code == 400
    problems = refused.json()["problems"]
    assert {(p["index"], p["field"], p["code"]) for p in problems} == {
        (1, "data.prompt_tokens", "missing"),
        (1, "data.completion_tokens", "missing"),
    }
    assert "openmeter-openai" in problems[0]["message"]
    accepted = _post_openmeter(stack, [good], "application/cloudevents-batch+json")
    assert accepted.status_code == 204
    _row(stack, "om-good")
    assert stack.sql("SELECT count() AS n FROM usage_events WHERE id = 'om-total-only'") == [
        {"n": "0"}
    ]


def test_a_pasted_openmeter_meter_definition_meters_units(stack: MeterlineProcess) -> None:
    event = {
        "specversion": "1.0",
        "id": "render-1",
        "source": "renderer",
        "type": "render",
        "subject": "cust-r",
        "data": {"pages": "12", "renderer": "pdf-v2", "format": "a4"},
    }

    assert _post_openmeter(stack, [event], "application/json").status_code == 204

    row = _row(stack, "render-1")
    assert (row["unit"], row["quantity"], row["model"]) == ("pages_rendered", "12", "pdf-v2")
    assert row["metadata"] == {"format": "a4"}


def test_a_bad_mapping_file_stops_start_up_naming_file_entry_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "mappings:\n"
        "  - event_type: chat\n"
        "    usage: tokens\n"
        "    tokens: {input_tokens: '$.usage.[prompt'}\n"
        "    group_by: {provider: openai, model: $.model}\n"
    )

    done = subprocess.run(
        [sys.executable, "-m", "meterline.cli", "run", "--port", "0"],
        env={
            **MeterlineProcess(tmp_path / "data").env,
            "METERLINE_EVENT_MAPPINGS": str(bad),
        },
        capture_output=True,
        timeout=120,
    )

    assert done.returncode != 0
    said = done.stdout.decode() + done.stderr.decode()
    assert f"{bad}: mappings[0] (event_type 'chat'): tokens.input_tokens:" in said.replace("\n", "")
