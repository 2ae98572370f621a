-- Tenant-wide hourly meters: usage_meters_1h (120) without `subject` (issue 13).
-- A month of the bench's tenant is ~267k rows in usage_meters_1h (200 subjects x the
-- other dimensions) but ~61k here (~85 combinations an hour), and the engine's time
-- grows with the rows it sums (docs/benchmarks.md). GET /v1/usage reads whole UTC hours from here when neither
-- group_by nor a filter names `subject` (a portal token filters on its subject, so
-- it reads the subject tables): query/meters.py _pieces, docs/query.md. The same
-- sums as usage_meters; `window_start` is the start of the UTC hour.
-- SummingMergeTree: always read with sum(...) GROUP BY.
CREATE TABLE IF NOT EXISTS {database}.usage_meters_1h_tenant
(
    tenant                 LowCardinality(String),
    window_start           DateTime('UTC') COMMENT 'Start of the 1-hour window (event time, UTC hour)',
    model                  LowCardinality(String),
    feature                LowCardinality(String),
    provider               LowCardinality(String),
    type                   LowCardinality(String),
    unit                   LowCardinality(String),
    events                 UInt64,
    unpriced_events        UInt64,
    estimated_events       UInt64,
    input_tokens           UInt64,
    output_tokens          UInt64,
    cache_read_tokens      UInt64,
    cache_write_tokens     UInt64,
    cache_write_1h_tokens  UInt64,
    reasoning_tokens       UInt64,
    input_audio_tokens     UInt64,
    output_audio_tokens    UInt64,
    images                 UInt64,
    quantity               Decimal(38, 12),
    cost_usd               Decimal(38, 12),
    price_usd              Decimal(38, 12)
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (tenant, window_start, model, feature, provider, type, unit)
SETTINGS non_replicated_deduplication_window = 10000;

-- Fed from usage_meters directly, like usage_meters_1h (120) and NOT from another
-- rollup: a view on a view's target is the same INSERT as the event and meter parts
-- (the processor's dedup token covers it, hence the dedup window above) and receives
-- verify's correction rows written into usage_meters (repair_recent). Not chained
-- deeper on purpose: in chDB a block that the dedup token drops from a table still
-- reaches that table's OWN views (tests/sinks/test_hourly_meters.py pins it for
-- 120 -> 121), so a view on usage_meters_1h would count again a second 120 backfill
-- and every repair_hours correction of a subject row would count here once more
-- (whether or not this table lacked it). Fed from the minutes, this table has no
-- upstream but usage_meters, and verify compares it with usage_meters alone.
CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.usage_meters_1h_tenant_mv
TO {database}.usage_meters_1h_tenant
AS SELECT
    tenant,
    toStartOfHour(window_start) AS window_start,
    model, feature, provider, type, unit,
    sum(events) AS events,
    sum(unpriced_events) AS unpriced_events,
    sum(estimated_events) AS estimated_events,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cache_read_tokens) AS cache_read_tokens,
    sum(cache_write_tokens) AS cache_write_tokens,
    sum(cache_write_1h_tokens) AS cache_write_1h_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    sum(input_audio_tokens) AS input_audio_tokens,
    sum(output_audio_tokens) AS output_audio_tokens,
    sum(images) AS images,
    sum(quantity) AS quantity,
    sum(cost_usd) AS cost_usd,
    sum(price_usd) AS price_usd
FROM {database}.usage_meters
GROUP BY tenant, window_start, model, feature, provider, type, unit;

-- Backfill from the minutes, exactly once: the same reasoning as 120's backfill.
-- Embedded (chDB) migrates before it consumes, so nothing writes between the view
-- above and this statement; a re-run after a crash finds the table non-empty and the
-- guard (a scalar subquery, evaluated once) makes it a no-op; a second concurrent
-- migration of one server that passed the guard carries the same fixed token and is
-- dropped as a duplicate block (this table has no views of its own, so nothing
-- downstream can count the dropped block). An old processor writing during a rolling
-- upgrade can still make it short or double: `meterline verify` compares it with
-- usage_meters hour by hour (processor/verify.py verify_tenant_hours); migrate a
-- server with the processors stopped (docs/query.md).
INSERT INTO {database}.usage_meters_1h_tenant
SELECT
    tenant,
    toStartOfHour(window_start) AS bucket,
    model, feature, provider, type, unit,
    sum(events),
    sum(unpriced_events),
    sum(estimated_events),
    sum(input_tokens),
    sum(output_tokens),
    sum(cache_read_tokens),
    sum(cache_write_tokens),
    sum(cache_write_1h_tokens),
    sum(reasoning_tokens),
    sum(input_audio_tokens),
    sum(output_audio_tokens),
    sum(images),
    sum(quantity),
    sum(cost_usd),
    sum(price_usd)
FROM {database}.usage_meters
WHERE (SELECT count() FROM {database}.usage_meters_1h_tenant) = 0
GROUP BY tenant, bucket, model, feature, provider, type, unit
SETTINGS async_insert = 0, insert_deduplicate = 1, insert_deduplication_token = 'meterline-migration-122-backfill';
