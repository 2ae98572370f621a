"""The watchdog: a dead or stuck part makes the whole process exit non-zero.

A process whose processor loop died keeps answering HTTP while nothing is
stored; one whose log writer died answers 503 to every request until someone
notices. Neither heals by itself, and a supervisor (systemd, Kubernetes,
docker ``restart:``) only acts on an exit. So on the first problem:

1. log it at CRITICAL, naming the part and the reason;
2. record it as ``health.failure``: ``/readyz`` and ``/healthz`` answer 503
   from now on, so a load balancer stops sending requests here;
3. after ``drain_s``, ask the process to stop gracefully (the same path as
   SIGTERM: the producer flushes, the other workers finish their batches);
   ``serve`` then raises ``PartFailed`` and the command exits 1;
4. if that has not finished ``hard_exit_s`` later (a hung part can block a
   graceful stop), exit at once with status 70. Nothing acknowledged is lost:
   every 202 was durable in the log, and uncommitted batches are re-read.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from core.health import Health, PartProblem

log = logging.getLogger("meterline.watchdog")

# Long enough for a load balancer polling /readyz every few seconds to take
# the process out of rotation before its port closes.
DRAIN_S = 5.0
HARD_EXIT_S = 60.0
EX_SOFTWARE = 70


class Watchdog:
    def __init__(
        self,
        health: Health,
        stop: Callable[[], None],
        *,
        interval_s: float = 1.0,
        drain_s: float = DRAIN_S,
        hard_exit_s: float = HARD_EXIT_S,
        hard_exit: Callable[[int], None] = os._exit,
    ) -> None:
        self._health = health
        self._stop = stop
        self._interval_s = interval_s
        self._drain_s = drain_s
        self._hard_exit_s = hard_exit_s
        self._hard_exit = hard_exit
        self._checking = True
        self._exited = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def quiet(self) -> None:
        """A normal stop has begun: parts closing down are not failures."""
        self._checking = False

    def close(self) -> None:
        """The process is done stopping: disarm the hard exit."""
        self._checking = False
        self._exited.set()

    def _run(self) -> None:
        try:
            while not self._exited.wait(self._interval_s):
                if not self._checking:
                    continue
                problems = self._health.problems()
                if problems:
                    self._fail(problems[0])
                    return
        except BaseException:
            # A bug in a check: without the watchdog nothing would notice the
            # next dead part, so this is fatal too.
            log.critical("the watchdog failed; exiting", exc_info=True)
            self._hard_exit(EX_SOFTWARE)

    def _fail(self, problem: PartProblem) -> None:
        # Step 1.
        log.critical(
            "%s. /readyz answers 503; the process exits in %.0f s for its supervisor to restart it",
            problem,
            self._drain_s,
        )
        # Step 2.
        self._health.failure = problem
        # Step 3. A SIGTERM meanwhile stops the process anyway; it still exits non-zero.
        if self._exited.wait(self._drain_s):
            return
        self._stop()
        # Step 4.
        if not self._exited.wait(self._hard_exit_s):
            log.critical("graceful stop took over %.0f s; exiting now", self._hard_exit_s)
            self._hard_exit(EX_SOFTWARE)
