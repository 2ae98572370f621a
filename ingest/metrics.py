"""Prometheus metrics of the gateway."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "meterline_gateway_requests_total", "HTTP requests answered", ["route", "status"]
)
EVENTS_ACCEPTED = Counter("meterline_gateway_events_accepted_total", "Events durably logged")
# reason: invalid, too_large, log_unavailable (events refused after they were read).
EVENTS_REJECTED = Counter("meterline_gateway_events_rejected_total", "Events refused", ["reason"])
# Requests refused before their events were read: unauthorized, forbidden,
# rate_limited, unsupported_media_type, body_too_large, malformed.
REQUESTS_REJECTED = Counter(
    "meterline_gateway_requests_rejected_total", "Requests refused before validation", ["reason"]
)
PRODUCE_SECONDS = Histogram(
    "meterline_gateway_produce_seconds",
    "Time until the log acknowledged a request's events",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
IN_FLIGHT = Gauge("meterline_gateway_requests_in_flight", "Requests being handled")
