"""The embedded log behaves like Kafka: partitions by murmur2, dense offsets,
durable appends, committed positions per group, seek by time."""

from __future__ import annotations

import ctypes
import time
from pathlib import Path

import pytest

from core.log._murmur2 import murmur2, partition_for
from core.log.base import OutMessage
from core.log.embedded import EmbeddedAdmin, EmbeddedConsumer, EmbeddedProducer

TOPIC = "t"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    p = tmp_path / "log.sqlite3"
    EmbeddedAdmin(p).ensure_topic(TOPIC, 3)
    return p


def test_murmur2_matches_the_java_client() -> None:
    # Vectors from Kafka's UtilsTest.testMurmur2.
    cases = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"": 275646681,
    }
    for key, expected in cases.items():
        assert ctypes.c_int32(murmur2(key)).value == expected, key


def test_messages_get_dense_offsets_in_the_partition_of_their_key(path: Path) -> None:
    producer = EmbeddedProducer(path, TOPIC)
    producer.publish_sync(
        [OutMessage(f"k{i}".encode(), f"v{i}".encode(), (("h", b"1"),)) for i in range(30)]
    )
    producer.close()
    records = EmbeddedConsumer(path, TOPIC, "g").poll(100, 1.0)
    assert len(records) == 30
    for record in records:
        assert record.partition == partition_for(record.key or b"", 3)
        assert record.headers == (("h", b"1"),)
    for partition in range(3):
        offsets = [r.offset for r in records if r.partition == partition]
        assert offsets == list(range(len(offsets)))


def test_committed_positions_survive_reopening_and_are_per_group(path: Path) -> None:
    producer = EmbeddedProducer(path, TOPIC)
    producer.publish_sync([OutMessage(b"same-key", f"v{i}".encode()) for i in range(5)])
    consumer = EmbeddedConsumer(path, TOPIC, "g1")
    first = consumer.poll(2, 1.0)
    consumer.commit({first[-1].partition: first[-1].offset + 1})
    consumer.close()
    again = EmbeddedConsumer(path, TOPIC, "g1").poll(10, 1.0)
    assert [r.value for r in again] == [b"v2", b"v3", b"v4"]
    other_group = EmbeddedConsumer(path, TOPIC, "g2").poll(10, 1.0)
    assert len(other_group) == 5
    producer.close()


def test_offsets_for_time_seek_by_ingest_time(path: Path) -> None:
    producer = EmbeddedProducer(path, TOPIC)
    producer.publish_sync([OutMessage(b"k", b"old")])
    time.sleep(0.01)
    cut = int(time.time() * 1000) + 1
    time.sleep(0.01)
    producer.publish_sync([OutMessage(b"k", b"new")])
    admin = EmbeddedAdmin(path)
    partition = partition_for(b"k", 3)
    assert admin.offsets_for_time(TOPIC, cut)[partition] == 1
    assert admin.offsets_for_time(TOPIC, cut + 10_000)[partition] == 2  # past the end: end offset
    consumer = EmbeddedConsumer(path, TOPIC, "g")
    consumer.seek(admin.offsets_for_time(TOPIC, cut))
    assert [r.value for r in consumer.poll(10, 1.0)] == [b"new"]
    producer.close()


def test_ensure_topic_never_changes_the_partition_count(path: Path) -> None:
    admin = EmbeddedAdmin(path)
    admin.ensure_topic(TOPIC, 12)
    assert admin.partitions(TOPIC) == 3
