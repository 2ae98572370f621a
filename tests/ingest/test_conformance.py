"""CloudEvents conformance data through the real gateway and the real log.

Source: ../shared/conformance/cloudevents/ (see SOURCES.md there): the JSON
format tests (valid/invalid events and batches), the Java SDK's JSON fixtures,
the binding YAML cases and the HTTP binding feature. Every valid case must be
accepted and land in the log as the structured JSON form of the input; every
invalid one must be refused with 400 and leave the log untouched. The accepted
cases run on the embedded log and on the real Kafka broker.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
import yaml
from confluent_kafka import KafkaException

from core.log.base import TENANT_HEADER, LogProducer
from core.log.embedded import EmbeddedAdmin, EmbeddedProducer
from core.log.kafka import KafkaAdmin, KafkaProducer
from tests.ingest.conftest import BATCH, CONFORMANCE, STRUCTURED, LogTap, gateway_client

pytestmark = pytest.mark.anyio
FORMAT = CONFORMANCE / "cloudevents-conformance-format-tests" / "format" / "json"
JAVA = CONFORMANCE / "cloudevents-sdk-java-main/formats/json-jackson/src/test/resources/v1"
YAML_DIR = CONFORMANCE / "cloudevents-conformance-main" / "yaml"
FEATURE = (
    CONFORMANCE / "cloudevents-conformance-main" / "features" / "http-protocol-binding.feature"
)
JSON_MEDIA = re.compile(r"^application/(?:[\w.+-]+\+)?json(?:\s*;.*)?$", re.IGNORECASE)


def _tests(name: str) -> list[dict[str, Any]]:
    document = json.loads((FORMAT / name).read_text("utf-8-sig"))
    tests: list[dict[str, Any]] = document["tests"]
    return tests


def _java(valid: bool) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(JAVA.glob("*.json")):
        invalid = path.name.startswith("fail_") or path.stem.endswith(("_invalid", "_upper_case"))
        if invalid != valid:
            out.append((path.stem, json.loads(path.read_text("utf-8"))))
    return out


def unset_nulls(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if v is not None}


# --- the binding YAML cases -> HTTP requests (binary and structured) ----------------


def _yaml_cases(path: Path) -> list[dict[str, Any]]:
    # BaseLoader: every scalar stays a string (as the Go conformance tool reads them);
    # the default loader would turn `time` into a datetime and `specversion` into 1.0.
    return [doc for doc in yaml.load_all(path.read_text("utf-8"), Loader=yaml.BaseLoader) if doc]


def _attributes(case: dict[str, Any]) -> dict[str, str]:
    # Values are trimmed, as the reference tool does before sending (strings.TrimSpace);
    # YAML block scalars otherwise carry a trailing newline, a control character.
    context = dict(case["ContextAttributes"])
    extensions = context.pop("Extensions", {}) or {}
    out = {k: v.strip() for k, v in context.items() if v.strip()}
    out.update({k.strip(): v.strip() for k, v in extensions.items()})
    return out


def percent_encode(value: str) -> str:
    """The binding's encoding: space, '"', '%' and non-printable-ASCII as %XX of UTF-8."""
    return "".join(
        ch if 0x21 <= ord(ch) <= 0x7E and ch not in '"%' else quote(ch, safe="") for ch in value
    )


def binary_request(case: dict[str, Any], raw_headers: bool) -> tuple[dict[str, str], bytes]:
    attributes = _attributes(case)
    content_type = attributes.pop("datacontenttype", None)
    headers = {
        f"ce-{name}": value if raw_headers else percent_encode(value)
        for name, value in attributes.items()
    }
    headers.update(case.get("TransportExtensions") or {})
    if content_type is not None:
        headers["content-type"] = content_type
    return headers, case.get("Data", "").encode("utf-8")


def binary_expected(case: dict[str, Any]) -> dict[str, Any]:
    expected: dict[str, Any] = _attributes(case)
    body = case.get("Data", "").encode("utf-8")
    content_type = expected.get("datacontenttype")
    if body and content_type and JSON_MEDIA.match(content_type):
        expected["data"] = json.loads(body)
    elif body and content_type is None and _parses_as_json(body):
        # Deliberately not the binding YAML's opaque bytes: the reference SDK
        # (cloudevents 2.x to_binary) sends JSON with no Content-Type and its own
        # receiver reads it as JSON, so meterline does too (ingest/binary.py).
        expected["data"] = json.loads(body)
    elif body:
        expected["data_base64"] = base64.b64encode(body).decode()
    return expected


def _parses_as_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


def structured_event(case: dict[str, Any]) -> dict[str, Any]:
    event: dict[str, Any] = _attributes(case)
    data = case.get("Data", "")
    content_type = event.get("datacontenttype")
    if content_type is None or JSON_MEDIA.match(content_type):
        event["data"] = json.loads(data)  # JSON format: no datacontenttype means JSON
    else:
        event["data"] = data
    return event


