"""Binary content mode: the ce- header decoder, and fuzzing of it and the envelope parser."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ingest.binary import HeaderValueError, decode_header_value
from schemas.envelope import CloudEvent, _checked_envelope, _fast_envelope, parse_event
from schemas.problems import Problem
from tests.ingest.conftest import ClientFactory, LogTap

HEADERS = {
    "ce-specversion": "1.0",
    "ce-id": "b-1",
    "ce-source": "/app",
    "ce-type": "io.meterline.usage.tokens",
    "ce-subject": "acme",
}
USAGE = {"provider": "openai", "model": "gpt-4o", "input_tokens": 7}


def encode(text: str) -> bytes:
    """The binding's percent-encoding (what a conforming sender does)."""
    return "".join(
        c if 0x21 <= ord(c) <= 0x7E and c not in '"%' else quote(c, safe="") for c in text
    ).encode()


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b"plain", "plain"),
        (b"  padded\t", "padded"),
        (b"%C3%A9t%C3%A9%20%25", "été %"),
        (b"%c3%a9", "é"),  # lower-case hex is fine
        (b'"quoted \\"and\\" escaped"', 'quoted "and" escaped'),
        (b'"%41"', "A"),  # unquote first, then one round of percent-decoding
        (b"%2541", "%41"),  # exactly one round
        (b'{"othervalue": 5}', '{"othervalue": 5}'),  # quotes inside, not a quoted-string
    ],
)
def test_header_values_decode_per_the_binding(raw: bytes, value: str) -> None:
    assert decode_header_value(raw) == value


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"%C0%A0", "is not valid UTF-8 after percent-decoding (byte 0)"),  # overlong space
        (b"%E9", "is not valid UTF-8 after percent-decoding (byte 0)"),
        (b"\xff", "is not valid UTF-8 after percent-decoding (byte 0)"),
        (b"50%", "has '%' not followed by two hex digits at byte 2"),
        (b"%zz", "has '%' not followed by two hex digits at byte 0"),
        (b'"unterminated', "starts with '\"' but is not one RFC 7230 quoted-string"),
    ],
)
def test_invalid_header_values_are_refused_with_the_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(HeaderValueError) as caught:
        decode_header_value(raw)
    assert str(caught.value) == reason


@given(st.text())
def test_percent_encoding_round_trips(text: str) -> None:
    assert decode_header_value(encode(text)) == text


@given(st.binary(max_size=200))
def test_decoder_returns_text_or_says_why_for_any_bytes(raw: bytes) -> None:
    try:
        value = decode_header_value(raw)
    except HeaderValueError:
        return
    assert isinstance(value, str)


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E)))
def test_rfc7230_quoted_strings_round_trip(text: str) -> None:
    quoted = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    # One round of percent-decoding follows the unquoting, so '%' must be encoded.
    assert decode_header_value(quoted.replace("%", "%25").encode()) == text


