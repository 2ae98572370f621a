-- Daily meters per UTC day, the next level above usage_meters_1h (120): a month of the
-- bench's data is ~267k hourly rows but ~49k daily ones (every dimension kept, so
-- any group_by or filter can use it). GET /v1/usage reads whole UTC days from here
-- when its window allows (window=none in any zone; day and month windows in UTC),
-- whole hours at the ends from usage_meters_1h, minutes at the edges from
-- usage_meters (query/meters.py, docs/query.md). SummingMergeTree: always read with
-- sum(...) GROUP BY.
CREATE TABLE IF NOT EXISTS {database}.usage_meters_1d
(
    tenant                 LowCardinality(String),
    window_start           DateTime('UTC') COMMENT 'Start of the UTC day (event time)',
    subject                String,
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
ORDER BY (tenant, window_start, subject, model, feature, provider, type, unit)
SETTINGS non_replicated_deduplication_window = 10000;

-- Fed from usage_meters_1h by a view, as that table is fed from usage_meters: the same
-- INSERT (and dedup token) as the events, and repairs of either level reach it.
CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.usage_meters_1d_mv
TO {database}.usage_meters_1d
AS SELECT
    tenant,
    toStartOfDay(window_start, 'UTC') AS window_start,
    subject, model, feature, provider, type, unit,
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
FROM {database}.usage_meters_1h
GROUP BY tenant, window_start, subject, model, feature, provider, type, unit;

-- Backfill from the hours, exactly once: the same reasoning as 120's backfill (the
-- guard makes a re-run after a crash a no-op, the fixed token drops a second
-- concurrent one on a single server, and `meterline verify` compares the days with
-- the hours: processor/verify.py verify_days).
INSERT INTO {database}.usage_meters_1d
SELECT
    tenant,
    toStartOfDay(window_start, 'UTC') AS day,
    subject, model, feature, provider, type, unit,
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
FROM {database}.usage_meters_1h
WHERE (SELECT count() FROM {database}.usage_meters_1d) = 0
GROUP BY tenant, day, subject, model, feature, provider, type, unit
SETTINGS async_insert = 0, insert_deduplicate = 1, insert_deduplication_token = 'meterline-migration-121-backfill';
