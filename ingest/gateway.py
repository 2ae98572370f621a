"""``Gateway``: the parts the handlers share, built once and passed in.

It also holds the steps every write path takes, in this order (each one can
only refuse; nothing is published until the last):

1. authenticate (401/403) and rate-limit (429) the key, before reading the body;
2. read the body within its size limit (413);
3. validate every event (400 / 413), the whole request or nothing;
4. publish and wait for the log's acknowledgement (503 + Retry-After when it
   does not come in time: some events may be in the log, so a 2xx would be a
   lie, and the client's retry is deduplicated downstream).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from starlette.requests import Request

from core.errors import LogUnavailable
from core.health import Health
from core.log.base import (
    CONTENT_TYPE_HEADER,
    INGESTED_AT_HEADER,
    STRUCTURED_CONTENT_TYPE,
    TENANT_HEADER,
    LogProducer,
    OutMessage,
)
from ingest import metrics
from ingest.auth import ApiKey, Authenticator, KeyStore
from ingest.guard import Guard, read_body
from ingest.problems import HTTPProblem
from ingest.ratelimit import RateLimiter
from pricing.base import PriceBook
from schemas.envelope import ValidEvent, parse_event
from schemas.mappings import EventMappings, builtin_mappings
from schemas.problems import Problem

PriceBookSource = PriceBook | Callable[[], PriceBook]


class Gateway:
    """State shared by the write path's handlers. ``keys=None`` is open mode (every request
    is ``tenant``). The read side (``query/``) has its own ``Reader``."""

    def __init__(
        self,
        producer: LogProducer,
        *,
        tenant: str,
        max_body_bytes: int,
        max_event_bytes: int,
        max_batch_events: int,
        health: Health | None = None,
        keys: KeyStore | None = None,
        limiter: RateLimiter | None = None,
        price_book: PriceBookSource | None = None,
        webhook_origins: Sequence[str] = ("*",),
        stored_usage: Any = None,
        usage_wait_s: float = 10.0,
        mappings: EventMappings | None = None,
    ) -> None:
        self.producer = producer
        self.tenant = tenant
        self.max_body_bytes = max_body_bytes
        self.max_event_bytes = max_event_bytes
        self.max_batch_events = max_batch_events
        self.guard = Guard(Authenticator(keys, tenant), limiter or RateLimiter())
        # The background parts of this process (core/health.py); None: only the log is checked.
        self.health = health
        self._price_book = price_book
        self.webhook_origins = frozenset(webhook_origins)
        # POST /api/usage with an Idempotency-Key: how to find the stored row
        # (a ``UsageLookup``, ingest/usage_api.py; None without a store) and how
        # long to wait for the processor to store it.
        self.stored_usage = stored_usage
        self.usage_wait_s = usage_wait_s
        # Event mappings (schemas/mappings.py): the processor's own object, so
        # what is accepted here as usage is metered there as usage. Built-ins by default.
        self.mappings = mappings if mappings is not None else builtin_mappings()

    @property
    def price_book(self) -> PriceBook | None:
        """Built on first use: loading the catalog costs start-up time most gateways never use."""
        if self._price_book is not None and not isinstance(self._price_book, PriceBook):
            self._price_book = self._price_book()
        return self._price_book

    # Step 1.
    def authorize(self, request: Request, scope: str) -> ApiKey:
        return self.guard.authorize(request, scope)

    # Step 2.
    async def read_body(self, request: Request) -> bytes:
        return await read_body(request, self.max_body_bytes)

    # Step 3.
    def validate(
        self, items: Sequence[Any], batch: bool | None = None
    ) -> list[tuple[ValidEvent, bytes]]:
        """Every event valid and within its size, or HTTPProblem listing every problem.

        ``batch``: problems carry the event's index (default: when there are several).
        """
        if len(items) > self.max_batch_events:
            metrics.EVENTS_REJECTED.labels("too_large").inc(len(items))
            raise HTTPProblem(
                413,
                "batch-too-large",
                f"{len(items)} events in one request; the limit is {self.max_batch_events}",
            )
        indexed = len(items) != 1 if batch is None else batch
        accepted: list[tuple[ValidEvent, bytes]] = []
        problems: list[Problem] = []
        too_big: list[Problem] = []
        limit = self.max_event_bytes
        dumps = orjson.dumps
        mappings = self.mappings
        for index, item in enumerate(items):
            parsed = parse_event(item, mappings)
            if isinstance(parsed, list):
                at = index if indexed else None
                problems.extend(p.at(at) for p in parsed)
                continue
            # Null attributes mean "unset": log the event without them, so every
            # consumer of the topic reads the same attributes we validated.
            value = dumps(_without_nulls(item) if None in item.values() else item)
            if len(value) > limit:
                too_big.append(
                    Problem(
                        "event_too_large",
                        "event",
                        f"{len(value)} bytes; the limit is {limit}",
                        index if indexed else None,
                    )
                )
                continue
            accepted.append((parsed, value))
        if too_big and not problems:
            metrics.EVENTS_REJECTED.labels("too_large").inc(len(items))
            raise HTTPProblem(413, "event-too-large", "an event exceeds the size limit", too_big)
        if problems or too_big:
            metrics.EVENTS_REJECTED.labels("invalid").inc(len(items))
            bad = len({p.index for p in problems + too_big}) if indexed else 1
            raise HTTPProblem(
                400,
                "invalid-events",
                f"{bad} of {len(items)} events are invalid; nothing was accepted",
                sorted(problems + too_big, key=_by_index),
            )
        return accepted

    def messages(
        self, accepted: Sequence[tuple[ValidEvent, bytes]], tenant: str
    ) -> list[OutMessage]:
        headers = (
            (CONTENT_TYPE_HEADER, STRUCTURED_CONTENT_TYPE),
            (TENANT_HEADER, tenant.encode()),
            (INGESTED_AT_HEADER, str(int(time.time() * 1000)).encode()),
        )
        return [
            OutMessage(event.envelope.id.encode("utf-8"), value, headers)
            for event, value in accepted
        ]

    # Step 4.
    async def publish(self, messages: Sequence[OutMessage]) -> None:
        began = time.perf_counter()
        try:
            await self.producer.publish(messages)
        except LogUnavailable as exc:
            metrics.EVENTS_REJECTED.labels("log_unavailable").inc(len(messages))
            raise HTTPProblem(
                503,
                "log-unavailable",
                f"{exc}; nothing is acknowledged, retry the same request",
                retry_after=exc.retry_after,
            ) from exc
        metrics.PRODUCE_SECONDS.observe(time.perf_counter() - began)
        metrics.EVENTS_ACCEPTED.inc(len(messages))


def _without_nulls(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if v is not None}


def _by_index(problem: Problem) -> int:
    return -1 if problem.index is None else problem.index
