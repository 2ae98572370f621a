"""Prometheus metrics of the processor (served by the gateway's /metrics in one process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_READ = Counter("meterline_processor_records_total", "Records read from the log")
EVENTS_STORED = Counter("meterline_processor_events_stored_total", "New events written")
EVENTS_DUPLICATE = Counter(
    "meterline_processor_events_deduplicated_total", "Events dropped as duplicates", ["where"]
)
EVENTS_DEAD = Counter(
    "meterline_processor_events_dead_lettered_total", "Records sent to the DLQ", ["reason"]
)
EVENTS_UNPRICED = Counter(
    "meterline_processor_events_unpriced_total", "Events stored without a price", ["type"]
)
BATCH_SIZE = Histogram(
    "meterline_processor_batch_records",
    "Records per processed batch",
    buckets=(1, 10, 100, 1_000, 5_000, 10_000, 20_000, 50_000, 100_000),
)
INSERT_SECONDS = Histogram("meterline_processor_insert_seconds", "Time to insert one batch")
STORE_RETRIES = Counter("meterline_processor_store_retries_total", "Failed inserts retried")
END_TO_END_SECONDS = Histogram(
    "meterline_processor_ingest_to_stored_seconds",
    "Delay from gateway acceptance to being stored",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
LAG = Gauge("meterline_processor_lag_records", "Records behind the log end", ["partition"])
IDS_RESTORED = Counter(
    "meterline_processor_dedupe_ids_restored_total",
    "Stored events whose id was missing from usage_event_ids (a torn INSERT), restored",
)
