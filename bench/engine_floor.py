"""What the store alone costs per event: the engine's CPU, the processor's Python taken out.

``meterline bench --engine`` writes generated events through the processor's own
``Pipeline`` (decode, dedupe, price, the one INSERT and its views, the dedupe
lookup) into a fresh chDB store, in batches of ``METERLINE_BATCH_MAX_EVENTS``, and
counts the CPU of every thread of the process, by thread, minus the Python work
(generating the records and ``prepare``, timed on the calling thread). What is
left is the engine's: the INSERT and lookup calls on the calling thread, its
query threads, its background merges.

Why it exists (issue 17): at 100k events/s, two cores give 20 µs of CPU per event
for everything: broker, librdkafka, Python and the engine. If the engine alone takes
that much, no change on the Python side reaches the target on such a machine, and
the work is in the storage design (the sort key, the views, the batch size), which
this measures without Kafka in the way. No Kafka here: the bench's processor row
measures the whole path.

The merges of the store it fills run during the loop and after it; both are
reported (a merge still running at the end is waited for, up to ``settle_s``).
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.data import EventStream, encode
from bench.workers import headers
from core.log.base import Record

PARTITIONS = 12
BUDGET_US = 20.0  # two cores at 100k events/s
# chDB's thread names (digits dropped) -> the part of the engine they are.
_MERGES = "MergeMutate"
_QUERY = "ThreadPool"


@dataclass
class EngineFloor:
    events: int  # records written (re-sends included)
    stored: int  # rows in usage_events afterwards
    unique: int  # distinct identities among the records, less those the warm batch stored
    batch: int
    wall_s: float
    prepare_us: float  # per event, calling thread: the processor's Python before the store
    generate_us: float  # ... and making the records (the bench's, not the processor's)
    # per event, by part of the engine; "with merges left" adds what ran after the loop
    during: dict[str, float] = field(default_factory=dict)
    settled: dict[str, float] = field(default_factory=dict)
    merges_left: int = 0  # merges still running when settle_s ran out

    @property
    def ok(self) -> bool:
        """The loop stored every distinct event once: the floor measured the real work."""
        return self.stored == self.unique


def measure(events: int, batch: int | None = None, settle_s: float = 600.0) -> EngineFloor:
    """Write ``events`` generated events into a fresh chDB store; the engine's CPU per event."""
    from sinks.chdb_sink import ChdbEngine

    work = Path(tempfile.mkdtemp(prefix="meterline-engine-"))
    engine = ChdbEngine(work / "chdb")
    try:
        return _measure(engine, work, events, batch, settle_s)
    finally:
        engine.close()
        shutil.rmtree(work, ignore_errors=True)


def _measure(
    engine: Any, work: Path, events: int, batch: int | None, settle_s: float
) -> EngineFloor:
    from core.settings import load_settings
    from meterline.runtime import build_price_book
    from processor.runner import Processor
    from sinks.migrations import migrate

    settings = load_settings(log="embedded", store="chdb", data_dir=work)
    size = batch or settings.batch_max_events
    migrate(engine)
    book = build_price_book(settings)

    class _NoLog:  # commits and lag: nothing to do without a log
        def commit(self, _offsets: Any) -> None: ...
        def lag(self) -> dict[int, int]:
            return {}

    class _NoDlq:
        def publish(self, _letters: Any) -> None: ...

    pipeline = Processor(_NoLog(), engine, book, _NoDlq())._pipeline  # type: ignore[arg-type]
    now_ms = int(time.time() * 1000)
    stream = EventStream(seed=7, now_ms=now_ms)
    logged = tuple(headers(now_ms))
    written = 0

    def records(n: int) -> list[Record]:
        # Offsets go on from batch to batch: each batch's dedup token is its own.
        nonlocal written
        values = encode(stream.take(n))
        first, written = written, written + n
        return [
            Record("bench", (first + i) % PARTITIONS, first + i, key, value, logged, now_ms)
            for i, (key, value) in enumerate(values)
        ]

    warming = records(min(size, 20_000))
    pipeline.run(warming)  # warm: caches, chDB's first Python() read; not counted
    warm = written
    # The stream re-sends recent events: those of the warm batch are stored already.
    stored_before = {r.key or b"" for r in warming}
    caller = threading.get_native_id()
    keys: set[bytes] = set()  # the log key is the event id: a re-send has its original's
    python_s = generate_s = 0.0
    gc.disable()  # as the processor does around each batch
    try:
        before = _threads(caller)
        began = time.perf_counter()
        while written - warm < events:
            clock = time.thread_time()
            batch_records = records(min(size, events - (written - warm)))
            keys.update(r.key or b"" for r in batch_records)
            generated = time.thread_time()
            prepared = pipeline.prepare(batch_records)
            python_s += time.thread_time() - clock
            generate_s += generated - clock
            pipeline.finish(prepared)
            gc.collect(0)
        wall = time.perf_counter() - began
        during = _threads(caller)
    finally:
        gc.enable()
    left = _settle(engine, settle_s)
    settled = _threads(caller)
    stored = int(
        engine.sql.query_rows(
            f"SELECT count() AS n FROM {engine.database}.usage_events WHERE offset >= {warm}"
        )[0]["n"]
    )
    n = written - warm
    return EngineFloor(
        events=n,
        stored=stored,
        unique=len(keys - stored_before),
        batch=size,
        wall_s=wall,
        prepare_us=(python_s - generate_s) / n * 1e6,
        generate_us=generate_s / n * 1e6,
        during=_parts(before, during, python_s, n),
        settled=_parts(before, settled, python_s, n),
        merges_left=left,
    )


