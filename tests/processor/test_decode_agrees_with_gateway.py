"""The processor decodes a mapped event exactly as the gateway validated it.

The log may hold records no gateway checked (another producer, an older
version): given the same event mappings, decode() must accept what the gateway
accepts, with the same usage, and dead-letter what it refuses.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from core.log.base import TENANT_HEADER, Record
from core.log.embedded import EmbeddedAdmin, EmbeddedProducer
from ingest.gateway import Gateway
from ingest.problems import HTTPProblem
from processor.decode import DeadLetter, Decoded, decode
from schemas.mappings import builtin_mappings

OPENAI_DATA = {"total_tokens": 20, "prompt_tokens": 13, "completion_tokens": 7, "model": "gpt-4o"}


def _event(type_: str, data: Any, id_: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": id_,
        "source": "my-app",
        "type": type_,
        "subject": "cust-1",
        "data": data,
    }


@pytest.fixture
def producer(tmp_path: Path) -> Iterator[EmbeddedProducer]:
    path = tmp_path / "log.sqlite3"
    EmbeddedAdmin(path).ensure_topic("t", 1)
    producer = EmbeddedProducer(path, "t")
    yield producer
    producer.close()


AGREEMENT_CASES = [
    _event("openai", OPENAI_DATA, "a-1"),
    _event("openai", {**OPENAI_DATA, "prompt_tokens": "13"}, "a-2"),
    _event("openai", {"total_tokens": 20, "model": "gpt-4o"}, "a-3"),
    _event("openai", {**OPENAI_DATA, "prompt_tokens": -3}, "a-4"),
    _event("openai", [1, 2], "a-5"),
    _event("something-else", OPENAI_DATA, "a-6"),
]


@pytest.mark.parametrize("event", AGREEMENT_CASES, ids=lambda e: e["id"])
def test_a_record_that_bypassed_the_gateway_decodes_as_the_gateway_validates(
    event: dict[str, Any], producer: EmbeddedProducer
) -> None:
    mappings = builtin_mappings()
    gateway = Gateway(
        producer,
        tenant="t1",
        max_body_bytes=1 << 20,
        max_event_bytes=1 << 18,
        max_batch_events=10,
        mappings=mappings,
    )
    # Written to the log by another producer, as the gateway would have written it.
    record = Record("t", 0, 0, b"k", orjson.dumps(event), ((TENANT_HEADER, b"t1"),), 1)

    try:
        [(at_gateway, _)] = gateway.validate([event])
    except HTTPProblem as refused:
        assert isinstance(decode(record, mappings), DeadLetter)
        assert refused.status == 400
        return
    decoded = decode(record, mappings)
    assert isinstance(decoded, Decoded)
    assert decoded.usage == at_gateway.usage
