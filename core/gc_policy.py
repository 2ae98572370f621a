"""Garbage-collector policy for the long-running processes (gateway, processor).

Its own module because both the gateway and the processor use it, and because
it is process-wide state: whoever pauses the collector must count with every
other thread that does (see ``GcPause``). Figures: docs/benchmarks.md.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


def tune_gc() -> None:
    """Call once, after start-up, in a process that runs processors or a gateway.

    The hot loop allocates millions of short-lived objects (decoded JSON, row
    values) that reference counting frees; with the default thresholds the
    cyclic collector ran constantly over the long-lived start-up objects (~40%
    of processor time in the benchmark's profile). Freeze what start-up built
    and collect cycles far less often: 13.8k -> 19.3k events/s in the benchmark.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


class GcPause:
    """No cyclic garbage collection while batches are processed (``paused()``).

    A batch keeps ~10 live objects per event (records, decoded JSON, models,
    rows) until it is written, and every young collection walked all of them
    again: 22% of the processor's time even with ``tune_gc``'s thresholds
    (isolated batch loop: 28.2 -> 22.0 µs per event). The hot path makes no
    reference cycles and a batch's memory is bounded by its size.

    The collector is process-wide, so pauses are counted: nested ones and
    ``--workers`` threads share one pause, and the collector comes back on
    when the last one ends (never if someone else had turned it off). Cycles
    made meanwhile (a gateway in the same process, exception tracebacks) are
    still reclaimed: whenever a pause ends, the young generation is collected
    if the last such collection is a second old, everything if it is a minute
    old, even while other workers' pauses go on. Not at every pause's end:
    each poll's 10k fresh records made that 6% of the processor's time.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._turned_off = False  # we disabled the collector (it was on)
        self._young_at = 0.0
        self._full_at = time.monotonic()

    @contextmanager
    def paused(self) -> Iterator[None]:
        with self._lock:
            if self._depth == 0 and gc.isenabled():
                gc.disable()
                self._turned_off = True
            self._depth += 1
        try:
            yield
        finally:
            generation = None
            with self._lock:
                self._depth -= 1
                if self._depth == 0 and self._turned_off:
                    self._turned_off = False
                    gc.enable()
                now = time.monotonic()
                if now - self._full_at >= 60.0:
                    self._full_at = self._young_at = now
                    generation = 2
                elif now - self._young_at >= 1.0:
                    self._young_at = now
                    generation = 0
            if generation is not None:  # outside the lock: other workers' batches go on
                gc.collect(generation)


#: The one process-wide pause every processor loop shares.
cyclic_gc_paused = GcPause().paused
