"""The OpenAPI document against the real app: a bounded schemathesis run.

Every operation gets generated requests (valid and invalid); the gateway must
never answer 5xx, and every status, content type, header and body it sends must
be the ones the document describes. Bounded to a few hundred examples.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from core.log.embedded import EmbeddedAdmin, EmbeddedProducer
from core.settings import load_settings
from ingest.app import Gateway, create_app
from ingest.auth import ApiKey, KeyStore, hash_key
from meterline.runtime import build_price_book
from query import Reader
from query import routes as read_routes

KEY = "mlk_schemathesis"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    path = tmp_path_factory.mktemp("openapi") / "log.sqlite3"
    EmbeddedAdmin(path).ensure_topic("events", 2)
    producer = EmbeddedProducer(path, "events")
    gateway = Gateway(
        producer,
        tenant="t",
        max_body_bytes=100_000,
        max_event_bytes=65_536,
        max_batch_events=50,
        keys=KeyStore({hash_key(KEY): ApiKey(hash_key(KEY), "t")}),
        price_book=build_price_book(load_settings()),
    )
    app = create_app(gateway, mounts=read_routes(Reader(None, gateway.guard)))
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    producer.close()


OPERATIONS = [
    ("POST", "/v1/events"),
    ("OPTIONS", "/v1/events"),
    ("POST", "/api/usage"),
    ("GET", "/api/usage"),
    ("POST", "/v1/sql"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
]


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_gateway_matches_its_openapi_document(api_schema: Any, method: str, path: str) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy())
    @settings(
        max_examples=30 if method in ("POST", "GET") and path.startswith(("/v1", "/api")) else 5,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        case.call_and_validate(headers={"x-api-key": KEY}, checks=CHECKS)

    check()


def test_document_lists_every_status_the_events_route_answers() -> None:
    from ingest.openapi import openapi_document

    post = openapi_document()["paths"]["/v1/events"]["post"]
    assert set(post["responses"]) == {"202", "400", "401", "403", "413", "415", "429", "503"}
    assert set(post["requestBody"]["content"]) >= {
        "application/cloudevents+json",
        "application/cloudevents-batch+json",
        "application/json",
    }
