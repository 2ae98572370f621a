"""Generated, realistic benchmark traffic and its independent ground truth.

Mixed providers, models, customers and features (94% token usage, then images,
pages and instant charges), ~2% exact re-sends of an earlier event (a retrying
client: same ``source`` + ``id``, same body, a later offset) and ~1% late events
(hours to days old, still inside the 35-day dedupe horizon). Event times are
recent: the processor dead-letters anything older than its horizon.

The ground truth is computed here from the generated dicts, never from what
meterline stored: unique events by (source, id), summed per (subject, model,
feature, type); token cost by genai-prices' own ``calc_price`` (not meterline's
cached pricing path).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

TOKENS = "io.meterline.usage.tokens"
IMAGE = "io.meterline.usage.image"
UNITS = "io.meterline.usage.units"
CHARGE = "io.meterline.usage.charge"
TENANT = "bench"
SOURCES = ("/bench/chat-app", "/bench/batch-worker")
# (provider, model, id prefix, weight). The self-hosted model has no price: stored unpriced.
MODELS = (
    ("openai", "gpt-4o", "chatcmpl-", 20),
    ("openai", "gpt-4o-mini", "chatcmpl-", 30),
    ("anthropic", "claude-sonnet-4-5", "msg_", 15),
    ("anthropic", "claude-3-5-haiku", "msg_", 8),
    ("google", "gemini-2.5-flash", "resp-", 12),
    ("mistral", "mistral-large-latest", "cmpl-", 5),
    ("selfhosted", "acme-finetune-7b", "gen-", 4),
)
FEATURES = ("chat", "search", "summarize", "agent")
CUSTOMERS = tuple(f"cust-{i:03d}" for i in range(200))
# Summed columns the check compares (usage_meters has each of them).
SUMS = ("input_tokens", "output_tokens", "cache_read_tokens", "reasoning_tokens", "images")
GroupKey = tuple[str, str, str, str]  # (subject, model, feature, type)


def _iso(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


class EventStream:
    """Deterministic event dicts (``seed``), ~2% re-sends, ~1% late."""

    def __init__(self, seed: int = 7, now_ms: int | None = None, dup_rate: float = 0.02) -> None:
        self._rng = random.Random(seed)
        self._now_ms = now_ms or int(datetime.now(UTC).timestamp() * 1000)
        self._dup_rate = dup_rate
        self._recent: list[dict[str, Any]] = []
        self._weights = [m[3] for m in MODELS]
        self._n = 0

    def _time(self) -> str:
        rng = self._rng
        if rng.random() < 0.01:  # late: 1 hour to 7 days ago
            return _iso(self._now_ms - rng.randint(3_600_000, 7 * 86_400_000))
        return _iso(self._now_ms - rng.randint(0, 120_000))

    def _fresh(self) -> dict[str, Any]:
        rng = self._rng
        self._n += 1
        roll = rng.random()
        subject = CUSTOMERS[int(rng.paretovariate(1.2)) % len(CUSTOMERS)]
        base: dict[str, Any] = {
            "specversion": "1.0",
            "source": SOURCES[self._n % 2],
            "subject": subject,
            "time": self._time(),
            "datacontenttype": "application/json",
        }
        feature = FEATURES[rng.randrange(len(FEATURES))]
        if roll < 0.94:
            provider, model, prefix, _ = rng.choices(MODELS, self._weights)[0]
            prompt = rng.randint(20, 6000)
            output = rng.randint(1, 1500)
            return {
                **base,
                "id": f"{prefix}{rng.getrandbits(96):024x}",
                "type": TOKENS,
                "data": {
                    "provider": provider,
                    "model": model,
                    "feature": feature,
                    "input_tokens": prompt,
                    "output_tokens": output,
                    "cache_read_tokens": prompt // 2 if rng.random() < 0.3 else 0,
                    "reasoning_tokens": output // 3 if rng.random() < 0.2 else 0,
                },
            }
        event_id = f"evt-{rng.getrandbits(96):024x}"
        if roll < 0.96:
            data: dict[str, Any] = {
                "provider": "openai",
                "model": "gpt-image-1",
                "feature": "images",
                "images": rng.randint(1, 4),
                "size": "1024x1024",
                "quality": ("low", "medium", "high")[rng.randrange(3)],
            }
            return {**base, "id": event_id, "type": IMAGE, "data": data}
        if roll < 0.99:
            data = {"unit": "page", "quantity": rng.randint(1, 40), "feature": "ocr"}
            return {**base, "id": event_id, "type": UNITS, "data": data}
        data = {"amount": "0.50", "currency": "USD", "description": "premium export"}
        return {**base, "id": event_id, "type": CHARGE, "data": data}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        rng = self._rng
        if self._recent and rng.random() < self._dup_rate:
            return self._recent[rng.randrange(len(self._recent))]
        event = self._fresh()
        if len(self._recent) < 5000:
            self._recent.append(event)
        else:
            self._recent[rng.randrange(5000)] = event
        return event

    def take(self, n: int) -> list[dict[str, Any]]:
        return [next(self) for _ in range(n)]


def encode(events: list[dict[str, Any]]) -> list[tuple[bytes, bytes]]:
    """(key, value) as the gateway publishes them: key = event id, value = the JSON."""
    dumps = orjson.dumps
    return [(e["id"].encode(), dumps(e)) for e in events]


def group_of(event: dict[str, Any]) -> GroupKey:
    data = event["data"]
    return (event["subject"], data.get("model", ""), data.get("feature", ""), event["type"])


@dataclass
class Truth:
    """What must be stored: unique events and their sums per group."""

    unique: int = 0
    duplicates: int = 0
    groups: dict[GroupKey, dict[str, int]] = field(default_factory=dict)
    token_cost: dict[GroupKey, Decimal] = field(default_factory=dict)


def ground_truth(events: list[dict[str, Any]], with_cost: bool = False) -> Truth:
    """Independent totals of ``events``; ``with_cost`` prices tokens with genai-prices'
    ``calc_price`` (~85 µs an event, so only for small runs)."""
    seen: set[tuple[str, str]] = set()
    groups: dict[GroupKey, dict[str, int]] = defaultdict(
        lambda: dict.fromkeys(("events", *SUMS), 0)
    )
    cost: dict[GroupKey, Decimal] = defaultdict(Decimal)
    truth = Truth()
    for event in events:
        key = (event["source"], event["id"])
        if key in seen:
            truth.duplicates += 1
            continue
        seen.add(key)
        row = groups[group_of(event)]
        row["events"] += 1
        data = event["data"]
        for column in SUMS:
            row[column] += data.get(column, 0)
        if with_cost and event["type"] == TOKENS:
            cost[group_of(event)] += expected_token_cost(data, event["time"])
    truth.unique = len(seen)
    truth.groups = dict(groups)
    truth.token_cost = {k: v for k, v in cost.items()}
    return truth


def expected_token_cost(data: dict[str, Any], time: str) -> Decimal:
    """genai-prices' own full calculation (not meterline's cached path): the ground truth
    for token cost in the benchmark's checks and the end-to-end tests."""
    from genai_prices import Usage, calc_price

    try:
        result = calc_price(
            Usage(
                input_tokens=data["input_tokens"],
                output_tokens=data["output_tokens"],
                cache_read_tokens=data["cache_read_tokens"] or None,
            ),
            data["model"],
            provider_id=data["provider"],
            genai_request_timestamp=datetime.fromisoformat(time.replace("Z", "+00:00")),
        )
    except LookupError:
        return Decimal(0)
    return Decimal(result.total_price)
