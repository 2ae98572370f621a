"""The OpenAPI document against the real app: a bounded schemathesis run.

Every operation gets generated requests (valid and invalid); the gateway must
never answer 5xx, and every status, content type, header and body it sends must
be the ones the document describes. Bounded to a few hundred examples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import orjson
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
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from core.log.embedded import EmbeddedAdmin, EmbeddedProducer
from core.settings import load_settings
from ingest.app import Gateway, create_app
from ingest.auth import ApiKey, KeyStore, hash_key
from ingest.events import POST_EVENTS
from ingest.openapi import REF_TEMPLATE, Operation, Reply, openapi_document, route
from ingest.problems import HTTPProblem
from ingest.replies import UNAUTHORIZED
from ingest.usage_api import UsageIn
from ingest.webhook import OPTIONS_EVENTS
from meterline.runtime import build_price_book
from query import Reader
from query import routes as read_routes
from query.usage import GET_USAGE
from schemas import export
from schemas.problems import Problem, ProblemDocument

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


def test_document_lists_every_status_the_events_route_answers(api_schema: Any) -> None:
    post = api_schema.raw_schema["paths"]["/v1/events"]["post"]
    assert set(post["responses"]) == {"202", "400", "401", "403", "413", "415", "429", "503"}
    assert set(post["requestBody"]["content"]) >= {
        "application/cloudevents+json",
        "application/cloudevents-batch+json",
        "application/json",
    }


def _paths(app: Starlette) -> dict[str, set[str]]:
    document = openapi_document(app.routes)
    return {path: set(methods) for path, methods in document["paths"].items()}


def _gateway(producer: EmbeddedProducer) -> Gateway:
    return Gateway(
        producer, tenant="t", max_body_bytes=1000, max_event_bytes=1000, max_batch_events=5
    )


def test_document_describes_only_what_is_mounted(
    api_schema: Any, producer: EmbeddedProducer
) -> None:
    gateway = _gateway(producer)
    alone = create_app(gateway)
    with_reads = create_app(gateway, mounts=read_routes(Reader(None, gateway.guard)))
    assert "/v1/sql" not in _paths(alone)
    assert _paths(alone)["/api/usage"] == {"post"}
    assert _paths(with_reads)["/v1/sql"] == {"post"}
    assert _paths(with_reads)["/api/usage"] == {"get", "post"}
    # And the served document is the one of the served routes.
    assert api_schema.raw_schema["paths"].keys() == _paths(with_reads).keys()


async def _endpoint(_: Request) -> Response:
    return Response()


def test_a_route_without_operations_fails_the_app_naming_it(producer: EmbeddedProducer) -> None:
    gateway = _gateway(producer)
    with pytest.raises(ValueError, match=r"/v1/budgets \['GET', 'HEAD'\] has no OpenAPI"):
        create_app(gateway, mounts=[Route("/v1/budgets", _endpoint)])


def test_a_route_answers_exactly_its_documented_methods() -> None:
    made = route("/x", _endpoint, POST_EVENTS, OPTIONS_EVENTS)
    assert made.methods == {"POST", "OPTIONS"}
    with pytest.raises(ValueError, match="one Operation per method"):
        route("/x", _endpoint, POST_EVENTS, POST_EVENTS)


def test_two_different_replies_under_one_name_are_refused() -> None:
    other = Reply("something else", name=UNAUTHORIZED.name)
    clash = Operation("GET", "clash", responses={200: other})
    with pytest.raises(ValueError, match="both named 'Unauthorized'"):
        openapi_document([route("/a", _endpoint, GET_USAGE), route("/b", _endpoint, clash)])


def test_bodies_are_the_validators_schemas(api_schema: Any) -> None:
    """The document's CloudEvent is the published schemas/json/cloudevent.json (one source)."""
    components = api_schema.raw_schema["components"]["schemas"]
    assert components["CloudEvent"] == export.schemas()["cloudevent.json"]
    assert components["UsageIn"] == UsageIn.model_json_schema(ref_template=REF_TEMPLATE)
    assert components["CloudEvent"]["properties"]["time"]["anyOf"][0]["format"] == "date-time"


@pytest.mark.parametrize(
    "problem",
    [
        HTTPProblem(400, "invalid", "bad", [Problem("missing", "id", "Field required").at(3)]),
        HTTPProblem(429, "rate-limited", "slow down", retry_after=0.2),
    ],
)
def test_every_member_a_problem_document_renders_is_in_its_model(problem: HTTPProblem) -> None:
    body = orjson.loads(problem.response().body)
    assert set(body) <= set(ProblemDocument.model_fields)
    for item in body.get("problems", []):
        assert set(item) <= {f.name for f in dataclasses.fields(Problem)}
    assert ProblemDocument.model_validate(body).model_dump(exclude_defaults=True) == body
