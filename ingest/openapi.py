"""The gateway's OpenAPI 3.1 document, written by hand next to the handlers.

Hand-written because the wire contract is the product here: content modes that
share one path, binary-mode ``ce-*`` headers and problem documents do not come
out of a framework's generator faithfully. A schemathesis run in the tests
(tests/ingest/test_openapi.py) holds it to the real responses: every status and
body the gateway sends must be described here.
"""

from __future__ import annotations

from typing import Any

from schemas.usage import MAX_TOKENS

PROBLEM = "application/problem+json"
_REF = "#/components/"


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"{_REF}{kind}/{name}"}


def _problem(description: str, *headers: str) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM: {"schema": _ref("schemas", "Problem")}},
    }
    if headers:
        response["headers"] = {name: _ref("headers", name) for name in headers}
    return response


_RESPONSES: dict[str, Any] = {
    "Invalid": _problem(
        "Invalid request: malformed JSON, or events that fail validation. Nothing was "
        "accepted; `problems` lists every problem with the event's batch `index`."
    ),
    "Unauthorized": _problem(
        "Missing or invalid API key (`Authorization: Bearer <key>` or `X-API-Key`).",
        "WWW-Authenticate",
    ),
    "Forbidden": _problem("The API key lacks the scope this operation needs."),
    "NotFound": _problem("Not enabled on this process (no store attached)."),
    "TooLarge": _problem(
        "Body, number of events or one event over its limit. Nothing was accepted."
    ),
    "UnsupportedMediaType": _problem("Content-Type not accepted."),
    "UsageInvalid": _problem("The usage record or query is invalid; `problems` names each field."),
    "RateLimited": _problem(
        "Over the API key's request rate; retry after Retry-After.", "Retry-After"
    ),
    "NotServed": _problem("This process has no price book attached."),
    "Unavailable": _problem(
        "The log (or store) did not acknowledge in time. Nothing is acknowledged: retry the "
        "same request after Retry-After (duplicates are dropped downstream).",
        "Retry-After",
    ),
    "NotReady": _problem(
        "Not ready: one entry in `problems` per part (`field`: the part, e.g. `processor-0`, "
        "`embedded-log-writer[meterline.usage]`, `log`; `code`: `dead`, `stuck` or "
        "`unreachable`; `message`: why). Dead and stuck parts make the process exit."
    ),
}

_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]
_TEXT = {"text/plain": {"schema": {"type": "string"}}}

_CE_HEADERS = [
    {
        "name": name,
        "in": "header",
        "required": False,
        "description": f"Binary mode: the `{name[3:]}` attribute (percent-encoded, RFC 7230 "
        "quoting accepted). `ce-specversion` selects binary mode for any Content-Type other "
        "than the CloudEvents JSON formats.",
        "schema": {"type": "string"},
    }
    for name in ("ce-specversion", "ce-id", "ce-source", "ce-type", "ce-subject", "ce-time")
]

_CLOUDEVENT: dict[str, Any] = {
    "type": "object",
    "description": "A CloudEvents 1.0 event in JSON format (structured mode). Extension "
    "attributes: lowercase a-z0-9 names of at most 20 characters with string, boolean or "
    "32-bit integer values. Usage types (io.meterline.usage.*) also need `subject` and a "
    "`data` object; see schemas/json/ for their schemas.",
    "required": ["specversion", "id", "source", "type"],
    "properties": {
        "specversion": {"const": "1.0"},
        "id": {"type": "string", "minLength": 1},
        "source": {"type": "string", "minLength": 1, "format": "uri-reference"},
        "type": {"type": "string", "minLength": 1},
        "subject": {"type": ["string", "null"], "minLength": 1},
        "time": {"type": ["string", "null"], "format": "date-time"},
        "datacontenttype": {"type": ["string", "null"], "minLength": 1},
        "dataschema": {"type": ["string", "null"], "format": "uri"},
        "data": {},
        "data_base64": {"type": ["string", "null"], "contentEncoding": "base64"},
    },
    "additionalProperties": True,
}

