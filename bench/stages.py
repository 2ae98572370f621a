"""Where the processor's time goes: µs of CPU per event for each step of a batch.

``meterline bench --stages`` runs the processor's own steps, one at a time, on
generated records in this process (real chDB, no Kafka: the bench table's
"bare consumer" row is the cost of reading them), and prints one table. It is
the profile behind docs/benchmarks.md's "what bounds the processor": at 100k
events/s one core has 10 µs per event for everything.

CPU time of this thread (``time.thread_time``), except the INSERT, whose work
is mostly on chDB's own threads: it is shown as wall time.
"""

from __future__ import annotations

import gc
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from bench.data import EventStream, encode
from bench.workers import headers
from core.log.base import Record

if TYPE_CHECKING:
    from sinks.chdb_sink import ChdbEngine

BATCH = 20_000  # METERLINE_BATCH_MAX_EVENTS' default


@dataclass
class Stage:
    name: str
    micros: float  # per event
    clock: str = "cpu"


def _per_event(fn: Callable[[], Any], events: int, clock: Callable[[], float]) -> float:
    began = clock()
    fn()
    return (clock() - began) / events * 1e6


def measure(events: int = 200_000) -> list[Stage]:
    """Run each step over ``events`` generated records in batches of 20k."""
    from sinks.chdb_sink import ChdbEngine

    work = Path(tempfile.mkdtemp(prefix="meterline-stages-"))
    engine = ChdbEngine(work / "chdb")
    try:
        return _measure(engine, work, events)
    finally:
        engine.close()
        shutil.rmtree(work, ignore_errors=True)


