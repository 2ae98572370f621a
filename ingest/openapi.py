"""The OpenAPI 3.1 document, generated from the routes actually mounted.

Each handler module exports one ``Operation`` per method, declared next to the
handler: its summary, parameters, request body and every status it answers.
``route(path, endpoint, *operations)`` makes the Starlette route from them, so a
route answers exactly the methods it documents. ``openapi_document(routes)`` walks
the routes the app serves and asks pydantic for the JSON Schema of every body,
parameter and header, from the same models and types that validate them: the
document cannot describe a field the validator does not have. A route mounted
without operations fails the build, naming it, so nothing is served undocumented.

Why typed operations and not ``starlette.schemas.SchemaGenerator``: that one reads
YAML from each endpoint's docstring, so a misspelt status or ``$ref`` is found by
the first client instead of mypy; it knows nothing of pydantic, so every body
would be written out by hand again (the drift this module replaces); and it gives
one docstring to all methods of an endpoint, while ``/v1/events`` answers POST and
OPTIONS under different contracts. Its route walk is a dozen lines; ours, below,
also refuses what it cannot describe instead of skipping it.

A schemathesis run (tests/ingest/test_openapi.py) holds the document to the real
responses: every status, content type, header and body the app sends.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import TypeAdapter
from pydantic.json_schema import JsonSchemaMode
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

__all__ = [
    "DocumentedRoute",
    "Header",
    "Operation",
    "Param",
    "Reply",
    "SecurityScheme",
    "openapi_document",
    "route",
]

Endpoint = Callable[[Request], Awaitable[Response]]
REF_TEMPLATE = "#/components/schemas/{model}"
INFO = {
    "title": "meterline gateway",
    "version": "1",
    "description": "CloudEvents in, durably logged, priced and metered. Every response "
    "carries X-Request-ID (yours when it is a sane token, else a new one). Errors are "
    "application/problem+json.",
}

# A schema source is anything pydantic's TypeAdapter describes: a model, a
# dataclass, ``list[Model]``, ``str``, ``Annotated[int, Field(ge=1)]``. Never a
# hand-written dict: that is the drift this module exists to prevent.
SchemaSource = Any


@dataclass(frozen=True, slots=True)
class Header:
    """A response header; the same name must mean the same header everywhere."""

    name: str
    schema: SchemaSource = str
    description: str = ""


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    location: Literal["query", "header", "path"]  # a path parameter must be required=True
    schema: SchemaSource = str
    description: str = ""
    required: bool = False


@dataclass(frozen=True, slots=True)
class Reply:
    """One response: bodies by media type, and the headers it may carry.

    ``name`` makes it a shared component (``#/components/responses/<name>``), for
    the problems several operations answer alike (ingest/replies.py).
    """

    description: str
    content: Mapping[str, SchemaSource] = field(default_factory=dict)
    headers: tuple[Header, ...] = ()
    name: str | None = None


@dataclass(frozen=True, slots=True)
class SecurityScheme:
    name: str
    scheme: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Operation:
    """One method of one route, as its handler module declares it.

    ``body`` maps each accepted media type to the schema of the request body
    (validation mode); ``responses`` maps every status the handler can answer to
    its ``Reply`` (serialization mode). An empty ``security`` means no credentials.
    """

    method: Literal["GET", "POST", "PATCH", "DELETE", "OPTIONS"]
    summary: str
    responses: Mapping[int, Reply]
    description: str = ""
    parameters: tuple[Param, ...] = ()
    body: Mapping[str, SchemaSource] | None = None
    security: tuple[SecurityScheme, ...] = ()


class DocumentedRoute(Route):
    """A Starlette ``Route`` that carries the operations it answers."""

    def __init__(self, path: str, endpoint: Endpoint, operations: Sequence[Operation]) -> None:
        methods = [op.method for op in operations]
        if not methods or len(set(methods)) != len(methods):
            raise ValueError(f"route {path}: give one Operation per method, got {methods}")
        super().__init__(path, endpoint, methods=methods)
        self.operations = tuple(operations)


def route(path: str, endpoint: Endpoint, *operations: Operation) -> DocumentedRoute:
    """The route for ``path``, answering exactly the methods of ``operations``."""
    return DocumentedRoute(path, endpoint, operations)


def openapi_document(routes: Sequence[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes`` (an app's ``routes``, mounts included).

    Raises ``ValueError`` naming a route it cannot describe, so an app that
    serves an undocumented route fails when it is built, not when a client reads
    the document.
    """
    schemas = _Schemas()
    components = _Components(schemas)
    paths: dict[str, dict[str, Any]] = {}
    for path, operation in _operations(routes):
        methods = paths.setdefault(path, {})
        method = operation.method.lower()
        if method in methods:
            raise ValueError(f"{operation.method} {path} is documented by two routes")
        methods[method] = _operation(operation, schemas, components)
    # After every operation: pydantic generates all schemas in one batch so that a
    # model used in many places becomes one component, named once.
    component_schemas = schemas.resolve()
    return {
        "openapi": "3.1.0",
        "info": dict(INFO),
        "paths": paths,
        "components": {**components.render(), "schemas": component_schemas},
    }


def _operations(routes: Sequence[BaseRoute], prefix: str = "") -> Iterator[tuple[str, Operation]]:
    for item in routes:
        if isinstance(item, DocumentedRoute):
            for operation in item.operations:
                yield prefix + item.path, operation
        elif isinstance(item, Mount):
            yield from _operations(item.routes, prefix + item.path)
        elif isinstance(item, Route) and not item.include_in_schema:
            continue
        else:
            # Skipping it would publish a document that silently omits a served route.
            path = getattr(item, "path", repr(item))
            methods = sorted(getattr(item, "methods", None) or ())
            raise ValueError(
                f"route {prefix}{path} {methods} has no OpenAPI operations: "
                "build it with ingest.openapi.route(path, endpoint, *operations)"
            )


def _operation(op: Operation, schemas: _Schemas, components: _Components) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": op.summary}
    if op.description:
        out["description"] = op.description
    if op.security:
        out["security"] = [{components.security(scheme): []} for scheme in op.security]
    if op.parameters:
        out["parameters"] = [_param(p, schemas) for p in op.parameters]
    if op.body is not None:
        out["requestBody"] = {
            "required": True,
            "content": {
                media: {"schema": schemas.of(source, "validation")}
                for media, source in op.body.items()
            },
        }
    out["responses"] = {
        str(status): components.response(reply) for status, reply in sorted(op.responses.items())
    }
    return out


def _param(param: Param, schemas: _Schemas) -> dict[str, Any]:
    out: dict[str, Any] = {"name": param.name, "in": param.location, "required": param.required}
    if param.description:
        out["description"] = param.description
    out["schema"] = schemas.of(param.schema, "validation")
    return out


class _Schemas:
    """Every schema the document needs, generated by pydantic in one batch.

    ``of`` hands out an empty dict at once and ``resolve`` fills it in place, so
    the document is built in a single walk.
    """

    def __init__(self) -> None:
        self._wanted: list[tuple[dict[str, Any], JsonSchemaMode, TypeAdapter[Any]]] = []

    def of(self, source: SchemaSource, mode: JsonSchemaMode) -> dict[str, Any]:
        slot: dict[str, Any] = {}
        self._wanted.append((slot, mode, TypeAdapter(source)))
        return slot

    def resolve(self) -> dict[str, Any]:
        """Fill every slot; return the named schemas (``components.schemas``)."""
        inputs = [(i, mode, adapter) for i, (_, mode, adapter) in enumerate(self._wanted)]
        by_key, definitions = TypeAdapter.json_schemas(inputs, ref_template=REF_TEMPLATE)
        for i, (slot, mode, _) in enumerate(self._wanted):
            slot.update(by_key[(i, mode)])
        named: dict[str, Any] = definitions.get("$defs", {})
        return named


class _Components:
    """Shared responses, headers and security schemes, each defined once by name."""

    def __init__(self, schemas: _Schemas) -> None:
        self._schemas = schemas
        self._responses: dict[str, tuple[Reply, dict[str, Any]]] = {}
        self._headers: dict[str, tuple[Header, dict[str, Any]]] = {}
        self._security: dict[str, SecurityScheme] = {}

    def response(self, reply: Reply) -> dict[str, Any]:
        if reply.name is None:
            return self._render(reply)
        known = self._responses.get(reply.name)
        if known is None:
            self._responses[reply.name] = (reply, self._render(reply))
        elif known[0] != reply:
            raise ValueError(f"two different responses are both named {reply.name!r}")
        return {"$ref": f"#/components/responses/{reply.name}"}

    def _render(self, reply: Reply) -> dict[str, Any]:
        out: dict[str, Any] = {"description": reply.description}
        if reply.headers:
            out["headers"] = {h.name: self._header(h) for h in reply.headers}
        if reply.content:
            out["content"] = {
                media: {"schema": self._schemas.of(source, "serialization")}
                for media, source in reply.content.items()
            }
        return out

    def _header(self, header: Header) -> dict[str, str]:
        known = self._headers.get(header.name)
        if known is None:
            rendered: dict[str, Any] = {"schema": self._schemas.of(header.schema, "serialization")}
            if header.description:
                rendered["description"] = header.description
            self._headers[header.name] = (header, rendered)
        elif known[0] != header:
            raise ValueError(f"header {header.name!r} is declared twice, differently")
        return {"$ref": f"#/components/headers/{header.name}"}

    def security(self, scheme: SecurityScheme) -> str:
        known = self._security.setdefault(scheme.name, scheme)
        if known != scheme:
            raise ValueError(f"two different security schemes are both named {scheme.name!r}")
        return scheme.name

    def render(self) -> dict[str, Any]:
        return {
            "securitySchemes": {name: dict(s.scheme) for name, s in self._security.items()},
            "headers": {name: rendered for name, (_, rendered) in self._headers.items()},
            "responses": {name: rendered for name, (_, rendered) in self._responses.items()},
        }
