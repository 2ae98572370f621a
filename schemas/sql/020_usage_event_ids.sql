-- The durable dedupe index: which (tenant, source, id) are already stored.
-- Ordered by id so the processor's per-batch lookup reads a few granules.
-- Filled by a materialized view in the same INSERT as usage_events.
CREATE TABLE IF NOT EXISTS {database}.usage_event_ids
(
    id         String,
    source     String,
    tenant     LowCardinality(String),
    time       DateTime64(3, 'UTC'),
    partition  UInt32,
    offset     UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (id, source, tenant)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.usage_event_ids_mv
TO {database}.usage_event_ids
AS SELECT id, source, tenant, time, partition, offset
FROM {database}.usage_events;
