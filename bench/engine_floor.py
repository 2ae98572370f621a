"""What the store costs per event: the engine's CPU, beside the processor's own Python.

``meterline bench --engine`` writes generated bench events through the processor's
``Pipeline`` (decode, dedupe, pricing, the one INSERT with its views, the dedupe
lookup, the in-memory dedupe cache kept as the live processor keeps it) into a fresh
chDB store, in batches of ``METERLINE_BATCH_MAX_EVENTS``, with no Kafka. It reads the
CPU of every thread of the process by thread name (bench/_proc.py), and times the
calling thread itself (``time.thread_time``), split into the Python before the
store (``prepare``, ``remember``), making the records (the bench's, not the
processor's), and ``finish``: the INSERT and lookup calls, whose work chDB does
partly on the calling thread, with the Python around them (the lookup's key lists
and answer, dropping a batch's stored duplicates).

Why it exists (issue 17): at 100k events/s, two cores give 20 µs of CPU per event
for everything: broker, librdkafka, Python and the engine. What the engine alone
takes bounds what any Python change can reach on such a machine, and it moves with
the storage design (sort keys, views, batch size), which this measures without
Kafka in the way. The bench's processor row measures the whole path.

The merges of the store it fills run during the loop and after it; both are
reported. The run fails (``ok``) unless ``usage_events`` holds every distinct
event exactly once, so the CPU it reports is for the real work.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench._proc import thread_cpu_s
from bench.data import EventStream, encode
from bench.workers import headers
from core.gc_policy import cyclic_gc_paused
from core.log.base import Record

if TYPE_CHECKING:
    from processor.pipeline import BatchResult
    from sinks.chdb_sink import ChdbEngine

PARTITIONS = 12
BUDGET_US = 20.0  # two cores at 100k events/s
# chDB's thread names (bench/run.py's THREAD_ROLES) -> the part of the engine they are.
_PARTS_BY_THREAD = {"ThreadPool": "the engine's query threads", "MergeMutate": "background merges"}
FINISH = "finish() on the calling thread: the INSERT and lookup calls, and their Python"
OTHER = "other threads (the engine's pools, pyarrow's)"
UNSEEN = "threads that ended before the last read"


@dataclass
class EngineFloor:
    events: int  # records written (re-sends included)
    rows: int  # rows in usage_events afterwards
    distinct_rows: int  # distinct (source, id) among them
    unique: int  # distinct events among the records, less those the warm batch stored
    batch: int
    wall_s: float
    prepare_us: float  # per event, calling thread: prepare() and remember()
    generate_us: float  # ... making the records (the bench's, not the processor's)
    # per event, by part; "settled" adds what ran after the loop (the merges left)
    during: dict[str, float] = field(default_factory=dict)
    settled: dict[str, float] = field(default_factory=dict)
    merges_left: int = 0  # merges still running when the wait ended
    dead_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def problems(self) -> list[str]:
        """Why the run did not measure the real work: empty when every event is stored once."""
        out = []
        if not self.rows == self.distinct_rows == self.unique:
            out.append(
                f"usage_events holds {self.rows:,} rows, {self.distinct_rows:,} distinct, "
                f"for {self.unique:,} distinct events"
            )
        if self.dead_reasons:
            out.append(f"dead letters: {self.dead_reasons}")
        return out


def measure(events: int, batch: int | None = None, settle_s: float = 600.0) -> EngineFloor:
    """Write ``events`` generated events into a fresh chDB store; CPU per event by part."""
    from sinks.chdb_sink import ChdbEngine

    work = Path(tempfile.mkdtemp(prefix="meterline-engine-"))
    engine = ChdbEngine(work / "chdb")
    try:
        return _measure(engine, work, events, batch, settle_s)
    finally:
        engine.close()
        shutil.rmtree(work, ignore_errors=True)


class _NoDeadLetters:
    """Letters are counted from the batch results; nothing to publish without a log."""

    def publish(self, _letters: Sequence[Any]) -> None: ...


def _measure(
    engine: ChdbEngine, work: Path, events: int, batch: int | None, settle_s: float
) -> EngineFloor:
    from core.settings import load_settings
    from meterline.runtime import build_mappings, build_price_book
    from processor.pipeline import BatchResult, LiveTables, Pipeline
    from sinks.migrations import migrate

    settings = load_settings(log="embedded", store="chdb", data_dir=work)
    size = batch or settings.batch_max_events
    migrate(engine)
    # As runtime.build_processor builds the live processor's, minus the log.
    pipeline = Pipeline(
        LiveTables(engine),
        build_price_book(settings),
        _NoDeadLetters(),
        dedupe_cache_ids=settings.dedupe_cache_ids,
        horizon_ms=settings.dedupe_horizon_days * 86_400_000,
        mappings=build_mappings(settings),
        native=settings.processor_native,
    )
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

    def run(batch_records: list[Record]) -> BatchResult:
        # The live processor's steps and pauses (processor/runner.py): prepare, then
        # finish, each with the collector paused; remember() once the batch landed.
        with cyclic_gc_paused():
            prepared = pipeline.prepare(batch_records)
        clock = time.thread_time()
        with cyclic_gc_paused():
            result = pipeline.finish(prepared)
        spent["finish"] += time.thread_time() - clock
        pipeline.remember(result.stored_keys)
        return result

    spent = {"finish": 0.0, "generate": 0.0, "caller": 0.0}  # calling thread, seconds
    warm = run(records(min(size, 20_000)))  # caches, chDB's first Python() read: not counted
    spent["finish"] = 0.0
    first = written
    # The stream re-sends recent events: those the warm batch stored are stored already.
    stored_before = {key[2] for key in warm.stored_keys}  # (tenant, source, id) -> id
    ids: set[bytes] = set()  # the log key is the event id: a re-send has its original's
    total = BatchResult()
    caller = threading.get_native_id()
    before = thread_cpu_s(skip=caller)
    began = time.perf_counter()
    caller_began = time.thread_time()
    while written - first < events:
        clock = time.thread_time()
        batch_records = records(min(size, events - (written - first)))
        ids.update(r.key or b"" for r in batch_records)
        spent["generate"] += time.thread_time() - clock
        total.add(run(batch_records))
    wall = time.perf_counter() - began
    spent["caller"] = time.thread_time() - caller_began
    during = thread_cpu_s(skip=caller)
    left = _settle(engine, settle_s)
    settled = thread_cpu_s(skip=caller)
    n = written - first
    prepare_s = spent["caller"] - spent["generate"] - spent["finish"]
    rows = engine.sql.query_rows(
        f"SELECT count() AS rows, uniqExact(source, id) AS distinct_rows "
        f"FROM {engine.database}.usage_events WHERE offset >= {first}"
    )[0]
    return EngineFloor(
        events=n,
        rows=int(rows["rows"]),
        distinct_rows=int(rows["distinct_rows"]),
        unique=len({i.decode() for i in ids} - stored_before),
        batch=size,
        wall_s=wall,
        prepare_us=prepare_s / n * 1e6,
        generate_us=spent["generate"] / n * 1e6,
        during=_parts(before, during, spent["finish"], n),
        settled=_parts(before, settled, spent["finish"], n),
        merges_left=left,
        dead_reasons=dict(total.dead_reasons),
    )


def _parts(
    before: dict[str, float], after: dict[str, float], finish_s: float, events: int
) -> dict[str, float]:
    """µs per event by part: the calling thread's finish(), then the other threads by name."""
    spent = {k: v - before.get(k, 0.0) for k, v in after.items()}
    parts = {FINISH: finish_s, **dict.fromkeys(_PARTS_BY_THREAD.values(), 0.0), OTHER: 0.0}
    unseen = 0.0
    for name, seconds in spent.items():
        if seconds < 0:  # its thread ended: its whole life came off this name
            unseen -= seconds
            continue
        parts[_PARTS_BY_THREAD.get(name, OTHER)] += seconds
    out = {name: seconds / events * 1e6 for name, seconds in parts.items()}
    out["total"] = sum(out.values())
    if unseen:
        out[UNSEEN] = unseen / events * 1e6  # not in the total: not measured
    return out


