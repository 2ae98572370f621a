"""The log interface: what the gateway publishes to and the processor reads from.

Messages follow the CloudEvents Kafka protocol binding in structured mode: the
value is the event as JSON (``content-type: application/cloudevents+json``), the
key is the event id. meterline adds two headers: the tenant (taken from the API
key, never the body) and the ingest time.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from core.health import PartProblem
from core.types import Headers

TENANT_HEADER = "meterline-tenant"
INGESTED_AT_HEADER = "meterline-ingested-at"  # epoch milliseconds, ASCII
DLQ_REASON_HEADER = "meterline-dlq-reason"
# The rest of a dead letter's headers: why in words, and where the record was read.
DLQ_DETAIL_HEADER = "meterline-dlq-detail"
DLQ_ORIGINAL_TOPIC_HEADER = "meterline-original-topic"
DLQ_ORIGINAL_PARTITION_HEADER = "meterline-original-partition"
DLQ_ORIGINAL_OFFSET_HEADER = "meterline-original-offset"
# On a record put back by `meterline dlq redrive`: the DLQ coordinates it came from.
REDRIVEN_FROM_HEADER = "meterline-redriven-from"
CONTENT_TYPE_HEADER = "content-type"
STRUCTURED_CONTENT_TYPE = b"application/cloudevents+json; charset=utf-8"


@dataclass(frozen=True, slots=True)
class OutMessage:
    """A message to publish. ``key`` decides the partition (murmur2, as Kafka's Java client)."""

    key: bytes
    value: bytes
    headers: Headers = ()


class Record(NamedTuple):
    """A message read back from the log, with its coordinates.

    A NamedTuple, not a frozen dataclass: one is built per message read, and a
    frozen dataclass's ``__init__`` (one ``object.__setattr__`` per field) cost
    ~0.95 µs a record against ~0.3 here, at ~45k records/s on the processor's
    only thread (issue 17). Immutable all the same; ``==`` compares as a tuple.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Headers
    timestamp_ms: int  # ingest time (log append time), never the event's own time

    def header(self, name: str) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class LogProducer(abc.ABC):
    """Publishes messages; ``publish`` returns only once every message is durable."""

    topic: str

    @abc.abstractmethod
    async def publish(self, messages: Sequence[OutMessage]) -> None:
        """Append all messages; return when the log has durably acknowledged each one.

        Raises ``LogUnavailable`` when that cannot be confirmed within the
        configured timeout. Some messages may then be in the log anyway: the
        client retries with the same ids and the processor's dedupe absorbs the
        copies, which is why the gateway must never answer 2xx in that case.
        """

    @abc.abstractmethod
    def publish_sync(self, messages: Sequence[OutMessage]) -> None:
        """Blocking ``publish`` for threads without an event loop (processor, tools)."""

    @abc.abstractmethod
    def ready(self) -> bool:
        """True when the log is reachable now (for /readyz)."""

    def problem(self, stuck_after_s: float) -> PartProblem | None:
        """A background part of this producer (thread, task) that died or is stuck.

        Unlike ``ready`` (the log may come back by itself), a problem here does
        not heal: the process must restart (``core.health``).
        """
        return None

    @abc.abstractmethod
    def close(self) -> None:
        """Flush what is in flight and release resources."""


class LogConsumer(abc.ABC):
    """Reads records of one topic as a member of a consumer group."""

    @abc.abstractmethod
    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        """Return up to ``max_records`` records (possibly none) within ``timeout_s``."""

    @abc.abstractmethod
    def commit(self, next_offsets: Mapping[int, int]) -> None:
        """Durably record, per partition, the offset of the next record to read."""

    @abc.abstractmethod
    def seek(self, next_offsets: Mapping[int, int]) -> None:
        """Restart reading at these offsets (used after a failed batch)."""

    def keepalive(self) -> None:
        """Stay a group member while the batch in hand cannot be written yet.

        Kafka evicts a member that does not poll within ``max.poll.interval.ms``;
        while the store is down the processor calls this between retries. It
        must not return records (Kafka: all partitions are paused meanwhile).
        Logs without group membership just wait a moment.
        """
        time.sleep(0.1)

    def resume(self) -> None:  # noqa: B027 - optional hook, nothing to undo by default
        """Undo ``keepalive``'s pause once the batch was written."""

    def lag(self) -> dict[int, int]:
        """Per assigned partition, records between the read position and the log end."""
        return {}

    def take_revoked(self) -> set[int]:
        """Partitions revoked or lost since the last call (their pending records must go)."""
        return set()

    def before_revoke(self, barrier: Callable[[], None]) -> None:  # noqa: B027 - optional
        """Call ``barrier`` before partitions leave this member, and return only after it.

        The processor passes a function that waits for the INSERT of the batch in
        flight on its writer thread: were a partition handed over before that INSERT
        landed, the new owner's dedupe lookup would run before our rows exist and it
        would store them a second time. Logs whose partitions never move ignore it.
        """

    def take_assigned(self) -> set[int]:
        """Partitions newly assigned since the last call (a group coordinator moved them here).

        Logs whose partitions never move between members return nothing.
        """
        return set()

    @abc.abstractmethod
    def assignment(self) -> list[int]:
        """Partitions currently assigned to this member."""

    @abc.abstractmethod
    def close(self) -> None:
        """Leave the group and release resources (does not commit)."""


class LogAdmin(abc.ABC):
    """Topic-level operations: creating the topic, offsets for times, end offsets."""

    @abc.abstractmethod
    def ensure_topic(self, topic: str, partitions: int, replication: int = 1) -> None:
        """Create the topic if missing; never change the partition count of an existing one.

        Returns only once the topic serves reads and writes (Kafka: every partition
        has a leader), so callers never race its creation.
        """

    @abc.abstractmethod
    def partitions(self, topic: str) -> int:
        """How many partitions the topic has."""

    @abc.abstractmethod
    def offsets_for_time(self, topic: str, timestamp_ms: int) -> dict[int, int]:
        """Per partition, the first offset whose timestamp is >= ``timestamp_ms`` (or the end)."""

    @abc.abstractmethod
    def end_offsets(self, topic: str) -> dict[int, int]:
        """Per partition, the offset the next appended record will get."""

    @abc.abstractmethod
    def read_range(
        self, topic: str, partition: int, start: int, end: int, batch: int = 10_000
    ) -> Iterator[list[Record]]:
        """Records with start <= offset < end of one partition, in batches (no group, no commit)."""

    @abc.abstractmethod
    def committed(self, topic: str, group: str) -> dict[int, int]:
        """Per partition, the group's committed next offset (missing = none yet)."""

    def close(self) -> None:  # noqa: B027 - optional hook; Kafka's admin holds nothing to close
        """Release what the admin holds (the embedded log's connection)."""
