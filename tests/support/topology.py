"""The scale-out topology for e2e tests: one ``meterline gateway`` and three
``meterline processor`` processes in one consumer group on real Kafka, writing to a
ClickHouse server (the HTTP front end over chDB, tests/support/clickhouse_http.py),
and the checks every scenario ends with: each event stored and indexed once, totals
exact against the ground truth of the events sent, ``meterline verify`` clean.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import orjson

from core.settings import load_settings
from meterline import runtime
from sinks.clickhouse_sink import ClickHouseEngine
from tests.support.events import ground_truth, stored_totals, totals_query
from tests.support.services import Service

PARTITIONS = 6


class Topology:
    def __init__(
        self,
        home: Path,
        bootstrap: str,
        topic: str,
        clickhouse_url: str,
        env: Mapping[str, str] | None = None,
        victim_env: Mapping[str, str] | None = None,
    ) -> None:
        self.home, self.bootstrap, self.topic = home, bootstrap, topic
        self.clickhouse_url = clickhouse_url
        self.env = {
            "METERLINE_LOG": "kafka",
            "METERLINE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "METERLINE_TOPIC": topic,
            "METERLINE_CONSUMER_GROUP": f"g-{topic}",
            "METERLINE_PARTITIONS": str(PARTITIONS),
            "METERLINE_STORE": "clickhouse",
            "METERLINE_CLICKHOUSE_URL": clickhouse_url,
            "METERLINE_OPEN_MODE": "true",
            # A dead member's partitions move after the session timeout: short.
            "METERLINE_KAFKA_EXTRA": '{"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}',
            # Small batches: many checkpoints, so faults land between and inside them.
            "METERLINE_BATCH_MAX_EVENTS": "150",
            "METERLINE_BATCH_MAX_WAIT_S": "0.05",
            **(env or {}),
        }
        self.gateway = Service("gateway", home / "gateway", self.env)
        # processors[0] is the victim when a test arms a fault on one (victim_env).
        self.processors = [
            Service("processor", home / f"processor-{i}", {**self.env, **(victim_env or {})})
            if i == 0
            else Service("processor", home / f"processor-{i}", self.env)
            for i in range(3)
        ]

    @property
    def services(self) -> list[Service]:
        return [self.gateway, *self.processors]

    def start(self) -> Topology:
        for service in self.services:
            service.start()
        return self

    def stop(self) -> None:
        for service in self.services:
            service.stop()

    def post(self, batch: list[dict[str, Any]]) -> int:
        try:
            return httpx.post(
                f"{self.gateway.url}/v1/events",
                content=orjson.dumps(batch),
                headers={"content-type": "application/cloudevents-batch+json"},
                timeout=30,
            ).status_code
        except httpx.HTTPError:
            return 0

    def send(self, batches: list[list[dict[str, Any]]], answers: list[int] | None = None) -> None:
        """A real client: each batch is retried until it gets its 202."""
        for batch in batches:
            while (status := self.post(batch)) != 202:
                if answers is not None:
                    answers.append(status)
                time.sleep(0.5)
            if answers is not None:
                answers.append(status)
            time.sleep(0.05)  # a steady stream

    def lag(self) -> int:
        """Records in the log not yet committed by the group."""
        settings = load_settings(
            log="kafka",
            kafka_bootstrap_servers=self.bootstrap,
            topic=self.topic,
            consumer_group=f"g-{self.topic}",
        )
        admin = runtime.build_admin(settings)
        ends = admin.end_offsets(self.topic)
        committed = admin.committed(self.topic, settings.consumer_group)
        return sum(end - committed.get(p, 0) for p, end in ends.items())

    def wait_caught_up(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while (behind := self.lag()) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert behind == 0, (
            f"the group is {behind} records behind after {timeout_s:g} s; processes alive "
            f"{[p.alive() for p in self.processors]}, logs in {self.home}"
        )

    def assert_exact(self, stream: list[dict[str, Any]]) -> None:
        """Every distinct event stored and indexed once; events and meters exact to the cent."""
        truth = ground_truth(stream)
        unique = len({(e["source"], e["id"]) for e in stream})
        store = ClickHouseEngine(self.clickhouse_url, "meterline")
        try:
            counts = store.sql.query_rows(
                "SELECT count() AS stored, uniqExact(tenant, source, id) AS unique_ids, "
                "(SELECT count() FROM usage_event_ids FINAL) AS indexed FROM usage_events"
            )[0]
            assert {k: int(v) for k, v in counts.items()} == {
                "stored": unique,
                "unique_ids": unique,
                "indexed": unique,
            }
            assert stored_totals(store.sql.query_rows(totals_query("usage_events"))) == truth
            assert stored_totals(store.sql.query_rows(totals_query("usage_meters"))) == truth
        finally:
            store.close()

    def assert_verify_clean(self) -> None:
        """``meterline verify`` over everything finds nothing to repair (processes stopped)."""
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
            env={**self.processors[1].env, "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert verified.returncode == 0, verified.stdout + verified.stderr
