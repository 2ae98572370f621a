"""A commit the log refuses is retried: the group catches up even when nothing more arrives.

Seen in the three-processor e2e run (1 run in 6 stalled): in a rebalance the
broker refused a member's commit (ILLEGAL_GENERATION) for partitions the member
KEPT. Its position was past those records, so it never read them again, and with
the stream over no later batch committed past them: the group showed lag forever
although every event was stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from core.errors import LogUnavailable
from core.log.embedded import EmbeddedAdmin, EmbeddedConsumer, EmbeddedProducer
from meterline.runtime import LogDeadLetters
from pricing import CatalogPriceBook
from processor.runner import Processor
from sinks.chdb_sink import ChdbEngine
from tests.processor.test_processor_faults import Worker, message, wait
from tests.support.events import ground_truth, make_events, stored_totals, totals_query


class RefusingConsumer(EmbeddedConsumer):
    """The real embedded consumer; its first ``refusals`` commits are refused as in a rebalance."""

    refusals = 2
    attempts = 0

    def commit(self, next_offsets: Mapping[int, int]) -> None:
        self.attempts += 1
        if self.attempts <= self.refusals:
            raise LogUnavailable(
                "Commit failed: Broker: Specified group generation id is not valid"
            )
        super().commit(next_offsets)


def test_a_refused_commit_is_retried_until_the_group_has_committed_every_stored_record(
    log_path: Path, sink: ChdbEngine
) -> None:
    events = make_events(40, seed=31)
    # Published once, before the processor starts: no later batch would carry the commit.
    EmbeddedProducer(log_path, "events").publish_sync([message(e) for e in events])
    consumer = RefusingConsumer(log_path, "events", "g")
    processor = Processor(
        consumer,
        sink,
        CatalogPriceBook(),
        LogDeadLetters(EmbeddedProducer(log_path, "events.dlq")),
        batch_max_wait_s=0.05,
    )
    worker = Worker(processor)
    admin = EmbeddedAdmin(log_path)
    try:
        wait(lambda: admin.committed("events", "g") == admin.end_offsets("events"))
    finally:
        worker.stop()
    assert consumer.attempts > consumer.refusals
    assert processor.totals.stored == len(events)
    assert stored_totals(sink.sql.query_rows(totals_query("usage_events"))) == ground_truth(events)
