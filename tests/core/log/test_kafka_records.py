"""KafkaConsumer.poll builds each Record as ``_record`` does, inline (issue 17, round 10).

``poll`` writes the per-record conversion out in its loop (no call per record, the
Record made with ``tuple.__new__``) because it runs once per event on the
processor's only Python thread. This holds it to ``_record``, the plain form, on
real messages from a real broker: headers absent, all bytes, one null value, keys
absent and present.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from confluent_kafka import Producer

from core.log.base import Record
from core.log.kafka import KafkaAdmin, KafkaConsumer, _record

pytestmark = pytest.mark.kafka


class _Capturing:
    """The real Consumer; every message its consume() returned kept for the test."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.messages: list[Any] = []

    def consume(self, *args: Any, **kwargs: Any) -> Any:
        messages = self._inner.consume(*args, **kwargs)
        self.messages.extend(messages)
        return messages

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


HEADERS: list[Any] = [
    None,
    [("content-type", b"application/json"), ("meterline-tenant", b"acme")],
    [("meterline-tenant", b"acme"), ("trace", None)],
    [("x", b"")],
]


def test_polled_records_equal_the_plain_conversion_of_the_same_messages(
    kafka_bootstrap: str, unique_topic: str
) -> None:
    KafkaAdmin(kafka_bootstrap).ensure_topic(unique_topic, 3)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    sent = 0
    for i in range(40):
        headers = HEADERS[i % len(HEADERS)]
        key = None if i % 5 == 0 else f"k{i}".encode()
        value = b"" if i % 7 == 0 else f'{{"n":{i}}}'.encode()
        if headers is None:
            producer.produce(unique_topic, value, key, partition=i % 3)
        else:
            producer.produce(unique_topic, value, key, partition=i % 3, headers=headers)
        sent += 1
    assert producer.flush(10) == 0

    consumer = KafkaConsumer(kafka_bootstrap, unique_topic, f"records-{unique_topic}")
    capture = _Capturing(consumer._consumer)
    consumer._consumer = capture
    records: list[Record] = []
    deadline = time.monotonic() + 30
    while len(records) < sent and time.monotonic() < deadline:
        records.extend(consumer.poll(100, 0.5))
    consumer.close()

    expected = [_record(m, unique_topic) for m in capture.messages if m.error() is None]
    assert len(records) == sent
    assert records == expected
    assert all(type(r) is Record for r in records)
    # What each form of the headers became: bytes values kept, a null one as b"".
    assert {r.headers for r in records} == {
        (),
        (("content-type", b"application/json"), ("meterline-tenant", b"acme")),
        (("meterline-tenant", b"acme"), ("trace", b"")),
        (("x", b""),),
    }
    assert {r.value for r in records} >= {b"", b'{"n":1}'}
    assert None in {r.key for r in records}
