"""Realistic test events and an independent ground truth for their totals."""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from bench.data import expected_token_cost

TOKEN_TYPE = "io.meterline.usage.tokens"
TOKEN_COLUMNS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)
MODELS = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("anthropic", "claude-3-5-haiku"),
    ("google", "gemini-2.5-flash"),
    ("mistral", "mistral-large-latest"),
    ("selfhosted", "llama-own-70b"),  # not in any catalog: stored unpriced
]


def token_event(rng: random.Random, when: datetime, **overrides: Any) -> dict[str, Any]:
    provider, model = rng.choice(MODELS)
    prompt = rng.randint(1, 5000)
    output = rng.randint(0, 2000)
    data = {
        "provider": provider,
        "model": model,
        "feature": rng.choice(["chat", "search", "agent"]),
        "input_tokens": prompt,
        "output_tokens": output,
        "cache_read_tokens": rng.choice([0, prompt // 3]),
        "cache_write_tokens": 0,
        "reasoning_tokens": rng.choice([0, output // 4]),
    }
    event = {
        "specversion": "1.0",
        "id": f"resp-{uuid.UUID(int=rng.getrandbits(128)).hex}",
        "source": "/tests/app",
        "type": TOKEN_TYPE,
        "subject": rng.choice(["acme", "globex", "initech"]),
        "time": (when + timedelta(milliseconds=rng.randint(0, 180_000)))
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "data": data,
    }
    event.update(overrides)
    return event


def make_events(n: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    # Recent, inside the dedupe horizon; whole minutes so windows are predictable.
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    return [token_event(rng, start) for _ in range(n)]


def ground_truth(events: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Totals per (subject, model, feature) of the UNIQUE events (by source + id)."""
    unique = {(e["source"], e["id"]): e for e in events}
    totals: dict[tuple[str, str, str], dict[str, Any]] = defaultdict(
        lambda: {"events": 0, **{c: 0 for c in TOKEN_COLUMNS}, "cost_usd": Decimal(0)}
    )
    for event in unique.values():
        data = event["data"]
        row = totals[(event["subject"], data["model"], data["feature"])]
        row["events"] += 1
        for column in TOKEN_COLUMNS:
            row[column] += data[column]
        row["cost_usd"] += expected_token_cost(data, event["time"])
    return dict(totals)


TOTALS_SQL = """
SELECT subject, model, feature, sum(events) AS events,
       {columns}, toString(sum(cost_usd)) AS cost_usd
FROM {table} GROUP BY subject, model, feature
"""


def stored_totals(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    out = {}
    for row in rows:
        key = (row["subject"], row["model"], row["feature"])
        out[key] = {
            "events": int(row["events"]),
            **{c: int(row[c]) for c in TOKEN_COLUMNS},
            "cost_usd": Decimal(row["cost_usd"]),
        }
    return out


def totals_query(table: str) -> str:
    columns = ", ".join(f"sum({c}) AS {c}" for c in TOKEN_COLUMNS)
    if table == "usage_events":
        return TOTALS_SQL.format(columns=columns, table=table).replace(
            "sum(events) AS events", "count() AS events"
        )
    return TOTALS_SQL.format(columns=columns, table=table)
