"""No background part dies or hangs silently: liveness, /readyz, the watchdog.

Real parts on the embedded log and chDB; the faults are injected by tiny
subclasses of the real parts, never by switches in production code.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from core.errors import ConfigError
from core.health import Health, Liveness, PartProblem
from core.log.base import LogConsumer, OutMessage, Record
from core.settings import Settings, load_settings
from ingest.app import create_app
from ingest.gateway import Gateway
from meterline import runtime
from meterline.serve import ProcessorThread
from meterline.watchdog import Watchdog
from pricing.base import PriceBook
from processor.runner import BatchResult, DeadLetterSink, Processor, StepHooks


def wait_for(check: Callable[[], Any], timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.05)
    raise TimeoutError(str(check))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_part_is_stuck_once_one_piece_of_work_outlasts_the_limit_retries_included() -> None:
    clock = Clock()
    part = Liveness("processor-0", clock)
    part.busy("writing a batch of 5 records")
    clock.now += 9
    part.busy("retrying a batch of 5 records (table is missing)")  # same batch: same start
    assert part.problem(stuck_after_s=10) is None
    clock.now += 2
    assert part.problem(stuck_after_s=10) == PartProblem(
        "processor-0",
        "stuck",
        "retrying a batch of 5 records (table is missing) for 11 s "
        "(over METERLINE_STUCK_AFTER_S=10)",
    )
    part.idle()
    assert part.problem(stuck_after_s=10) is None
    clock.now += 1000  # idle (nothing to poll, nothing to write) is never stuck
    assert part.problem(stuck_after_s=10) is None


class BuggyProcessor(Processor):
    """The real processor loop with a bug in its batch step (not a store error)."""

    def process_batch(self, records: list[Record]) -> BatchResult:
        raise RuntimeError("bug in the batch step")


def build_buggy(
    settings: Settings,
    consumer: LogConsumer,
    engine: Any,
    price_book: PriceBook,
    dead_letters: DeadLetterSink,
    known_tenant: Callable[[str], bool] | None = None,
    *,
    hooks: StepHooks | None = None,
    liveness: Liveness | None = None,
    **_more: Any,  # what else runtime.build_processor takes (mappings, attempts...)
) -> Processor:
    return BuggyProcessor(
        consumer,
        engine,
        price_book,
        dead_letters,
        batch_max_wait_s=0.05,
        hooks=hooks,
        liveness=liveness,
    )


class BuggyWorkers(ProcessorThread):
    _build = staticmethod(build_buggy)


def gateway(settings: Settings, health: Health) -> TestClient:
    producer = runtime.build_producer(settings)
    return TestClient(
        create_app(
            Gateway(
                producer,
                tenant="default",
                max_body_bytes=settings.max_body_bytes,
                max_event_bytes=settings.max_event_bytes,
                max_batch_events=settings.max_batch_events,
                health=health,
            ),
            on_shutdown=[producer.close],
        )
    )


def test_a_processor_thread_that_raises_fails_readyz_and_stops_the_process(
    tmp_path: Path,
) -> None:
    settings = load_settings(data_dir=tmp_path, partitions=2, open_mode=True)
    runtime.ensure_topics(settings)
    sink = runtime.build_engine(settings)
    health = Health(settings.stuck_after_s)
    workers = BuggyWorkers(settings, sink)
    workers.add_checks(health)
    workers.start()
    feeder = runtime.build_producer(settings)
    feeder.publish_sync([OutMessage(b"k", b"{}")])
    feeder.close()

    problems: Sequence[PartProblem] = wait_for(health.problems)
    assert problems == [PartProblem("processor-0", "dead", "RuntimeError: bug in the batch step")]
    with gateway(settings, health) as client:
        ready = client.get("/readyz")
        assert client.get("/healthz").status_code == 200  # not yet given up on: still live
        assert ready.status_code == 503
        assert ready.json()["title"] == "Not ready"
        assert ready.json()["problems"] == [
            {
                "code": "dead",
                "field": "processor-0",
                "message": "RuntimeError: bug in the batch step",
            }
        ]

        stopped = threading.Event()
        exits: list[int] = []
        watchdog = Watchdog(health, stopped.set, interval_s=0.05, drain_s=0, hard_exit=exits.append)
        watchdog.start()
        assert stopped.wait(60)
        watchdog.close()
        assert health.failure == problems[0]
        healthz = client.get("/healthz")
        assert healthz.status_code == 503  # the process is on its way out
        assert healthz.json()["problems"][0]["field"] == "processor-0"
    assert exits == []  # the graceful stop was asked for; no hard exit needed
    workers.stop()
    sink.close()


def test_the_watchdog_exits_hard_when_the_graceful_stop_hangs() -> None:
    health = Health(stuck_after_s=60)
    part = Liveness("processor-0")
    part.dead("RuntimeError: bug")
    health.add(part.problem)
    exited = threading.Event()
    codes: list[int] = []

    def hard_exit(code: int) -> None:
        codes.append(code)
        exited.set()

    # stop() does nothing, as if a hung part blocked the graceful stop.
    watchdog = Watchdog(
        health, lambda: None, interval_s=0.05, drain_s=0, hard_exit_s=0.1, hard_exit=hard_exit
    )
    watchdog.start()
    assert exited.wait(60)
    assert codes == [70]


def test_a_bad_stuck_limit_is_refused_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match="METERLINE_STUCK_AFTER_S: Input should be greater"):
        load_settings(stuck_after_s=0)
