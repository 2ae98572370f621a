"""Apache Kafka through confluent-kafka (librdkafka).

Producer settings are the contract of docs/design.md#kafka: idempotent, ``acks=all``,
``murmur2_random`` (the Java client's partitioner, so every client puts a key in
the same partition), compression on. The consumer commits only explicitly,
after the sink has written a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from confluent_kafka import (
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    NewTopic,
    OffsetSpec,
)

from core.errors import LogUnavailable
from core.health import PartProblem
from core.log.base import LogAdmin, LogConsumer, LogProducer, OutMessage, Record
from core.types import Headers

log = logging.getLogger(__name__)

# How long ensure_topic waits for a new topic's leaders. Seconds on a warm broker;
# a bound, so a broker that cannot elect them fails start-up with a reason.
TOPIC_READY_TIMEOUT_S = 60.0


def _headers(raw: Any) -> Headers:
    """confluent-kafka gives a list of (name: str, value: bytes | None) pairs, or None."""
    if not raw:
        return ()
    if raw.__class__ is list:
        # The common case, read once per record: its pairs kept as they are when every
        # value is bytes (0.2 µs a record against 0.75 for rebuilding each pair).
        pairs = tuple(raw)
        for pair in pairs:
            if pair[1].__class__ is not bytes or pair[0].__class__ is not str:
                break
        else:
            return pairs
    items = raw.items() if isinstance(raw, dict) else raw
    return tuple((str(k), v if isinstance(v, bytes) else str(v or "").encode()) for k, v in items)


_new_record = tuple.__new__


def _record(msg: Message, topic: str) -> Record:
    return Record(
        msg.topic() or topic,
        msg.partition() or 0,
        msg.offset() or 0,
        msg.key(),
        msg.value() or b"",
        _headers(msg.headers()),
        msg.timestamp()[1],
    )


def producer_config(bootstrap: str, timeout_s: float, extra: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": "murmur2_random",
        "compression.type": "lz4",
        "linger.ms": 5,
        "batch.num.messages": 10_000,
        # librdkafka gives up (and reports the failure) after this; the gateway
        # has already answered 503 by then and the client retries with the same
        # id, so a late success only makes a copy that the dedupe drops.
        "message.timeout.ms": int(timeout_s * 1000),
        **extra,
    }


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class KafkaProducer(LogProducer):
    def __init__(
        self, bootstrap: str, topic: str, timeout_s: float = 10.0, extra: Mapping[str, Any] = {}
    ) -> None:
        self.topic = topic
        self._timeout_s = timeout_s
        self._producer = Producer(producer_config(bootstrap, timeout_s, extra))
        self._in_flight = 0  # publish() calls waiting for their delivery reports
        self._reporter: asyncio.Task[None] | None = None

    async def _serve_delivery_reports(self) -> None:
        """Run librdkafka's delivery callbacks on the event loop's own thread.

        Not in a poll thread: there each of a request's per-message callbacks
        had to win the GIL back from the loop thread while it validated other
        requests (a convoy: 66 ms of waiting per 1000-event request instead of
        ~11, and the gateway idle half the time at full load). One task for all
        requests, polling every millisecond while any of them waits or any
        message is still undelivered: a request that gave up (timeout, cancel)
        leaves reports behind, and librdkafka holds each message's place in its
        local queue until its report is served. Left unserved they would fill
        the queue and refuse every later request after Kafka came back.
        """
        while self._in_flight or len(self._producer):
            try:
                served = self._producer.poll(0)
            except Exception:  # never let the reporter die: every waiter would time out
                log.exception("serving Kafka delivery reports failed")
                served = 0
            # Reports come in bursts (one per message of a broker batch): look
            # again at once after a burst, else wait a tick of the loop's clock.
            await asyncio.sleep(0 if served else 0.001)

    def _ensure_reporter(self, loop: asyncio.AbstractEventLoop) -> None:
        reporter = self._reporter
        if reporter is None or reporter.done() or reporter.get_loop() is not loop:
            self._reporter = loop.create_task(self._serve_delivery_reports())

    def problem(self, stuck_after_s: float) -> PartProblem | None:
        """The delivery-report task ended on an error, or while a request waits on it.

        Read from the watchdog's thread: only the task's state, never the loop.
        Its loop catches every Exception, so this is a bug or a cancellation
        (the event loop going away under a request), and without the task
        every waiting request times out.
        """
        reporter = self._reporter
        if reporter is None or not reporter.done():
            return None
        if reporter.cancelled():
            reason = "cancelled"
        elif (exc := reporter.exception()) is not None:
            reason = f"{type(exc).__name__}: {exc}"
        else:
            reason = "ended"
        if reason == "ended" and not self._in_flight:
            return None  # nothing to serve: the next publish starts it again
        return PartProblem("kafka-delivery-reports", "dead", reason)

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        if not messages:
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        remaining = [len(messages)]
        errors: list[KafkaError] = []

        def finish() -> None:
            if done.done():
                return
            if errors:
                done.set_exception(LogUnavailable(f"Kafka refused an event: {errors[0]}"))
            else:
                done.set_result(None)

        def on_delivery(err: KafkaError | None, _msg: object) -> None:
            # Normally runs inside _serve_delivery_reports, on the loop's thread;
            # close() may flush from another thread: then hand back to the loop.
            if err is not None:
                errors.append(err)
            remaining[0] -= 1
            if remaining[0] == 0 or err is not None:
                if _running_loop() is loop:
                    finish()
                else:
                    with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                        loop.call_soon_threadsafe(finish)

        deadline = time.monotonic() + self._timeout_s
        self._in_flight += 1
        self._ensure_reporter(loop)
        try:
            for message in messages:
                while not self._try_produce(message, on_delivery):
                    # Local queue full: Kafka is slow or away. Serve reports (they
                    # free places) and wait, bounded by the deadline.
                    self._producer.poll(0)
                    if time.monotonic() > deadline:
                        raise LogUnavailable("Kafka producer queue is full", retry_after=2.0)
                    await asyncio.sleep(0.01)
            await asyncio.wait_for(done, max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            raise LogUnavailable("Kafka did not acknowledge in time", retry_after=2.0) from None
        finally:
            self._in_flight -= 1
            if not loop.is_closed():
                self._ensure_reporter(loop)  # keeps serving what this request left behind

    def _try_produce(
        self, message: OutMessage, on_delivery: Callable[[KafkaError | None, object], None]
    ) -> bool:
        """Queue one message; False when librdkafka's local queue is full."""
        try:
            self._producer.produce(
                self.topic,
                value=message.value,
                key=message.key,
                headers=list(message.headers),
                on_delivery=on_delivery,
            )
        except BufferError:
            return False
        except KafkaException as exc:
            raise LogUnavailable(f"Kafka produce failed: {exc}") from exc
        return True

    def publish_sync(self, messages: Sequence[OutMessage]) -> None:
        errors: list[KafkaError] = []

        def on_delivery(err: KafkaError | None, _msg: object) -> None:
            if err is not None:
                errors.append(err)

        deadline = time.monotonic() + self._timeout_s
        for message in messages:
            while not self._try_produce(message, on_delivery):
                if time.monotonic() > deadline:
                    raise LogUnavailable("Kafka producer queue is full", retry_after=2.0)
                self._producer.flush(0.1)
        if self._producer.flush(max(0.1, deadline - time.monotonic())) > 0:
            raise LogUnavailable("Kafka did not acknowledge in time")
        if errors:
            raise LogUnavailable(f"Kafka refused a message: {errors[0]}")

    def ready(self) -> bool:
        try:
            self._producer.list_topics(self.topic, timeout=2.0)
        except KafkaException:
            return False
        return True

    def close(self) -> None:
        remaining = self._producer.flush(self._timeout_s)
        if remaining:
            log.error("closing Kafka producer with %d undelivered messages", remaining)


