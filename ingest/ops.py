"""The OpenAPI operations of the operational routes: health, readiness, metrics, the document.

Their handlers are the small closures over the gateway in ``create_app``
(ingest/app.py), which lists each with its operation here.
"""

from __future__ import annotations

from typing import Any

from ingest.openapi import Operation, Reply
from ingest.replies import NOT_READY, TEXT

HEALTHZ = Operation(
    "GET",
    "The process is up (503 once a part failed: it is exiting)",
    responses={200: Reply("ok", TEXT), 503: NOT_READY},
)
READYZ = Operation(
    "GET",
    "The log is reachable and no background part is dead or stuck",
    responses={200: Reply("ready", TEXT), 503: NOT_READY},
)
METRICS = Operation(
    "GET",
    "Prometheus metrics",
    responses={200: Reply("Prometheus text format", TEXT)},
)
OPENAPI = Operation(
    "GET",
    "This document",
    responses={200: Reply("OpenAPI 3.1", {"application/json": dict[str, Any]})},
)
