"""Realistic demo traffic for ``meterline dev --demo``, sent through the real gateway.

Several customers, providers, models and features; images, pages and instant
charges; a self-hosted model with no price (shows up as unpriced); and ~3% of
events sent twice, in a later request, as a retrying client would.
"""

from __future__ import annotations

import random
import threading
import uuid
from typing import Any

import httpx

from schemas.times import now_rfc3339
from schemas.usage import EventType

CUSTOMERS = ["acme", "globex", "initech", "umbrella", "hooli"]
FEATURES = ["chat", "search", "summarize", "agent"]
MODELS = [
    ("openai", "gpt-4o", "chatcmpl-"),
    ("openai", "gpt-4o-mini", "chatcmpl-"),
    ("anthropic", "claude-sonnet-4-5", "msg_"),
    ("anthropic", "claude-3-5-haiku", "msg_"),
    ("google", "gemini-2.5-flash", "resp-"),
    ("mistral", "mistral-large-latest", "cmpl-"),
    ("selfhosted", "acme-finetune-7b", "gen-"),
]


def make_event(rng: random.Random) -> dict[str, Any]:
    subject = rng.choice(CUSTOMERS)
    feature = rng.choice(FEATURES)
    roll = rng.random()
    base: dict[str, Any] = {
        "specversion": "1.0",
        "source": "/demo/app",
        "subject": subject,
        "time": now_rfc3339(),
        "datacontenttype": "application/json",
    }
    if roll < 0.85:
        provider, model, prefix = rng.choice(MODELS)
        prompt = rng.randint(50, 4000)
        cached = rng.choice([0, 0, prompt // 2])
        output = rng.randint(10, 1200)
        reasoning = rng.choice([0, 0, output // 3])
        return {
            **base,
            "id": f"{prefix}{uuid.uuid4().hex[:24]}",
            "type": EventType.TOKENS.value,
            "data": {
                "provider": provider,
                "model": model,
                "feature": feature,
                "input_tokens": prompt,
                "output_tokens": output,
                "cache_read_tokens": cached,
                "reasoning_tokens": reasoning,
            },
        }
    if roll < 0.92:
        return {
            **base,
            "id": str(uuid.uuid4()),
            "type": EventType.IMAGE.value,
            "data": {
                "provider": "openai",
                "model": "gpt-image-1",
                "feature": "images",
                "images": rng.randint(1, 4),
                "size": "1024x1024",
                "quality": rng.choice(["low", "medium", "high"]),
            },
        }
    if roll < 0.98:
        return {
            **base,
            "id": str(uuid.uuid4()),
            "type": EventType.UNITS.value,
            "data": {"unit": "page", "quantity": rng.randint(1, 40), "feature": "ocr"},
        }
    return {
        **base,
        "id": str(uuid.uuid4()),
        "type": EventType.CHARGE.value,
        "data": {"amount": "0.50", "currency": "USD", "description": "premium export"},
    }


class DemoTraffic:
    """Posts a batch every ``interval_s`` until stopped."""

    def __init__(
        self, url: str, interval_s: float = 0.5, per_batch: int = 40, seed: int = 7
    ) -> None:
        self._url = url.rstrip("/") + "/v1/events"
        self._interval_s = interval_s
        self._per_batch = per_batch
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self.sent = 0
        self.duplicates = 0

    def run(self) -> None:
        retry: list[dict[str, Any]] = []
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                batch = [make_event(self._rng) for _ in range(self._per_batch)]
                batch.extend(retry)
                self.duplicates += len(retry)
                retry = [e for e in batch if self._rng.random() < 0.03]
                try:
                    client.post(
                        self._url,
                        json=batch,
                        headers={"content-type": "application/cloudevents-batch+json"},
                    ).raise_for_status()
                    self.sent += len(batch)
                except httpx.HTTPError:
                    retry = batch  # send it all again: the processor drops the copies
                self._stop.wait(self._interval_s)

    def start(self) -> None:
        threading.Thread(target=self.run, name="demo-traffic", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
