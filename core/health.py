"""Liveness of the background parts of a process: none may die or hang silently.

Every part that works on its own thread or task (the embedded log's writer, the
Kafka delivery-report task, each processor loop) reports here what it is doing.
A part is *dead* when its thread or task ended on an error, and *stuck* when one
piece of work (an append, a batch insert with its retries) has been going on for
longer than ``METERLINE_STUCK_AFTER_S``. Either turns ``/readyz`` into 503 and
makes the process exit non-zero (``meterline.watchdog``), so a supervisor
restarts it; a silently dead part would otherwise leave a process that answers
``/healthz`` while it refuses or never stores every event.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PartProblem:
    """Why one part cannot do its job: ``kind`` is ``dead``, ``stuck`` or ``unreachable``."""

    part: str
    kind: str
    reason: str

    def __str__(self) -> str:
        return f"{self.part} is {self.kind}: {self.reason}"


# A check answers for one part, given the stuck limit in seconds.
Check = Callable[[float], PartProblem | None]


class Liveness:
    """What one part reports about itself: idle, busy since when, or dead.

    ``busy`` marks the start of a piece of work that must end within the stuck
    limit; calling it again before ``idle`` keeps the start (a retried batch is
    still the same piece of work) and only updates what it says. Two
    assignments each: cheap enough for every poll of the processor loop.
    """

    def __init__(self, part: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.part = part
        self._clock = clock
        self._since: float | None = None
        self._doing = ""
        self._died: str | None = None
        self._lock = threading.Lock()  # only for dead(): the rest are single writes

    def busy(self, doing: str) -> None:
        if self._since is None:
            self._since = self._clock()
        self._doing = doing

    def idle(self) -> None:
        self._since = None

    def dead(self, reason: str) -> None:
        with self._lock:
            if self._died is None:  # the first reason is the cause; later ones are fallout
                self._died = reason

    def problem(self, stuck_after_s: float) -> PartProblem | None:
        if self._died is not None:
            return PartProblem(self.part, "dead", self._died)
        since = self._since
        if since is not None:
            busy_s = self._clock() - since
            if busy_s > stuck_after_s:
                return PartProblem(
                    self.part,
                    "stuck",
                    f"{self._doing} for {busy_s:.0f} s "
                    f"(over METERLINE_STUCK_AFTER_S={stuck_after_s:g})",
                )
        return None


class Health:
    """Every part of one process, checked against one stuck limit.

    The first problem the watchdog acts on is kept as ``failure``: from then on
    the process is on its way out and says so, even if the part recovers.
    """

    def __init__(self, stuck_after_s: float) -> None:
        self.stuck_after_s = stuck_after_s
        self._checks: list[Check] = []
        self.failure: PartProblem | None = None

    def add(self, check: Check) -> None:
        self._checks.append(check)

    def problems(self) -> list[PartProblem]:
        found = [p for check in self._checks if (p := check(self.stuck_after_s)) is not None]
        if self.failure is not None and self.failure not in found:
            found.insert(0, self.failure)
        return found