YAML_V1 = [
    (f"{path.stem}[{i}]", case)
    for path in (YAML_DIR / "v1.yaml", YAML_DIR / "v1.0" / "v1_minimum.yaml")
    for i, case in enumerate(_yaml_cases(path))
]
YAML_V03 = [
    (f"{path.stem}[{i}]", case)
    for path in (YAML_DIR / "v03.yaml", YAML_DIR / "v0.3" / "v03_minimum.yaml")
    for i, case in enumerate(_yaml_cases(path))
]


def _modes(case: dict[str, Any]) -> list[str]:
    mode = case.get("Mode")
    return [mode] if mode else ["binary", "structured"]


# --- logs ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kafka_log(kafka_bootstrap: str) -> Iterator[tuple[LogProducer, KafkaAdmin]]:
    topic = f"meterline.test.conformance.{uuid.uuid4().hex[:8]}"
    admin = KafkaAdmin(kafka_bootstrap)
    admin.ensure_topic(topic, 3)
    deadline = time.monotonic() + 30
    while True:  # a new topic's partitions need a leader before offsets can be read
        try:
            admin.end_offsets(topic)
            break
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    producer = KafkaProducer(kafka_bootstrap, topic, timeout_s=15)
    yield producer, admin
    producer.close()


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
async def gateway(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, LogTap]]:
    if request.param == "kafka":
        producer, admin = request.getfixturevalue("kafka_log")
        tap = LogTap(admin, producer.topic)
        async with gateway_client(producer, tenant="conformance", max_batch_events=100) as c:
            yield c, tap
        return
    path = tmp_path / "log.sqlite3"
    EmbeddedAdmin(path).ensure_topic("events", 2)
    embedded = EmbeddedProducer(path, "events")
    try:
        async with gateway_client(embedded, tenant="conformance", max_batch_events=100) as c:
            yield c, LogTap(EmbeddedAdmin(path), "events")
    finally:
        embedded.close()


@pytest.fixture
async def embedded_gateway(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, LogTap]]:
    path = tmp_path / "log.sqlite3"
    EmbeddedAdmin(path).ensure_topic("events", 2)
    embedded = EmbeddedProducer(path, "events")
    try:
        async with gateway_client(embedded, tenant="conformance", max_batch_events=100) as c:
            yield c, LogTap(EmbeddedAdmin(path), "events")
    finally:
        embedded.close()


def logged(tap: LogTap) -> list[dict[str, Any]]:
    records = tap.records()
    assert {r.header(TENANT_HEADER) for r in records} <= {b"conformance"}
    return [orjson.loads(r.value) for r in records]


def same_events(got: list[dict[str, Any]], sent: list[dict[str, Any]]) -> bool:
    # Partitions interleave a batch's events: compare as multisets.
    def key(event: dict[str, Any]) -> bytes:
        return orjson.dumps(event, option=orjson.OPT_SORT_KEYS)

    return sorted(map(key, got)) == sorted(map(key, sent))


# --- accepted ---------------------------------------------------------------------------

VALID_EVENTS = [pytest.param(t["event"], id=t["id"]) for t in _tests("valid-events.json")]
VALID_EVENTS += [pytest.param(event, id=f"java-{name}") for name, event in _java(valid=True)]
VALID_BATCHES = [pytest.param(t["batch"], id=t["id"]) for t in _tests("valid-batches.json")]


@pytest.mark.parametrize("event", VALID_EVENTS)
async def test_valid_event_is_accepted_and_logged_as_sent(
    gateway: tuple[httpx.AsyncClient, LogTap], event: dict[str, Any]
) -> None:
    client, tap = gateway
    response = await client.post(
        "/v1/events", content=orjson.dumps(event), headers={"content-type": STRUCTURED}
    )
    assert (response.status_code, response.json()) == (202, {"accepted": 1})
    assert logged(tap) == [unset_nulls(event)]


@pytest.mark.parametrize("batch", VALID_BATCHES)
async def test_valid_batch_is_accepted_and_logged_as_sent(
    gateway: tuple[httpx.AsyncClient, LogTap], batch: list[dict[str, Any]]
) -> None:
    client, tap = gateway
    response = await client.post(
        "/v1/events", content=orjson.dumps(batch), headers={"content-type": BATCH}
    )
    assert (response.status_code, response.json()) == (202, {"accepted": len(batch)})
    assert same_events(logged(tap), [unset_nulls(e) for e in batch])


@pytest.mark.parametrize(
    ("case", "mode", "raw"),
    [
        pytest.param(case, mode, raw, id=f"{name}-{mode}{'-raw' if raw else ''}")
        for name, case in YAML_V1
        for mode in _modes(case)
        for raw in ([False, True] if mode == "binary" else [False])
    ],
)
async def test_binding_yaml_case_is_accepted(
    gateway: tuple[httpx.AsyncClient, LogTap], case: dict[str, Any], mode: str, raw: bool
) -> None:
    """raw: header values sent unencoded, as the reference conformance tool does."""
    client, tap = gateway
    if mode == "binary":
        headers, body = binary_request(case, raw)
        expected = binary_expected(case)
    else:
        expected = structured_event(case)
        headers, body = {"content-type": STRUCTURED}, orjson.dumps(expected)
    response = await client.post("/v1/events", content=body, headers=headers)
    assert (response.status_code, response.json()) == (202, {"accepted": 1})
    assert logged(tap) == [expected]


