"""The embedded log behaves like Kafka: partitions by murmur2, dense offsets,
durable appends, committed positions per group, seek by time."""

from __future__ import annotations

import asyncio
import ctypes
import sqlite3
import time
from pathlib import Path

import pytest

from core.errors import LogUnavailable
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


def test_a_request_that_timed_out_on_a_locked_log_never_harms_the_next_one(path: Path) -> None:
    # Issue 11: another connection holds the log file locked longer than the
    # produce timeout; the request in hand gets LogUnavailable (503). Once the
    # lock is gone, the writer used to die setting a result on the abandoned
    # request's future, and every later request timed out until restart.
    producer = EmbeddedProducer(path, TOPIC, timeout_s=1.0)
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    with pytest.raises(LogUnavailable, match="did not commit in time"):
        asyncio.run(producer.publish([OutMessage(b"k", b"taken-then-abandoned")]))
    # Queued behind the one the writer is trying to write, and given up too.
    with pytest.raises(LogUnavailable, match="did not commit in time"):
        asyncio.run(producer.publish([OutMessage(b"k", b"queued-then-abandoned")]))
    locker.execute("ROLLBACK")
    locker.close()

    asyncio.run(producer.publish([OutMessage(b"k", b"after")]))  # raises on the old code
    producer.close()

    values = [r.value for r in EmbeddedConsumer(path, TOPIC, "g").poll(10, 1.0)]
    # The batch the writer had taken is written whole (its client's retry is a
    # duplicate the processor drops); the one it had not taken is not written.
    assert values == [b"taken-then-abandoned", b"after"]
    assert producer.problem(stuck_after_s=60.0) is None


def test_a_dead_writer_is_reported_and_refuses_requests_at_once(path: Path) -> None:
    class DyingWriter(EmbeddedProducer):
        def _write_until_closed(self) -> None:
            raise RuntimeError("bug in the writer")

    producer = DyingWriter(path, TOPIC, timeout_s=30.0)
    producer._writer.join(10)
    problem = producer.problem(stuck_after_s=60.0)
    assert problem is not None
    assert (problem.part, problem.kind) == (f"embedded-log-writer[{TOPIC}]", "dead")
    assert problem.reason == "RuntimeError: bug in the writer"
    with pytest.raises(LogUnavailable, match="writer stopped: RuntimeError: bug in the writer"):
        producer.publish_sync([OutMessage(b"k", b"v")])
    assert not producer.ready()
