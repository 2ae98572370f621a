"""Never 2xx for events that are not durably in Kafka: stop the broker mid-traffic.

Runs its OWN broker (a free port, its own data folder) so stopping it cannot
disturb the session's broker that other tests use. Requests keep flowing
while the broker shuts down; afterwards the broker is started again on the same
data and every event the gateway answered 202 for must be in the topic. While
it is down, requests get 503 + Retry-After.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import orjson
import pytest

from core.errors import LogUnavailable
from core.log.base import OutMessage
from core.log.kafka import KafkaAdmin, KafkaProducer
from tests.ingest.conftest import BATCH, LogTap, gateway_client
from tests.support.kafka import PrivateBroker

pytestmark = [pytest.mark.anyio, pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateBroker]:
    broker = PrivateBroker(tmp_path_factory.mktemp("kafka"))
    broker.up()
    try:
        yield broker
    finally:
        broker.down()


def fresh_topic(broker: PrivateBroker, name: str) -> tuple[str, KafkaAdmin, LogTap]:
    """A new 3-partition topic on the private broker, its leaders elected, tapped."""
    topic = f"meterline.test.{name}.{uuid.uuid4().hex[:8]}"
    admin = KafkaAdmin(broker.bootstrap)
    admin.ensure_topic(topic, 3)
    return topic, admin, LogTap(admin, topic)


async def test_broker_stopped_during_requests_never_gets_a_2xx_for_lost_events(
    own_broker: PrivateBroker,
) -> None:
    topic, admin, tap = fresh_topic(own_broker, "down")
    producer = KafkaProducer(own_broker.bootstrap, topic, timeout_s=4.0)
    acknowledged: list[str] = []
    answers: list[int] = []
    try:
        async with gateway_client(producer, max_batch_events=100) as client:

            async def send(n: int) -> None:
                batch = [
                    {"specversion": "1.0", "id": f"e{n}-{i}", "source": "/app", "type": "c.x"}
                    for i in range(20)
                ]
                response = await client.post(
                    "/v1/events", content=orjson.dumps(batch), headers={"content-type": BATCH}
                )
                answers.append(response.status_code)
                if response.status_code == 202:
                    acknowledged.extend(e["id"] for e in batch)
                else:
                    assert response.status_code == 503
                    assert response.headers["retry-after"].isdigit()
                    assert response.json()["type"].endswith("/log-unavailable")

            await send(0)
            assert answers == [202]
            stopping = asyncio.create_task(asyncio.to_thread(own_broker.down))
            n = 1
            while not stopping.done():  # traffic during the whole shutdown
                await asyncio.gather(*(send(n + k) for k in range(4)))
                n += 4
            await stopping
            await send(n)  # the broker is gone now
            assert answers[-1] == 503
    finally:
        producer.close()
    own_broker.up()
    admin.wait_for_leaders(topic)
    logged = {orjson.loads(r.value)["id"] for r in tap.records()}
    assert set(acknowledged) <= logged  # every 202 is durable; 503s may or may not be there
    assert 503 in answers


async def test_requests_abandoned_during_an_outage_do_not_block_requests_after_it(
    own_broker: PrivateBroker,
) -> None:
    topic, admin, tap = fresh_topic(own_broker, "abandoned")
    # A small local queue, so 40 messages of a request that gave up would leave
    # too little room for the next 40 if their delivery reports stayed unserved;
    # librdkafka keeps them longer than the request waits (as with its default).
    producer = KafkaProducer(
        own_broker.bootstrap,
        topic,
        timeout_s=2.0,
        extra={"queue.buffering.max.messages": 50, "message.timeout.ms": 5000},
    )

    def messages(tag: str, n: int) -> list[OutMessage]:
        return [OutMessage(f"{tag}-{i}".encode(), b"{}") for i in range(n)]

    try:
        await producer.publish(messages("before", 10))
        own_broker.down()
        with pytest.raises(LogUnavailable):
            await producer.publish(messages("during", 40))  # the client would get 503
        own_broker.up()
        admin.wait_for_leaders(topic)
        await producer.publish(messages("after", 40))
    finally:
        producer.close()
    logged = {r.key for r in tap.records()}
    assert {f"after-{i}".encode() for i in range(40)} <= logged
    assert {f"before-{i}".encode() for i in range(10)} <= logged
