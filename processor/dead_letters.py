"""Reading the dead-letter topic back, and re-driving letters after a fix.

The processor writes a dead letter as the original record (same key, value and
headers) plus headers saying why and where it was read (``runner.dead_letter_message``).
This module is the other half, used by ``meterline dlq``: list and count letters,
and publish chosen ones back to the events topic once the cause is fixed (a price
book, a tenant's key, a newer meterline).

Re-driving is safe to repeat: a re-driven event that was stored meanwhile is
dropped by the processor's dedupe on (tenant, source, id), and one that is still
invalid is dead-lettered again with its reason (a new letter; the old one stays:
the DLQ is a log, nothing in it is deleted).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from core.log.base import (
    DLQ_DETAIL_HEADER,
    DLQ_ORIGINAL_OFFSET_HEADER,
    DLQ_ORIGINAL_PARTITION_HEADER,
    DLQ_ORIGINAL_TOPIC_HEADER,
    DLQ_REASON_HEADER,
    REDRIVEN_FROM_HEADER,
    TENANT_HEADER,
    LogAdmin,
    OutMessage,
    Record,
)

# Headers that describe the dead letter itself: dropped when the record goes back.
_LETTER_HEADERS = frozenset(
    {
        DLQ_REASON_HEADER,
        DLQ_DETAIL_HEADER,
        DLQ_ORIGINAL_TOPIC_HEADER,
        DLQ_ORIGINAL_PARTITION_HEADER,
        DLQ_ORIGINAL_OFFSET_HEADER,
        REDRIVEN_FROM_HEADER,
    }
)


@dataclass(frozen=True)
class Letter:
    """One dead letter: where it sits in the DLQ, why it is there, where it came from."""

    record: Record
    reason: str
    detail: str
    original_topic: str
    original_partition: int | None
    original_offset: int | None
    tenant: str

    @property
    def position(self) -> str:
        """``partition:offset`` in the DLQ topic: how ``dlq show`` and ``--at`` name a letter."""
        return f"{self.record.partition}:{self.record.offset}"

    @classmethod
    def of(cls, record: Record) -> Letter:
        def text(name: str) -> str:
            value = record.header(name)
            return "" if value is None else value.decode("utf-8", "replace")

        def number(name: str) -> int | None:
            value = text(name)
            return int(value) if value.isdigit() else None

        return cls(
            record=record,
            reason=text(DLQ_REASON_HEADER) or "unknown",
            detail=text(DLQ_DETAIL_HEADER),
            original_topic=text(DLQ_ORIGINAL_TOPIC_HEADER),
            original_partition=number(DLQ_ORIGINAL_PARTITION_HEADER),
            original_offset=number(DLQ_ORIGINAL_OFFSET_HEADER),
            tenant=text(TENANT_HEADER),
        )


def read_letters(
    admin: LogAdmin, dlq_topic: str, keep: Callable[[Letter], bool] = lambda _: True
) -> Iterator[Letter]:
    """Every letter still retained in the DLQ, partition by partition, oldest first."""
    starts = admin.offsets_for_time(dlq_topic, 0)
    for partition, end in sorted(admin.end_offsets(dlq_topic).items()):
        start = starts.get(partition, end)
        if end <= start:
            continue
        for chunk in admin.read_range(dlq_topic, partition, start, end):
            for record in chunk:
                letter = Letter.of(record)
                if keep(letter):
                    yield letter


def redrive_message(letter: Letter) -> OutMessage:
    """The original record again (key, value, its own headers), marked with where it was."""
    record = letter.record
    headers = tuple((k, v) for k, v in record.headers if k not in _LETTER_HEADERS)
    mark = f"{record.topic}:{letter.position}".encode()
    return OutMessage(record.key or b"", record.value, (*headers, (REDRIVEN_FROM_HEADER, mark)))
