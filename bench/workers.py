"""Bench workers, one per process so each one's memory and CPU are its own.

``python -m bench.workers ROLE '<json args>'`` prints one JSON result line:

- ``produce``: generate the events and publish them with a bare confluent-kafka
  producer (meterline's producer settings: idempotent, acks=all, lz4,
  murmur2_random). This fills the processor's topic and is the gateway's limit.
- ``consume``: a bare confluent-kafka consumer reading the whole topic (the
  processor's limit).
- ``processor``: meterline's real ``Processor`` (Kafka -> decode -> dedupe ->
  price -> chDB with its materialized views), as ``meterline processor`` builds
  it, until every record is committed; then the totals it stored.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from bench._proc import CpuMark, emit, peak_rss_mib, rss_mib, thread_cpu_s, thread_cpu_since
from bench.data import TENANT, EventStream, encode


def producer_settings(bootstrap: str) -> dict[str, Any]:
    from core.log.kafka import producer_config

    return producer_config(bootstrap, 30.0, {"queue.buffering.max.messages": 1_000_000})


def headers(now_ms: int) -> list[tuple[str, bytes]]:
    from core.log.base import (
        CONTENT_TYPE_HEADER,
        INGESTED_AT_HEADER,
        STRUCTURED_CONTENT_TYPE,
        TENANT_HEADER,
    )

    return [
        (CONTENT_TYPE_HEADER, STRUCTURED_CONTENT_TYPE),
        (TENANT_HEADER, TENANT.encode()),
        (INGESTED_AT_HEADER, str(now_ms).encode()),
    ]


def produce(args: dict[str, Any]) -> dict[str, Any]:
    from confluent_kafka import Producer

    events = EventStream(seed=args["seed"], now_ms=args["now_ms"]).take(args["events"])
    messages = encode(events)
    producer = Producer(producer_settings(args["bootstrap"]))
    topic = args["topic"]
    hdrs: list[tuple[str, str | bytes | None]] = list(headers(int(time.time() * 1000)))
    errors: list[Any] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(err)

    began = time.perf_counter()
    for key, value in messages:
        while True:
            try:
                producer.produce(topic, value, key, headers=hdrs, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    left = producer.flush(60)
    elapsed = time.perf_counter() - began
    if left or errors:
        raise RuntimeError(f"bare producer: {left} undelivered, errors {errors[:3]}")
    return {"events": len(messages), "seconds": elapsed, "peak_rss_mib": peak_rss_mib()}


def consume(args: dict[str, Any]) -> dict[str, Any]:
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": args["bootstrap"],
            "group.id": args["group"],
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
        }
    )
    consumer.subscribe([args["topic"]])
    want = args["events"]
    seen = 0
    first = 0.0
    first_cpu = CpuMark.now()
    size = 0
    deadline = time.monotonic() + args.get("timeout_s", 600)
    while seen < want and time.monotonic() < deadline:
        for msg in consumer.consume(10_000, 0.1):
            if msg.error() is None:
                if not first:
                    first = time.perf_counter()
                    first_cpu = CpuMark.now()
                size += len(msg.value() or b"")
                seen += 1
    elapsed = time.perf_counter() - first
    cpu = CpuMark.now().since(first_cpu)
    consumer.close()
    return {
        "events": seen,
        "seconds": elapsed,
        "bytes": size,
        "peak_rss_mib": peak_rss_mib(),
        **cpu,
    }


def processor(args: dict[str, Any]) -> dict[str, Any]:
    from core.gc_policy import tune_gc
    from core.log.base import Record
    from core.log.kafka import KafkaConsumer
    from core.settings import load_settings
    from meterline import runtime

    settings = load_settings(
        log="kafka",
        store="chdb",
        kafka_bootstrap_servers=args["bootstrap"],
        topic=args["topic"],
        consumer_group=args["group"],
        data_dir=Path(args["data_dir"]),
        # the setting's default unless the run says otherwise
        **({"processor_pipeline": args["pipeline"]} if "pipeline" in args else {}),
        processor_native=args.get("native", True),
    )
    runtime.ensure_topics(settings)
    engine = runtime.build_engine(settings)
    price_book = runtime.build_price_book(settings)
    dead = runtime.LogDeadLetters(runtime.build_producer(settings, runtime.dlq_topic(settings)))
    marks = {"first": 0.0}
    first_cpu: list[CpuMark] = []
    first_threads: list[dict[str, float]] = []

    class TimedConsumer(KafkaConsumer):
        def poll(self, max_records: int, timeout_s: float) -> list[Record]:
            records = super().poll(max_records, timeout_s)
            if records and not marks["first"]:
                marks["first"] = time.perf_counter()
                first_cpu.append(CpuMark.now())
                first_threads.append(thread_cpu_s())
            return records

    consumer = TimedConsumer(settings.kafka_bootstrap_servers, settings.topic, args["group"])
    worker = runtime.build_processor(settings, consumer, engine, price_book, dead)
    tune_gc()  # as `meterline processor` does once start-up is done
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    want = args["events"]
    deadline = time.monotonic() + args.get("timeout_s", 900)
    while worker.totals.records < want and time.monotonic() < deadline:
        time.sleep(0.01)
    done = time.perf_counter()
    cpu = CpuMark.now().since(first_cpu[0]) if first_cpu else {}
    threads = thread_cpu_since(first_threads[0]) if first_threads else {}
    stop.set()
    thread.join(60)
    totals = worker.totals
    rss_after = rss_mib()
    stored = _stored_totals(engine.sql)
    worker.close()
    engine.close()
    return {
        "events": totals.records,
        "seconds": done - marks["first"],
        "stored": totals.stored,
        "duplicates": totals.duplicates,
        "dead": totals.dead,
        "unpriced": totals.unpriced,
        "peak_rss_mib": peak_rss_mib(),
        "rss_after_mib": rss_after,
        "totals": stored,
        "native": worker.native,
        "threads_cpu_s": threads,
        **cpu,
    }


def _stored_totals(sql: Any) -> dict[str, Any]:
    """usage_events and usage_meters summed per (subject, model, feature, type)."""
    from bench.data import SUMS

    sums = ", ".join(f"toString(sum({c})) AS {c}" for c in SUMS)
    out: dict[str, Any] = {}
    for table, count in (("usage_events", "count()"), ("usage_meters", "sum(events)")):
        rows = sql.query_rows(
            f"SELECT subject, model, feature, type, toString({count}) AS events, {sums}, "
            f"toString(sum(cost_usd)) AS cost_usd FROM {table} "
            "GROUP BY subject, model, feature, type"
        )
        out[table] = [
            [
                *(r[k] for k in ("subject", "model", "feature", "type", "events")),
                *(r[c] for c in SUMS),
                r["cost_usd"],
            ]
            for r in rows
        ]
    return out


ROLES = {"produce": produce, "consume": consume, "processor": processor}


def main() -> None:
    role, raw = sys.argv[1], sys.argv[2]
    emit(ROLES[role](orjson.loads(raw)))


if __name__ == "__main__":
    main()