class KafkaConsumer(LogConsumer):
    """A consumer-group member (cooperative-sticky) that never auto-commits."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        group: str,
        extra: Mapping[str, Any] = {},
    ) -> None:
        self.topic = topic
        self._revoked: set[int] = set()
        self._assigned: set[int] = set()
        self._revocations = 0
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "cooperative-sticky",
                "max.poll.interval.ms": 300_000,
                "session.timeout.ms": 30_000,
                "fetch.min.bytes": 1,
                # Pre-fetch bounded to about two batches (20k records of ~0.4 KB),
                # not librdkafka's defaults (64 MB, and 100k records per partition):
                # those held ~100 MB more at peak (issue 17's < 500 MB). Half of this
                # (16 MB, 10k) was too little: the processor's polls then waited for
                # fetches, 12.8 µs per event against 5.8-6.3 here, with the same peak
                # RSS (docs/benchmarks.md, round 5). METERLINE_KAFKA_EXTRA overrides.
                "queued.max.messages.kbytes": 32_768,
                "queued.min.messages": 50_000,
                **extra,
            }
        )
        self._owned: frozenset[int] = frozenset()
        self._barrier: Callable[[], None] | None = None
        self._consumer.subscribe(
            [topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
        )

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # cooperative-sticky: `partitions` is the increment, not the whole assignment.
        self._owned = self._owned | {tp.partition for tp in partitions}
        self._assigned.update(tp.partition for tp in partitions)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Called inside poll(). Records of these partitions still waiting in the
        # processor must be dropped uncommitted: the new owner re-reads them.
        # cooperative-sticky hands them over only once this returns, so the batch
        # in flight is waited for first (before_revoke).
        if self._barrier is not None and partitions:
            self._barrier()
        gone = {tp.partition for tp in partitions}
        self._revoked.update(gone)
        self._revocations += 1
        self._assigned.difference_update(gone)
        self._owned = self._owned - gone

    def keepalive(self) -> None:
        assigned = self._consumer.assignment()
        if assigned:
            self._consumer.pause(assigned)
        # Paused partitions return nothing; poll() serves rebalance callbacks
        # and resets the max.poll.interval.ms clock (consume() with nothing to
        # return was seen NOT to reset it: the member was evicted).
        msg = self._consumer.poll(0.1)
        if msg is not None and msg.error() is None:
            # Cannot happen while paused; never drop data silently.
            raise RuntimeError("record returned from a paused partition")

    def resume(self) -> None:
        assigned = self._consumer.assignment()
        if assigned:
            self._consumer.resume(assigned)

    def lag(self) -> dict[int, int]:
        out = {}
        for tp in self._consumer.position(self._consumer.assignment()):
            _, high = self._consumer.get_watermark_offsets(tp, cached=True) or (0, 0)
            if tp.offset >= 0 and high >= 0:
                out[tp.partition] = max(0, high - tp.offset)
        return out

    def before_revoke(self, barrier: Callable[[], None]) -> None:
        self._barrier = barrier

    def take_revoked(self) -> set[int]:
        revoked, self._revoked = self._revoked, set()
        return revoked

    def take_assigned(self) -> set[int]:
        assigned, self._assigned = self._assigned, set()
        return assigned

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        revocations = self._revocations
        messages = self._consumer.consume(max_records, timeout_s)
        if self._revocations != revocations:
            # The revocation was served inside this consume(): messages it
            # returned from a partition we no longer own must go too, like the
            # pending ones the processor drops. Kept, they would be stored by
            # us while the new owner reads them from the committed offset and
            # (its lookup running before our insert) stores them again.
            owned = self._owned
            messages = [m for m in messages if m.error() or m.partition() in owned]
        # Once per record on the processor's only Python thread, so written out here
        # rather than through _record: one call per record (_headers), the Record made
        # with tuple.__new__ (a NamedTuple's own __new__ is a Python function). 1.1-1.6
        # µs a record against 1.9-2.3 through _record, measured with the header check
        # written out too (issue 17, round 10); the same
        # Records, which tests/core/log/test_kafka_records.py holds equal to _record's.
        out: list[Record] = []
        append = out.append
        topic = self.topic  # the one topic this consumer subscribes to
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.code() == KafkaError._MAX_POLL_EXCEEDED:
                    # We were evicted (e.g. stuck past max.poll.interval.ms) and
                    # librdkafka rejoins by itself; lost partitions were reported
                    # through on_lost, so their pending records are dropped.
                    log.warning("consumer left the group: %s; rejoining", err)
                    continue
                raise KafkaException(err)
            append(
                _new_record(
                    Record,
                    (
                        topic,
                        msg.partition() or 0,
                        msg.offset() or 0,
                        msg.key(),
                        msg.value() or b"",
                        _headers(msg.headers()),
                        msg.timestamp()[1],
                    ),
                )
            )
        return out

    def commit(self, next_offsets: Mapping[int, int]) -> None:
        self._consumer.commit(
            offsets=[TopicPartition(self.topic, p, o) for p, o in next_offsets.items()],
            asynchronous=False,
        )

    def seek(self, next_offsets: Mapping[int, int]) -> None:
        for partition, offset in next_offsets.items():
            self._consumer.seek(TopicPartition(self.topic, partition, offset))

    def assignment(self) -> list[int]:
        # From the rebalance callbacks, not librdkafka: safe to read from any
        # thread (metrics, tests) while the owning thread sits in consume().
        return sorted(self._owned)

    def close(self) -> None:
        self._consumer.close()


class KafkaAdmin(LogAdmin):
    def __init__(self, bootstrap: str, extra: Mapping[str, Any] = {}) -> None:
        self._bootstrap = bootstrap
        self._extra = dict(extra)
        self._admin = AdminClient({"bootstrap.servers": bootstrap, **self._extra})

    def ensure_topic(
        self,
        topic: str,
        partitions: int,
        replication: int = 1,
        ready_timeout_s: float = TOPIC_READY_TIMEOUT_S,
    ) -> None:
        """Create the topic if missing; return only once every partition has a leader.

        A topic Kafka has just created has no leaders for a moment: a producer,
        a consumer or ``end_offsets`` in that moment fails with
        NOT_LEADER_OR_FOLLOWER (seen on a broker's first start, where electing
        them takes longest). Callers rely on a topic that serves once this returns.
        """
        metadata = self._admin.list_topics(timeout=10)
        if topic not in metadata.topics or metadata.topics[topic].error:
            futures = self._admin.create_topics(
                [NewTopic(topic, num_partitions=partitions, replication_factor=replication)]
            )
            for future in futures.values():
                try:
                    future.result(timeout=30)
                except KafkaException as exc:
                    if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise
        self.wait_for_leaders(topic, ready_timeout_s)

    def wait_for_leaders(self, topic: str, timeout_s: float = TOPIC_READY_TIMEOUT_S) -> None:
        """Until every partition of ``topic`` has a leader that answers (new topic, restart).

        Raises LogUnavailable naming the topic and what is still missing after
        ``timeout_s``: start-up then fails with a reason instead of the first
        request failing with a broker error code.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            missing = self._not_serving(topic)
            if missing is None:
                return
            if time.monotonic() >= deadline:
                raise LogUnavailable(
                    f"Kafka topic {topic!r} is not ready after {timeout_s:g} s: {missing}",
                    retry_after=5.0,
                )
            time.sleep(0.1)

    def _not_serving(self, topic: str) -> str | None:
        """What keeps ``topic`` from serving reads and writes now; None when nothing does."""
        try:
            metadata = self._admin.list_topics(topic, timeout=5)
        except KafkaException as exc:
            return f"no metadata ({exc})"
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            return f"not in the metadata yet ({found.error if found else 'absent'})"
        if not found.partitions:
            return "no partitions in the metadata yet"
        leaderless = sorted(
            p for p, meta in found.partitions.items() if meta.leader < 0 or meta.error is not None
        )
        if leaderless:
            return f"partitions without a leader: {leaderless}"
        # A broker publishes a new leader in its metadata a moment before its
        # replica manager serves the partition: ask the leaders themselves too.
        futures = self._admin.list_offsets(
            {TopicPartition(topic, p): OffsetSpec.latest() for p in found.partitions},  # type: ignore[no-untyped-call]
            request_timeout=5,
        )
        for tp, future in futures.items():
            try:
                future.result()
            except KafkaException as exc:
                return f"partition {tp.partition} does not answer yet ({exc})"
        return None

    def _probe(self) -> Consumer:
        return Consumer(
            {"bootstrap.servers": self._bootstrap, "group.id": "meterline-admin", **self._extra}
        )

    def partitions(self, topic: str) -> int:
        return len(self._partitions(topic))

    def _partitions(self, topic: str) -> list[int]:
        metadata = self._admin.list_topics(topic, timeout=10)
        return sorted(metadata.topics[topic].partitions)

    def offsets_for_time(self, topic: str, timestamp_ms: int) -> dict[int, int]:
        probe = self._probe()
        try:
            parts = [TopicPartition(topic, p, timestamp_ms) for p in self._partitions(topic)]
            found = probe.offsets_for_times(parts, timeout=10)
            ends = self.end_offsets(topic)
            return {
                tp.partition: ends[tp.partition] if tp.offset in (OFFSET_END, -1) else tp.offset
                for tp in found
            }
        finally:
            probe.close()

    def read_range(
        self, topic: str, partition: int, start: int, end: int, batch: int = 10_000
    ) -> Iterator[list[Record]]:
        if start >= end:
            return
        reader = Consumer(
            {
                "bootstrap.servers": self._bootstrap,
                "group.id": "meterline-replay",  # never commits: assign(), not subscribe()
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                **self._extra,
            }
        )
        try:
            reader.assign([TopicPartition(topic, partition, start)])
            position = start
            idle = 0
            while position < end:
                out: list[Record] = []
                for msg in reader.consume(min(batch, end - position), 1.0):
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            return  # the range was past the end (retention or truncation)
                        raise KafkaException(err)
                    offset = msg.offset() or 0
                    if offset >= end:
                        break
                    out.append(_record(msg, topic))
                if out:
                    idle = 0
                    position = out[-1].offset + 1
                    yield out
                else:
                    idle += 1
                    if idle > 30:
                        raise LogUnavailable(f"no records from {topic}/{partition} for 30 s")
        finally:
            reader.close()

    def end_offsets(self, topic: str) -> dict[int, int]:
        probe = self._probe()
        try:
            return {
                p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in self._partitions(topic)
            }
        finally:
            probe.close()

    def committed(self, topic: str, group: str) -> dict[int, int]:
        probe = Consumer({"bootstrap.servers": self._bootstrap, "group.id": group, **self._extra})
        try:
            parts = [TopicPartition(topic, p) for p in self._partitions(topic)]
            return {
                tp.partition: tp.offset
                for tp in probe.committed(parts, timeout=10)
                if tp.offset >= 0
            }
        finally:
            probe.close()
