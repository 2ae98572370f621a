"""The async Kafka producer: delivery reports served on the event loop, every message durable."""

from __future__ import annotations

import asyncio
import threading

from confluent_kafka import Consumer

from meterline.log.base import OutMessage
from meterline.log.kafka import KafkaAdmin, KafkaProducer


def _read_keys(bootstrap: str, topic: str, want: int) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{topic}-check",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    keys: list[bytes] = []
    try:
        for _ in range(300):
            for msg in consumer.consume(1000, 0.1):
                if msg.error() is None:
                    keys.append(msg.key() or b"")
            if len(keys) >= want:
                break
    finally:
        consumer.close()
    return keys


def test_concurrent_publishes_each_return_once_their_own_messages_are_acknowledged(
    kafka_bootstrap: str, unique_topic: str
) -> None:
    KafkaAdmin(kafka_bootstrap).ensure_topic(unique_topic, 3)
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
    keys = _read_keys(kafka_bootstrap, unique_topic, 4001)
    assert sorted(keys) == sorted(
        [f"r{r}-e{e}".encode() for r in range(8) for e in range(500)] + [b"second-loop"]
    )


class _PollSpy:
    """Records which thread serves delivery reports; everything else goes to the producer."""

    def __init__(self, inner: object, poll: object) -> None:
        self._inner = inner
        self.poll = poll

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)