def _feature_requests() -> list[Any]:
    """The HTTP binding feature's scenarios, as (headers, body, expected attributes)."""
    text = FEATURE.read_text("utf-8")
    attributes = {
        "id": "1234-1234-1234",
        "specversion": "1.0",
        "type": "com.example.someevent",
        "source": "/mycontext/subcontext",
        "time": "2018-04-05T03:56:24Z",
    }
    data = {"message": "Hello World!"}
    assert all(f"| {v}" in text or v in text for v in attributes.values())
    cases = []
    for content_type in ("application/json", "application/json; charset=utf-8"):
        headers = {f"ce-{k}": v for k, v in attributes.items()}
        headers["content-type"] = content_type
        body = b'{\n    "message": "Hello World!"\n}\n'
        expected = {**attributes, "datacontenttype": content_type, "data": data}
        cases.append(pytest.param(headers, body, expected, id=f"binary-{content_type}"))
    for content_type in (STRUCTURED, f"{STRUCTURED}; charset=utf-8"):
        event = {**attributes, "datacontenttype": "application/json", "data": data}
        cases.append(
            pytest.param(
                {"content-type": content_type, "ce-id": "ignored-in-structured-mode"},
                orjson.dumps(event),
                event,
                id=f"structured-{content_type}",
            )
        )
    return cases


@pytest.mark.parametrize(("headers", "body", "expected"), _feature_requests())
async def test_http_binding_feature_scenarios(
    embedded_gateway: tuple[httpx.AsyncClient, LogTap],
    headers: dict[str, str],
    body: bytes,
    expected: dict[str, Any],
) -> None:
    client, tap = embedded_gateway
    response = await client.post("/v1/events", content=body, headers=headers)
    assert response.status_code == 202
    assert logged(tap) == [expected]


# --- refused ------------------------------------------------------------------------

INVALID_EVENTS = [pytest.param(t["event"], id=t["id"]) for t in _tests("invalid-events.json")]
INVALID_EVENTS += [pytest.param(event, id=f"java-{name}") for name, event in _java(valid=False)]
INVALID_BATCHES = [pytest.param(t["batch"], id=t["id"]) for t in _tests("invalid-batches.json")]


@pytest.mark.parametrize("event", INVALID_EVENTS)
async def test_invalid_event_is_400_and_logs_nothing(
    embedded_gateway: tuple[httpx.AsyncClient, LogTap], event: dict[str, Any]
) -> None:
    client, tap = embedded_gateway
    response = await client.post(
        "/v1/events", content=orjson.dumps(event), headers={"content-type": STRUCTURED}
    )
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "https://meterline.dev/problems/invalid-events"
    assert body["problems"] and all("index" not in p for p in body["problems"])
    assert tap.count() == 0


@pytest.mark.parametrize("batch", INVALID_BATCHES)
async def test_invalid_batch_is_400_naming_the_bad_index_and_logs_nothing(
    embedded_gateway: tuple[httpx.AsyncClient, LogTap], batch: list[Any]
) -> None:
    client, tap = embedded_gateway
    response = await client.post(
        "/v1/events", content=orjson.dumps(batch), headers={"content-type": BATCH}
    )
    assert response.status_code == 400
    bad = {
        i
        for i, e in enumerate(batch)
        if not isinstance(e, dict) or e.get("specversion") != "1.0" or "id" not in e
    }
    assert {p["index"] for p in response.json()["problems"]} == bad
    assert tap.count() == 0


@pytest.mark.parametrize(
    ("case", "mode"),
    [
        pytest.param(case, mode, id=f"{name}-{mode}")
        for name, case in YAML_V03
        for mode in ("binary", "structured")
    ],
)
async def test_spec_0_3_binding_cases_are_refused(
    embedded_gateway: tuple[httpx.AsyncClient, LogTap], case: dict[str, Any], mode: str
) -> None:
    """meterline speaks CloudEvents 1.0 only; the 0.3 YAML cases must be 400, not guessed."""
    client, tap = embedded_gateway
    if mode == "binary":
        headers, body = binary_request(case, raw_headers=False)
    else:
        headers, body = {"content-type": STRUCTURED}, orjson.dumps(structured_event(case))
    response = await client.post("/v1/events", content=body, headers=headers)
    assert response.status_code == 400
    assert {
        "field": "specversion",
        "code": "literal_error",
        "message": "Input should be '1.0'",
    } in (response.json()["problems"])
    assert tap.count() == 0


def test_the_conformance_data_is_all_here() -> None:
    """A moved or emptied data folder must fail loudly, not pass with zero cases."""
    assert (len(VALID_EVENTS), len(INVALID_EVENTS)) == (10 + 13, 25 + 4)
    assert (len(VALID_BATCHES), len(INVALID_BATCHES)) == (5, 3)
    assert (len(YAML_V1), len(YAML_V03)) == (8, 7)
