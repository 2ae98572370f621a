"""The scale-out topology: one gateway and three processors in one consumer group on
real Kafka, writing to a ClickHouse server (the HTTP front end over chDB,
tests/support/clickhouse_http.py), one processor SIGKILLed and restarted again and
again while partitions move. Totals must be exact against the ground truth computed
from the events sent, and ``meterline verify`` must find nothing to repair.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.clickhouse_http import ClickHouseHttp
from tests.support.events import make_events
from tests.support.services import Service
from tests.support.topology import PARTITIONS, Topology

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

KILLS = 4


class Client(threading.Thread):
    """A real client: each batch is retried until it gets its 202.

    It pauses at each kill's milestone until the victim is killed, so every kill
    lands mid-stream with more to come, however fast this machine sends.
    """

    def __init__(self, topology: Topology, batches: list[list[dict[str, Any]]], kills: int) -> None:
        super().__init__()
        self.topology, self.batches = topology, batches
        step = len(batches) // (kills + 1)
        self.milestones = {step * (i + 1): i for i in range(kills)}
        self.reached = [threading.Event() for _ in range(kills)]
        self.resumed = [threading.Event() for _ in range(kills)]

    def run(self) -> None:
        for index, batch in enumerate(self.batches):
            if index in self.milestones:
                kill = self.milestones[index]
                self.reached[kill].set()
                self.resumed[kill].wait(120)
            self.topology.send([batch])


def partitions_seen(processor: Service) -> set[int]:
    """Partitions this process has consumed (its per-partition lag gauge, from /metrics)."""
    text = httpx.get(f"{processor.url}/metrics", timeout=10).text
    return set(
        map(int, re.findall(r'^meterline_processor_lag_records\{partition="(\d+)"\}', text, re.M))
    )


ALL = set(range(PARTITIONS))


def seen(processors: list[Service]) -> set[int]:
    return set().union(*(partitions_seen(p) for p in processors))


def _wait_for(condition: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.5)


@pytest.fixture
def clickhouse(tmp_path: Path) -> Iterator[ClickHouseHttp]:
    with ClickHouseHttp(tmp_path / "clickhouse") as server:
        yield server


def test_three_processors_with_one_killed_repeatedly_count_each_event_once(
    kafka_bootstrap: str, unique_topic: str, clickhouse: ClickHouseHttp, tmp_path: Path
) -> None:
    # One gateway, three processors (each its own data folder: its attempts file
    # is per process), small batches: many checkpoints, so kills land between and
    # inside them (tests/support/topology.py).
    topology = Topology(tmp_path, kafka_bootstrap, unique_topic, clickhouse.url)
    try:
        topology.start()
        events = make_events(4000, seed=14)
        rng = random.Random(14)
        # Duplicate sends (same source + id, other offsets, other batches): only the
        # event-identity guard, reading ClickHouse, can keep them out.
        resent = rng.sample(events, 400)
        stream = events + resent
        rng.shuffle(stream)
        batches = [stream[i : i + 100] for i in range(0, len(stream), 100)]
        client = Client(topology, batches, KILLS)
        client.start()

        victim, survivors = topology.processors[0], topology.processors[1:]
        owned_before = set[int]()
        for kill in range(KILLS):
            assert client.reached[kill].wait(120), "the client stalled"
            if kill == 0:
                owned_before = seen(survivors)
            # Killed right after a chunk was sent (batches in flight); the client
            # keeps sending while the victim is down and rejoining, so its
            # partitions move to the others and back under load. The next
            # milestone comes a few batches after the restart: often the next
            # kill lands inside the rebalance the restart started.
            victim.kill()
            client.resumed[kill].set()
            if kill == 0:
                # The first time, stay down until the others have taken the victim's
                # partitions (its session times out after 6 s), so the move is seen
                # whatever order the group's assignments came in; a quick restart
                # can rejoin in time to keep them. The later kills restart at once.
                _wait_for(lambda b=owned_before: b == ALL or seen(survivors) > b, 60)
            else:
                time.sleep(1.0)
            victim.start()
        client.join(120)
        assert not client.is_alive(), "the client could not deliver every batch"
        # The victim's partitions moved to the others while it was down. The gauge
        # behind partitions_seen only grows: if the first joins and rebalances had
        # already shown the survivors every partition, growth cannot show, and what
        # is left to check is that they consumed every one.
        moved = seen(survivors)
        assert moved == ALL if owned_before == ALL else moved > owned_before, (owned_before, moved)
        assert all(p.alive() for p in topology.processors)

        topology.wait_caught_up(90)
        topology.assert_exact(stream)
        assert victim.starts == KILLS + 1
        topology.stop()
        topology.assert_verify_clean()
    finally:
        topology.stop()