# --- the envelope parser under fuzzing ---------------------------------------------------

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.sampled_from(["1.0", "/app", "https://x.io/a", "2025-01-01T00:00:00Z", "text/plain"]),
)
JSONISH = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner),
    max_leaves=4,
)
NAMES = st.sampled_from(
    [
        "specversion",
        "id",
        "source",
        "type",
        "subject",
        "time",
        "datacontenttype",
        "dataschema",
        "data",
        "data_base64",
        "ext",
        "Ext",
        "x_y",
        "a" * 21,
    ]
)
EVENTS = st.dictionaries(NAMES, JSONISH, max_size=10).map(
    lambda d: {"specversion": "1.0", "id": "i", "source": "/s", "type": "t.x", **d}
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(EVENTS)
def test_envelope_parser_never_raises_and_agrees_with_the_pydantic_model(
    event: dict[str, Any],
) -> None:
    result = parse_event(event)
    assert isinstance(result, list) or result.raw is event
    if isinstance(result, list):
        assert result and all(isinstance(p, Problem) for p in result)
    if not isinstance(event.get("type"), str) or event["type"].startswith("io.meterline."):
        return  # usage types add payload rules the bare model does not have
    try:
        CloudEvent.model_validate(event)
        model_ok = True
    except ValidationError:
        model_ok = False
    assert model_ok == (not isinstance(result, list))


@settings(max_examples=400)
@given(EVENTS)
def test_fast_path_only_accepts_what_the_reference_path_accepts(event: dict[str, Any]) -> None:
    fast = _fast_envelope(event)
    if fast is not None:
        assert _checked_envelope(event) == fast


# --- binary mode requests --------------------------------------------------------------


@pytest.mark.anyio
async def test_binary_json_usage_event_is_validated_and_logged_structured(
    make_client: ClientFactory, tap: LogTap
) -> None:
    async with make_client() as client:
        response = await client.post(
            "/v1/events",
            content=orjson.dumps(USAGE),
            headers={**HEADERS, "ce-subject": "caf%C3%A9", "content-type": "application/json"},
        )
    assert (response.status_code, response.json()) == (202, {"accepted": 1})
    assert orjson.loads(tap.records()[0].value) == {
        "specversion": "1.0",
        "id": "b-1",
        "source": "/app",
        "type": "io.meterline.usage.tokens",
        "subject": "café",
        "datacontenttype": "application/json",
        "data": USAGE,
    }


@pytest.mark.anyio
async def test_binary_non_json_body_is_kept_byte_exact_as_data_base64(
    make_client: ClientFactory, tap: LogTap
) -> None:
    body = bytes(range(256))
    async with make_client() as client:
        response = await client.post(
            "/v1/events",
            content=body,
            headers={**HEADERS, "ce-type": "com.acme.blob", "content-type": "image/png"},
        )
    assert response.status_code == 202
    logged = orjson.loads(tap.records()[0].value)
    assert base64.b64decode(logged["data_base64"]) == body
    assert logged["datacontenttype"] == "image/png"


def _sdk_binary_v1() -> tuple[dict[str, str], bytes]:
    from cloudevents.v1.conversion import to_binary
    from cloudevents.v1.http import CloudEvent as V1Event

    attributes = {"id": "b-1", "source": "/app", "type": HEADERS["ce-type"], "subject": "acme"}
    return to_binary(V1Event(attributes, USAGE))


def _sdk_binary_core() -> tuple[dict[str, str], bytes]:
    from cloudevents.core.bindings.http import to_binary_event
    from cloudevents.core.v1.event import CloudEvent as CoreEvent

    attributes = {"id": "b-1", "source": "/app", "type": HEADERS["ce-type"], "subject": "acme",
                  "specversion": "1.0"}  # fmt: skip
    message = to_binary_event(CoreEvent(attributes, USAGE))
    return message.headers, message.body


@pytest.mark.anyio
@pytest.mark.parametrize("build", [_sdk_binary_v1, _sdk_binary_core], ids=["v1", "core"])
async def test_reference_sdk_binary_mode_without_content_type_is_json_data(
    make_client: ClientFactory, tap: LogTap, build: Any
) -> None:
    # cloudevents 2.x sends binary mode with a JSON body and no Content-Type; its
    # own receiver reads that body as JSON, so the gateway must too (it was 400).
    headers, body = build()
    assert "content-type" not in {name.lower() for name in headers}
    async with make_client() as client:
        response = await client.post("/v1/events", content=body, headers=headers)
    assert (response.status_code, response.json()) == (202, {"accepted": 1})
    logged = orjson.loads(tap.records()[0].value)
    assert logged["data"] == USAGE
    assert "datacontenttype" not in logged and "data_base64" not in logged


@pytest.mark.anyio
async def test_binary_body_without_content_type_that_is_not_json_stays_bytes(
    make_client: ClientFactory, tap: LogTap
) -> None:
    body = b"\x00\xffnot json"
    async with make_client() as client:
        response = await client.post(
            "/v1/events", content=body, headers={**HEADERS, "ce-type": "com.acme.blob"}
        )
    assert response.status_code == 202
    logged = orjson.loads(tap.records()[0].value)
    assert base64.b64decode(logged["data_base64"]) == body


@pytest.mark.anyio
async def test_binary_usage_event_with_invalid_payload_is_400_naming_the_field(
    make_client: ClientFactory, tap: LogTap
) -> None:
    async with make_client() as client:
        response = await client.post(
            "/v1/events",
            content=orjson.dumps({**USAGE, "input_tokens": -1}),
            headers={**HEADERS, "content-type": "application/json"},
        )
    assert response.status_code == 400
    assert response.json()["problems"] == [
        {
            "field": "data.input_tokens",
            "code": "greater_than_equal",
            "message": "Input should be greater than or equal to 0",
        }
    ]
    assert tap.count() == 0


@pytest.mark.anyio
async def test_bad_ce_headers_are_400_listing_each_header(
    make_client: ClientFactory, tap: LogTap
) -> None:
    headers = [
        *HEADERS.items(),
        ("ce-id", "second"),
        ("ce-data", "x"),
        ("ce-datacontenttype", "text/plain"),
        ("ce-note", "%FF"),
        ("content-type", "application/json"),
    ]
    async with make_client() as client:
        response = await client.post("/v1/events", content=b"{}", headers=headers)
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "type": "https://meterline.dev/problems/invalid-binary-event",
        "title": "Invalid events",
        "status": 400,
        "detail": "the ce- headers or the body are invalid",
        "problems": [
            {
                "code": "duplicate_header",
                "field": "header ce-id",
                "message": "an attribute header must appear once",
            },
            {
                "code": "reserved_header",
                "field": "header ce-data",
                "message": "the body is the data in binary mode",
            },
            {
                "code": "reserved_header",
                "field": "header ce-datacontenttype",
                "message": "send the media type as Content-Type",
            },
            {
                "code": "invalid_header",
                "field": "header ce-note",
                "message": "value is not valid UTF-8 after percent-decoding (byte 0)",
            },
        ],
    }
    assert tap.count() == 0


@pytest.mark.anyio
async def test_binary_json_body_that_is_not_json_is_400(
    make_client: ClientFactory, tap: LogTap
) -> None:
    async with make_client() as client:
        response = await client.post(
            "/v1/events", content=b"{nope", headers={**HEADERS, "content-type": "application/json"}
        )
    assert response.status_code == 400
    assert [p["code"] for p in response.json()["problems"]] == ["malformed_json"]
    assert tap.count() == 0
