"""The async Kafka producer: delivery reports served on the event loop, every message durable."""

from __future__ import annotations

import asyncio
import threading

from core.log.base import OutMessage
from core.log.kafka import KafkaAdmin, KafkaProducer
from tests.ingest.conftest import LogTap


def test_concurrent_publishes_each_return_once_their_own_messages_are_acknowledged(
    kafka_bootstrap: str, unique_topic: str
) -> None:
    admin = KafkaAdmin(kafka_bootstrap)
    admin.ensure_topic(unique_topic, 3)
    tap = LogTap(admin, unique_topic)
    producer = KafkaProducer(kafka_bootstrap, unique_topic)
    callback_threads: set[int] = set()
    real_poll = producer._producer.poll

    def poll(timeout: float = -1) -> int:
        callback_threads.add(threading.get_ident())
        return int(real_poll(timeout))

    async def main() -> int:
        producer._producer = _PollSpy(producer._producer, poll)  # type: ignore[assignment]
        batches = [[OutMessage(f"r{r}-e{e}".encode(), b"{}") for e in range(500)] for r in range(8)]
        await asyncio.gather(*(producer.publish(batch) for batch in batches))
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    # A second event loop (a test, a restarted server) gets its own report task.
    asyncio.run(producer.publish([OutMessage(b"second-loop", b"{}")]))
    producer.close()

    assert callback_threads == {loop_thread}
    keys = [record.key for record in tap.records()]  # publish returned: all are in the log
    assert sorted(keys) == sorted(
        [f"r{r}-e{e}".encode() for r in range(8) for e in range(500)] + [b"second-loop"]
    )


class _PollSpy:
    """Records which thread serves delivery reports; everything else goes to the producer."""

    def __init__(self, inner: object, poll: object) -> None:
        self._inner = inner
        self.poll = poll

    def __len__(self) -> int:  # dunders skip __getattr__; the report task asks for it
        return len(self._inner)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)