def _measure(engine: ChdbEngine, work: Path, events: int) -> list[Stage]:
    from core.settings import load_settings
    from meterline.runtime import build_price_book
    from processor.decode import Decoded, decode, decode_slow
    from processor.dedupe import Deduplicator
    from processor.rows import EventColumns
    from processor.runner import Processor
    from schemas.envelope import check_envelope
    from schemas.fast_decode import fast_token_event
    from schemas.fast_decode_other import fast_other_event
    from schemas.usage import USAGE_MODELS
    from sinks.arrow_rows import arrow_table as _arrow_table
    from sinks.migrations import migrate

    settings = load_settings(log="embedded", store="chdb", data_dir=work)
    migrate(engine)
    book = build_price_book(settings)

    class _NoLog:  # commits and lag: nothing to do without a log
        def commit(self, _offsets: Any) -> None: ...
        def lag(self) -> dict[int, int]:
            return {}

    class _NoDlq:
        def publish(self, _letters: Any) -> None: ...

    processor = Processor(_NoLog(), engine, book, _NoDlq())  # type: ignore[arg-type]
    processor.process_batch(_records(BATCH, seed=10))  # warm: caches, chDB's first Python() read
    cpu = time.thread_time
    stages: list[Stage] = []

    # The whole batch first, on records of its own (their ids must be new).
    whole = _records(events, seed=11)
    total = _per_event(
        lambda: [processor.process_batch(whole[i : i + BATCH]) for i in range(0, events, BATCH)],
        events,
        cpu,
    )

    # Then each step alone, on other records, with its inputs made beforehand.
    records = _records(events, seed=12)
    values = [r.value for r in records]
    objects = [orjson.loads(v) for v in values]
    envelopes = [check_envelope(o) for o in objects]
    typed = [
        (USAGE_MODELS[e.type], o["data"])
        for o, e in zip(objects, envelopes, strict=True)
        if not isinstance(e, list) and e.type in USAGE_MODELS
    ]
    decoded = [d for d in (decode(r) for r in records) if isinstance(d, Decoded)]
    priced = [
        book.price(d.envelope.type, d.usage, d.time_ms, d.envelope.subject or "") for d in decoded
    ]
    dedupe = Deduplicator(engine.key_lookup(), capacity=0)  # every key goes to the engine
    tables: list[dict[str, list[Any]]] = []

    def parse() -> None:
        for value in values:
            orjson.loads(value)

    def lookups() -> None:
        for i in range(0, len(decoded), BATCH):
            dedupe.new_indexes([d.key for d in decoded[i : i + BATCH]])

    def pricing() -> None:
        for d in decoded:
            book.price(d.envelope.type, d.usage, d.time_ms, d.envelope.subject or "")

    def rows() -> None:
        for i in range(0, len(decoded), BATCH):
            columns = EventColumns()
            for d, p in zip(decoded[i : i + BATCH], priced[i : i + BATCH], strict=True):
                columns.add(d, p, book.version, 0)
            tables.append(columns.columns)

    gc.disable()  # as Processor.run does around each batch
    try:
        stages.append(Stage("JSON parse (orjson.loads)", _per_event(parse, events, cpu)))
        stages.append(
            Stage(
                "envelope check",
                _per_event(lambda: [check_envelope(o) for o in objects], events, cpu),
            )
        )
        stages.append(
            Stage(
                "usage data (pydantic model)",
                _per_event(lambda: [m.model_validate(d) for m, d in typed], events, cpu),
            )
        )
        stages.append(
            Stage(
                "reference decode (the three above, wrapped)",
                _per_event(lambda: [decode_slow(r, "t") for r in records], events, cpu),
            )
        )
        stages.append(
            Stage(
                "fast token decode (msgspec + the rules in Python)",
                _per_event(lambda: [fast_token_event(v) for v in values], events, cpu),
            )
        )
        # Per event of the whole batch, like every row: the ~6% of events of these types.
        others = [v for v, e in zip(values, envelopes, strict=True) if _other(e)]
        stages.append(
            Stage(
                "fast image/units/charge decode (msgspec + the rules; ~6% of events)",
                _per_event(lambda: [fast_other_event(v) for v in others], events, cpu),
            )
        )
        stages.append(
            Stage(
                "decode() (fast path, else the reference)",
                _per_event(lambda: [decode(r) for r in records], events, cpu),
            )
        )
        stages.append(Stage("dedupe lookup in usage_event_ids", _per_event(lookups, events, cpu)))
        stages.append(Stage("pricing", _per_event(pricing, events, cpu)))
        stages.append(Stage("row building (EventColumns)", _per_event(rows, events, cpu)))
        stages.append(
            Stage(
                "Arrow table for the INSERT",
                _per_event(lambda: [_arrow_table(t) for t in tables], events, cpu),
            )
        )
    finally:
        gc.enable()

    writer = engine.writer()

    def inserts() -> None:
        for i, columns in enumerate(tables):
            writer.insert(columns, f"stages-{i}")

    # Wall and CPU of the same INSERTs: chDB works on its own threads with the GIL
    # released, so its wall time can overlap Python only if a core is free for it;
    # the CPU of every thread says how much of a core the engine takes per event.
    wall, cpu_all = time.perf_counter(), time.process_time()
    inserts()
    wall, cpu_all = time.perf_counter() - wall, time.process_time() - cpu_all
    stages.append(Stage("INSERT (Arrow table + chDB + views)", wall / events * 1e6, "wall"))
    stages.append(
        Stage("INSERT, CPU of every thread (the engine's)", cpu_all / events * 1e6, "cpu, all")
    )
    stages.append(Stage("process_batch, every step", total))
    return stages


def _other(envelope: Any) -> bool:
    """An image, units or charge event (schemas/fast_decode_other.py's types)."""
    from schemas.usage import EventType

    return not isinstance(envelope, list) and envelope.type in (
        EventType.IMAGE.value,
        EventType.UNITS.value,
        EventType.CHARGE.value,
    )


def _records(n: int, seed: int) -> list[Record]:
    now = int(time.time() * 1000)
    as_logged = tuple(headers(now))  # what the gateway adds: content type, tenant, ingest time
    values = encode(EventStream(seed=seed, now_ms=now).take(n))
    return [Record("bench", i % 12, i, k, v, as_logged, now) for i, (k, v) in enumerate(values)]


def table(stages: list[Stage]) -> str:
    whole = stages[-1].micros
    lines = [
        "| step | µs per event | share of process_batch | clock |",
        "| --- | ---: | ---: | --- |",
    ]
    for stage in stages:
        share = f"{stage.micros / whole:.0%}" if stage is not stages[-1] else "100%"
        lines.append(f"| {stage.name} | {stage.micros:.2f} | {share} | {stage.clock} |")
    lines.append(
        f"\nOne core at 100k events/s has 10 µs per event; process_batch alone takes "
        f"{whole:.1f} µs ({1e6 / whole:,.0f} events/s before reading from Kafka)."
    )
    return "\n".join(lines)


__all__ = ["Stage", "measure", "table"]
