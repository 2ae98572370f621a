"""Crash injection for the chaos tests: SIGKILL this process at a named checkpoint step.

Enabled only by ``METERLINE_CHAOS_KILL_AT=<point>[:<nth batch>]`` (e.g.
``after_insert:3``); unset, it costs one comparison per step. It exists so the
tests can prove, with a real SIGKILL rather than a simulated exception, that a
crash at each step of the checkpoint order loses nothing and counts nothing twice.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sinks.base import Sink

POINTS = ("after_poll", "mid_insert", "torn_insert", "after_insert", "after_commit")
ENV = "METERLINE_CHAOS_KILL_AT"


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class Chaos:
    def __init__(self, spec: str | None) -> None:
        self.point: str | None = None
        self.nth = 1
        self.batches = 0
        if spec:
            point, _, nth = spec.partition(":")
            if point not in POINTS:
                raise ValueError(f"{ENV}: {point!r} is not one of {', '.join(POINTS)}")
            self.point, self.nth = point, int(nth or 1)

    @classmethod
    def from_env(cls) -> Chaos:
        return cls(os.environ.get(ENV))

    def batch_started(self) -> None:
        self.batches += 1

    def _armed(self, point: str) -> bool:
        return self.point == point and self.batches >= self.nth

    def at(self, point: str) -> None:
        if self._armed(point):
            _kill()

    @contextmanager
    def around_insert(self, sink: Sink) -> Iterator[None]:
        """``mid_insert``: a timer kills the process while the INSERT is running.

        ``torn_insert``: the process dies between the INSERT's usage_events part
        and its usage_event_ids part. The view is detached for this one INSERT
        (not permanently: the restarted engine attaches it again), which leaves
        the state a SIGKILL between the two parts leaves, deterministically.
        """
        if self._armed("torn_insert"):
            sink.query_raw(f"DETACH TABLE {sink.database}.usage_event_ids_mv", "CSV")
            yield
            _kill()
        timer = threading.Timer(0.002, _kill) if self._armed("mid_insert") else None
        if timer is not None:
            timer.start()
        yield
        if timer is not None:  # the insert beat the timer: die right after it instead
            _kill()