def _settle(engine: ChdbEngine, settle_s: float) -> int:
    """Wait for the store's merges (at most ``settle_s``); how many still run.

    Three empty reads in a row, a second apart: a merge about to be picked is not in
    ``system.merges`` yet.
    """
    deadline = time.monotonic() + settle_s
    quiet = 0
    while True:
        running = int(engine.sql.query_rows("SELECT count() AS n FROM system.merges")[0]["n"])
        quiet = quiet + 1 if running == 0 else 0
        if quiet == 3 or time.monotonic() >= deadline:
            return running
        time.sleep(1)


def table(floor: EngineFloor) -> str:
    lines = [
        f"{floor.events:,} events in batches of {floor.batch:,} "
        f"({floor.events / floor.wall_s:,.0f} events/s, one thread, making the records included); "
        f"usage_events holds {floor.rows:,} rows of {floor.unique:,} distinct events",
        "",
        "| CPU per event | during the loop (µs) | with the merges left after it (µs) |",
        "| --- | ---: | ---: |",
    ]
    for name in floor.settled:
        label = "**total**" if name == "total" else f"... {name}"
        lines.append(f"| {label} | {floor.during.get(name, 0.0):.2f} | {floor.settled[name]:.2f} |")
    total = floor.settled["total"]
    lines.append(
        f"\nBeside it, the processor's Python before the store (prepare, remember): "
        f"{floor.prepare_us:.2f} µs per event; making the records: {floor.generate_us:.2f} "
        f"(neither is in the total). Two cores at 100k events/s give {BUDGET_US:.0f} µs per "
        f"event for everything: the total above is {total / BUDGET_US:.2f}x that."
    )
    if floor.merges_left:
        lines.append(f"{floor.merges_left} merges were still running when the wait ended.")
    return "\n".join(lines)