_USAGE_OUT: dict[str, Any] = {
    "type": "object",
    "required": [
        "id",
        "project_id",
        "provider",
        "model",
        "input_tokens",
        "output_tokens",
        "total_tokens",
        "cost_usd",
        "request_timestamp",
    ],
    "properties": {
        "id": {"type": "string", "description": "The Idempotency-Key, or a new UUID."},
        "project_id": {"type": "string"},
        "provider": {"type": "string"},
        "model": {"type": "string"},
        "input_tokens": {"type": "integer", "minimum": 0},
        "output_tokens": {"type": "integer", "minimum": 0},
        "total_tokens": {"type": "integer", "minimum": 0},
        "cost_usd": {
            "type": "string",
            "pattern": r"^-?\d+(\.\d+)?$",
            "description": "Provider cost, exact decimal as a string ('0' when unpriced).",
        },
        "priced": {"type": "boolean", "description": "False when no price rule matched."},
        "request_timestamp": {"type": "string", "format": "date-time"},
    },
}


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "meterline gateway",
            "version": "1",
            "description": "CloudEvents in, durably logged, priced and metered. Every response "
            "carries X-Request-ID (yours when it is a sane token, else a new one). Errors are "
            "application/problem+json.",
        },
        "paths": {
            "/v1/events": {
                "post": {
                    "summary": "Send events (structured, batch, binary or plain JSON)",
                    "description": "202 only after the log acknowledged every event. A request "
                    "is all-or-nothing: one invalid event rejects it and nothing is logged.",
                    "security": _SECURITY,
                    "parameters": _CE_HEADERS,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/cloudevents+json": {
                                "schema": _ref("schemas", "CloudEvent")
                            },
                            "application/cloudevents-batch+json": {
                                "schema": {"type": "array", "items": _ref("schemas", "CloudEvent")}
                            },
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        _ref("schemas", "CloudEvent"),
                                        {"type": "array", "items": _ref("schemas", "CloudEvent")},
                                    ]
                                }
                            },
                            "application/octet-stream": {
                                "schema": {"type": "string", "format": "binary"},
                                "description": "Binary mode (any media type with ce-specversion): "
                                "the body is the event's data.",
                            },
                        },
                    },
                    "responses": {
                        "202": {
                            "description": "Every event is durably in the log.",
                            "content": {
                                "application/json": {"schema": _ref("schemas", "Accepted")}
                            },
                        },
                        "400": _ref("responses", "Invalid"),
                        "401": _ref("responses", "Unauthorized"),
                        "403": _ref("responses", "Forbidden"),
                        "413": _ref("responses", "TooLarge"),
                        "415": _ref("responses", "UnsupportedMediaType"),
                        "429": _ref("responses", "RateLimited"),
                        "503": _ref("responses", "Unavailable"),
                    },
                },
                "options": {
                    "summary": "CloudEvents webhook abuse-protection handshake",
                    "parameters": [
                        {
                            "name": "WebHook-Request-Origin",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "WebHook-Request-Rate",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "WebHook-Request-Callback",
                            "in": "header",
                            "required": False,
                            "description": "Not followed (the grant is synchronous).",
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "204": {
                            "description": "Allowed. Without WebHook-Request-Origin, only Allow.",
                            "headers": {
                                "Allow": _ref("headers", "Allow"),
                                "WebHook-Allowed-Origin": _ref("headers", "WebHook-Allowed-Origin"),
                                "WebHook-Allowed-Rate": _ref("headers", "WebHook-Allowed-Rate"),
                            },
                        },
                        "403": _problem("This origin may not deliver here."),
                    },
                },
            },
            "/api/usage": {
                "post": {
                    "summary": "Record one LLM call (seed-compatible usage API)",
                    "security": _SECURITY,
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "description": "Becomes the event id; re-sending is counted once.",
                            "schema": {"type": "string", "maxLength": 255},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("schemas", "UsageIn")}},
                    },
                    "responses": {
                        "201": {
                            "description": "Logged and priced.",
                            "content": {
                                "application/json": {"schema": _ref("schemas", "UsageOut")}
                            },
                        },
                        "401": _ref("responses", "Unauthorized"),
                        "403": _ref("responses", "Forbidden"),
                        "413": _ref("responses", "TooLarge"),
                        "415": _ref("responses", "UnsupportedMediaType"),
                        "422": _ref("responses", "UsageInvalid"),
                        "429": _ref("responses", "RateLimited"),
                        "501": _ref("responses", "NotServed"),
                        "503": _ref("responses", "Unavailable"),
                    },
                },
                "get": {
                    "summary": "The caller's tenant's token usage, from ClickHouse",
                    "security": _SECURITY,
                    "parameters": [
                        {"name": "project_id", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "date_from",
                            "in": "query",
                            "description": "YYYY-MM-DD or RFC 3339, inclusive.",
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "date_to",
                            "in": "query",
                            "description": "YYYY-MM-DD (whole day) or RFC 3339, inclusive.",
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 10000},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "Usage rows ordered by time.",
                            "content": {
                                "application/json": {"schema": _ref("schemas", "UsageList")}
                            },
                        },
                        "401": _ref("responses", "Unauthorized"),
                        "403": _ref("responses", "Forbidden"),
                        "404": _ref("responses", "NotFound"),
                        "422": _ref("responses", "UsageInvalid"),
                        "429": _ref("responses", "RateLimited"),
                        "503": _ref("responses", "Unavailable"),
                    },
                },
            },
            "/v1/sql": {
                "post": {
                    "summary": "SQL on this process's store (admin token; meterline sql)",
                    "security": [{"bearer": []}],
                    "parameters": [
                        {
                            "name": "format",
                            "in": "query",
                            "schema": {
                                "type": "string",
                                "enum": [
                                    "JSONCompact",
                                    "JSONEachRow",
                                    "CSVWithNames",
                                    "TSVWithNames",
                                    "PrettyCompact",
                                    "JSON",
                                ],
                            },
                        }
                    ],
                    "requestBody": {"required": True, "content": _TEXT},
                    "responses": {
                        "200": {"description": "The engine's output.", "content": _TEXT},
                        "400": _ref("responses", "Invalid"),
                        "401": _ref("responses", "Unauthorized"),
                        "404": _ref("responses", "NotFound"),
                        "413": _ref("responses", "TooLarge"),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "The process is up (503 once a part failed: it is exiting)",
                    "responses": {
                        "200": {"description": "ok", "content": _TEXT},
                        "503": _ref("responses", "NotReady"),
                    },
                }
            },
            "/readyz": {
                "get": {
                    "summary": "The log is reachable and no background part is dead or stuck",
                    "responses": {
                        "200": {"description": "ready", "content": _TEXT},
                        "503": _ref("responses", "NotReady"),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "Prometheus text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API key."},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
            "headers": {
                "Retry-After": {
                    "description": "Seconds to wait before retrying.",
                    "schema": {"type": "string", "pattern": r"^\d+$"},
                },
                "WWW-Authenticate": {"schema": {"type": "string"}},
                "Allow": {"schema": {"type": "string"}},
                "WebHook-Allowed-Origin": {"schema": {"type": "string"}},
                "WebHook-Allowed-Rate": {
                    "description": "Requests per minute, or * for no limit.",
                    "schema": {"type": "string", "pattern": r"^(\*|[1-9]\d*)$"},
                },
            },
            "responses": _RESPONSES,
            "schemas": {
                "CloudEvent": _CLOUDEVENT,
                "Accepted": {
                    "type": "object",
                    "required": ["accepted"],
                    "properties": {"accepted": {"type": "integer", "minimum": 0}},
                },
                "Problem": {
                    "type": "object",
                    "description": "RFC 9457 problem details plus a list of problems.",
                    "required": ["type", "title", "status", "detail"],
                    "properties": {
                        "type": {"type": "string", "format": "uri"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "problems": {"type": "array", "items": _ref("schemas", "ProblemItem")},
                    },
                },
                "ProblemItem": {
                    "type": "object",
                    "required": ["code", "field", "message"],
                    "properties": {
                        "index": {
                            "type": "integer",
                            "minimum": 0,
                            "description": "The event's position in a batch (absent for one "
                            "event).",
                        },
                        "field": {"type": "string", "description": "e.g. data.input_tokens"},
                        "code": {"type": "string", "description": "Stable, machine-readable."},
                        "message": {"type": "string"},
                    },
                },
                "UsageIn": {
                    "type": "object",
                    "required": [
                        "project_id",
                        "provider",
                        "model",
                        "input_tokens",
                        "output_tokens",
                    ],
                    "properties": {
                        "project_id": {"type": "string", "minLength": 1, "maxLength": 256},
                        "provider": {"type": "string", "minLength": 1, "maxLength": 256},
                        "model": {"type": "string", "minLength": 1, "maxLength": 256},
                        "input_tokens": {"type": "integer", "minimum": 0, "maximum": MAX_TOKENS},
                        "output_tokens": {"type": "integer", "minimum": 0, "maximum": MAX_TOKENS},
                        "request_timestamp": {"type": "string", "format": "date-time"},
                    },
                },
                "UsageOut": _USAGE_OUT,
                "UsageList": {
                    "type": "object",
                    "required": ["count", "usage"],
                    "properties": {
                        "count": {"type": "integer", "minimum": 0},
                        "usage": {"type": "array", "items": _ref("schemas", "UsageOut")},
                    },
                },
            },
        },
    }
