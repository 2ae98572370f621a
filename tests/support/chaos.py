"""Crash injection for the chaos tests: SIGKILL this process at a named checkpoint step.

Armed by the test harness (tests/support/chaos_run.py passes it to the processor
as its step hooks) from ``METERLINE_CHAOS_KILL_AT=<point>[:<nth batch>]`` (e.g.
``after_insert:3``); the product itself never reads that variable. It exists so the
tests can prove, with a real SIGKILL rather than a simulated exception, that a
crash at each step of the checkpoint order loses nothing and counts nothing twice.

``METERLINE_CHAOS_STORE_AWAY=1`` instead makes every INSERT fail as a store that
lost its table would (tests/e2e/test_stuck_processor_exits.py): ``/v1/sql`` is
read-only, so a test can no longer drop the table through it.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from core.errors import StoreError
from core.log.base import Record

if TYPE_CHECKING:
    from sinks.reader import SqlReader

POINTS = ("after_poll", "mid_insert", "torn_insert", "after_insert", "after_commit")
ENV = "METERLINE_CHAOS_KILL_AT"
STORE_AWAY_ENV = "METERLINE_CHAOS_STORE_AWAY"
# A record whose value contains these bytes kills the process each time it is handled
# (a native crash on one record, as far as the processor can tell).
KILL_ON_ENV = "METERLINE_CHAOS_KILL_ON"


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class Chaos:
    def __init__(
        self, spec: str | None, store_away: bool = False, kill_on: str | None = None
    ) -> None:
        self.store_away = store_away
        self.kill_on = kill_on.encode() if kill_on else None
        self.point: str | None = None
        self.nth = 1
        self.batches = 0
        if spec:
            point, _, nth = spec.partition(":")
            if point and point not in POINTS:
                raise ValueError(f"{ENV}: {point!r} is not one of {', '.join(POINTS)}")
            self.point, self.nth = point, int(nth or 1)

    def batch_started(self) -> None:
        self.batches += 1

    def _armed(self, point: str) -> bool:
        return self.point == point and self.batches >= self.nth

    def at(self, point: str) -> None:
        if self._armed(point):
            _kill()

    def handling(self, record: Record) -> None:
        if self.kill_on is not None and self.kill_on in record.value:
            _kill()

    @contextmanager
    def around_insert(self, sql: SqlReader) -> Iterator[None]:
        """``mid_insert``: a timer kills the process while the INSERT is running.

        ``torn_insert``: the process dies between the INSERT's usage_events part
        and its usage_event_ids part. The view is detached for this one INSERT
        (not permanently: the restarted engine attaches it again), which leaves
        the state a SIGKILL between the two parts leaves, deterministically.

        ``store_away``: every INSERT fails as if its table were gone.
        """
        if self.store_away:
            raise StoreError("chaos: Table meterline.usage_events does not exist. (UNKNOWN_TABLE)")
        if self._armed("torn_insert"):
            sql.query_raw(f"DETACH TABLE {sql.database}.usage_event_ids_mv", "CSV")
            yield
            _kill()
        timer = threading.Timer(0.002, _kill) if self._armed("mid_insert") else None
        if timer is not None:
            timer.start()
        yield
        if timer is not None:  # the insert beat the timer: die right after it instead
            _kill()