def _threads(caller: int) -> dict[str, float]:
    """CPU seconds of this process's threads by name; the calling thread as 'caller'."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/stat") as stat:
                raw = stat.read()
        except OSError:  # the thread ended between listdir and open
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        key = "caller" if int(task) == caller else "".join(c for c in name if not c.isdigit())
        out[key] = out.get(key, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def _parts(
    before: dict[str, float], after: dict[str, float], python_s: float, events: int
) -> dict[str, float]:
    """µs per event by part of the engine; the calling thread without its Python work."""
    spent = {k: v - before.get(k, 0.0) for k, v in after.items()}
    calls = spent.pop("caller", 0.0) - python_s
    merges = spent.pop(_MERGES, 0.0)
    query = spent.pop(_QUERY, 0.0)
    other = sum(spent.values())
    parts = {
        "the INSERT and lookup calls (calling thread)": calls,
        "the engine's query threads": query,
        "background merges": merges,
        "other engine threads": other,
    }
    out = {name: seconds / events * 1e6 for name, seconds in parts.items()}
    out["total"] = sum(out.values())
    return out


def _settle(engine: Any, settle_s: float) -> int:
    """Wait for the store's merges to end (at most ``settle_s``); how many still run."""
    deadline = time.monotonic() + settle_s
    while True:
        running = int(engine.sql.query_rows("SELECT count() AS n FROM system.merges")[0]["n"])
        if running == 0 or time.monotonic() >= deadline:
            return running
        time.sleep(1)


def table(floor: EngineFloor) -> str:
    lines = [
        f"{floor.events:,} events in batches of {floor.batch:,} "
        f"({floor.events / floor.wall_s:,.0f} events/s, one thread); stored {floor.stored:,} "
        f"of {floor.unique:,} distinct",
        "",
        "| engine CPU per event | during the loop (µs) | with the merges left after it (µs) |",
        "| --- | ---: | ---: |",
    ]
    for name in floor.during:
        label = "**total**" if name == "total" else f"... {name}"
        lines.append(f"| {label} | {floor.during[name]:.2f} | {floor.settled[name]:.2f} |")
    total = floor.settled["total"]
    lines.append(
        f"\nTaken out: the processor's Python before the store (`prepare`) {floor.prepare_us:.2f} "
        f"µs per event, and making the records {floor.generate_us:.2f}. "
        f"Two cores at 100k events/s give {BUDGET_US:.0f} µs per event for everything: the "
        f"engine alone takes {total / BUDGET_US:.2f}x that."
    )
    if floor.merges_left:
        lines.append(f"{floor.merges_left} merges were still running when the wait ended.")
    if not floor.ok:
        lines.append(
            f"CHECK FAILED: stored {floor.stored:,} rows for {floor.unique:,} distinct events"
        )
    return "\n".join(lines)
