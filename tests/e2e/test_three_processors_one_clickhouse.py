"""The scale-out topology: one gateway and three processors in one consumer group on
real Kafka, writing to a ClickHouse server (the HTTP front end over chDB,
tests/support/clickhouse_http.py), one processor SIGKILLed and restarted again and
again while partitions move. Totals must be exact against the ground truth computed
from the events sent, and ``meterline verify`` must find nothing to repair.
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from core.settings import load_settings
from meterline import runtime
from sinks.clickhouse_sink import ClickHouseEngine
from tests.support.clickhouse_http import ClickHouseHttp
from tests.support.events import ground_truth, make_events, stored_totals, totals_query
from tests.support.services import Service

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PARTITIONS = 6
KILLS = 4


class Client(threading.Thread):
    """A real client: each batch is retried until it gets its 202.

    It pauses at each kill's milestone until the victim is killed, so every kill
    lands mid-stream with more to come, however fast this machine sends.
    """

    def __init__(self, gateway: Service, batches: list[list[dict[str, Any]]], kills: int) -> None:
        super().__init__()
        self.gateway, self.batches = gateway, batches
        step = len(batches) // (kills + 1)
        self.milestones = {step * (i + 1): i for i in range(kills)}
        self.reached = [threading.Event() for _ in range(kills)]
        self.resumed = [threading.Event() for _ in range(kills)]
        self.refused: list[int] = []

    def run(self) -> None:
        for index, batch in enumerate(self.batches):
            if index in self.milestones:
                kill = self.milestones[index]
                self.reached[kill].set()
                self.resumed[kill].wait(120)
            while (status := self._post(batch)) != 202:
                self.refused.append(status)
                time.sleep(0.5)
            time.sleep(0.1)  # a steady stream

    def _post(self, batch: list[dict[str, Any]]) -> int:
        try:
            return httpx.post(
                f"{self.gateway.url}/v1/events",
                content=orjson.dumps(batch),
                headers={"content-type": "application/cloudevents-batch+json"},
                timeout=30,
            ).status_code
        except httpx.HTTPError:
            return 0


def partitions_seen(processor: Service) -> set[int]:
    """Partitions this process has consumed (its per-partition lag gauge, from /metrics)."""
    text = httpx.get(f"{processor.url}/metrics", timeout=10).text
    return set(
        map(int, re.findall(r'^meterline_processor_lag_records\{partition="(\d+)"\}', text, re.M))
    )


@pytest.fixture
def clickhouse(tmp_path: Path) -> Iterator[ClickHouseHttp]:
    with ClickHouseHttp(tmp_path / "clickhouse") as server:
        yield server


def test_three_processors_with_one_killed_repeatedly_count_each_event_once(
    kafka_bootstrap: str, unique_topic: str, clickhouse: ClickHouseHttp, tmp_path: Path
) -> None:
    env = {
        "METERLINE_LOG": "kafka",
        "METERLINE_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "METERLINE_TOPIC": unique_topic,
        "METERLINE_CONSUMER_GROUP": f"g-{unique_topic}",
        "METERLINE_PARTITIONS": str(PARTITIONS),
        "METERLINE_STORE": "clickhouse",
        "METERLINE_CLICKHOUSE_URL": clickhouse.url,
        "METERLINE_OPEN_MODE": "true",
        # A killed member's partitions move to the others after the session
        # timeout: short, so they move several times within the test.
        "METERLINE_KAFKA_EXTRA": '{"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}',
        # Small batches: many checkpoints, so kills land between and inside them.
        "METERLINE_BATCH_MAX_EVENTS": "150",
        "METERLINE_BATCH_MAX_WAIT_S": "0.05",
    }
    gateway = Service("gateway", tmp_path / "gateway", env)
    # Each processor its own data folder: its attempts file is per process.
    processors = [Service("processor", tmp_path / f"processor-{i}", env) for i in range(3)]
    services = [gateway, *processors]
    try:
        gateway.start()
        for processor in processors:
            processor.start()

        events = make_events(4000, seed=14)
        rng = random.Random(14)
        # Duplicate sends (same source + id, other offsets, other batches): only the
        # event-identity guard, reading ClickHouse, can keep them out.
        resent = rng.sample(events, 400)
        stream = events + resent
        rng.shuffle(stream)
        batches = [stream[i : i + 100] for i in range(0, len(stream), 100)]
        client = Client(gateway, batches, KILLS)
        client.start()

        victim, survivors = processors[0], processors[1:]
        owned_before = set[int]()
        for kill in range(KILLS):
            assert client.reached[kill].wait(120), "the client stalled"
            if kill == 0:
                owned_before = set().union(*(partitions_seen(p) for p in survivors))
            # Killed right after a chunk was sent (batches in flight); the client
            # keeps sending while the victim is down and rejoining, so its
            # partitions move to the others and back under load. The next
            # milestone comes a few batches after the restart: often the next
            # kill lands inside the rebalance the restart started.
            victim.kill()
            client.resumed[kill].set()
            time.sleep(1.0)
            victim.start()
        client.join(120)
        assert not client.is_alive(), "the client could not deliver every batch"
        # The victim's partitions moved to the others while it was down.
        assert set().union(*(partitions_seen(p) for p in survivors)) > owned_before
        assert all(p.alive() for p in processors)

        settings = load_settings(
            log="kafka",
            kafka_bootstrap_servers=kafka_bootstrap,
            topic=unique_topic,
            consumer_group=f"g-{unique_topic}",
        )
        admin = runtime.build_admin(settings)

        def lag() -> int:
            ends = admin.end_offsets(unique_topic)
            committed = admin.committed(unique_topic, settings.consumer_group)
            return sum(end - committed.get(p, 0) for p, end in ends.items())

        deadline = time.monotonic() + 90
        while lag() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert lag() == 0, (
            f"the group did not commit everything: log ends {admin.end_offsets(unique_topic)}, "
            f"committed {admin.committed(unique_topic, settings.consumer_group)}; "
            f"processes alive {[p.alive() for p in processors]}, logs in {tmp_path}"
        )

        truth = ground_truth(stream)
        store = ClickHouseEngine(clickhouse.url, "meterline")
        try:
            counts = store.sql.query_rows(
                "SELECT count() AS stored, uniqExact(tenant, source, id) AS unique_ids, "
                "(SELECT count() FROM usage_event_ids FINAL) AS indexed FROM usage_events"
            )[0]
            assert {k: int(v) for k, v in counts.items()} == {
                "stored": len(events),
                "unique_ids": len(events),
                "indexed": len(events),
            }
            assert stored_totals(store.sql.query_rows(totals_query("usage_events"))) == truth
            assert stored_totals(store.sql.query_rows(totals_query("usage_meters"))) == truth
        finally:
            store.close()
        assert victim.starts == KILLS + 1

        for service in services:
            service.stop()
        verified = subprocess.run(
            [
                sys.executable,
                "-m",
                "meterline.cli",
                "verify",
                "--from",
                "2000-01-01",
                "--to",
                "2100-01-01",
            ],
            env={**processors[1].env, "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert verified.returncode == 0, verified.stdout + verified.stderr
    finally:
        for service in services:
            service.stop()
