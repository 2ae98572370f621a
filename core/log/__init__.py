"""The event log between the gateway and the processor.

Two implementations behind one small interface (``base.py``):

- ``embedded.EmbeddedLog``: a durable local log in SQLite (WAL), for one machine
  with no servers. Same model as Kafka: partitions, offsets, committed positions
  per group, seek by timestamp.
- ``kafka.KafkaLog``: Apache Kafka through confluent-kafka.
"""

from core.log.base import (
    DLQ_REASON_HEADER,
    INGESTED_AT_HEADER,
    TENANT_HEADER,
    LogConsumer,
    LogProducer,
    OutMessage,
    Record,
)

__all__ = [
    "DLQ_REASON_HEADER",
    "INGESTED_AT_HEADER",
    "TENANT_HEADER",
    "LogConsumer",
    "LogProducer",
    "OutMessage",
    "Record",
]
