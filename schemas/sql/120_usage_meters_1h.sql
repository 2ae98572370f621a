-- Hourly meters as a plain table (issue 13: GET /v1/usage p99 < 50 ms for a month).
-- The hourly PROJECTION of migration 100 gives the right numbers, but the engine
-- merges its aggregate *states* slowly: a month's sums took 75 ms from it against
-- 25-28 ms from a plain SummingMergeTree holding the same rows (docs/benchmarks.md).
-- query/meters.py reads whole hours of a range from here and the minutes at the
-- edges from usage_meters (docs/query.md). Same dimensions and sums as usage_meters;
-- `window_start` is the start of the UTC hour. SummingMergeTree: always read with
-- sum(...) GROUP BY.
CREATE TABLE IF NOT EXISTS {database}.usage_meters_1h
(
    tenant                 LowCardinality(String),
    window_start           DateTime('UTC') COMMENT 'Start of the 1-hour window (event time, UTC hour)',
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

-- Fed from usage_meters, not usage_events: a view on a view's target fires on every
-- block inserted into usage_meters, so it is the SAME INSERT as the event and meter
-- parts (the processor's dedup token covers it: deduplicate_blocks_in_dependent_
-- materialized_views, hence the dedup window above), AND it also receives the
-- correction rows that verify's start-up repair writes straight into usage_meters
-- (processor/verify.py repair_recent). Fed from usage_events, a repaired minute
-- would leave its hour short forever.
CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.usage_meters_1h_mv
TO {database}.usage_meters_1h
AS SELECT
    tenant,
    toStartOfHour(window_start) AS window_start,
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
FROM {database}.usage_meters
GROUP BY tenant, window_start, subject, model, feature, provider, type, unit;

-- Backfill: the meters written before this migration, exactly once.
-- The race: the view above exists from here on, so any meter row inserted between
-- its creation and this SELECT would be counted by both (the reverse order loses
-- them instead). Why this is exact where it must be:
-- * Embedded (chDB): one process owns the folder and runs `migrate` BEFORE it
--   consumes (sinks/migrations.py), so nothing writes between the view and this
--   statement: the table is empty here and receives every meter row once.
-- * Crash after this INSERT, before the file is recorded: the next start runs the
--   file again; the table is no longer empty, so the guard below (a scalar
--   subquery, evaluated once before the SELECT) makes it a no-op. An empty
--   usage_meters backfills nothing either way.
-- * Two processes migrating one server at once: both may pass the guard; the fixed
--   insert_deduplication_token (a constant: the file's checksum must be the same on
--   every database) makes the second identical INSERT a duplicate block, dropped.
-- * A processor of the old version still writing during a rolling upgrade: its
--   meter rows reach this table through the view; landing between the view and
--   the guard they skip the backfill (hours short), between the guard and the
--   SELECT they count twice. Not exact: `meterline verify` compares this table with
--   usage_meters hour by hour and names every difference (processor/verify.py
--   verify_hours); migrate a server with the processors stopped (docs/query.md).
INSERT INTO {database}.usage_meters_1h
SELECT
    tenant,
    toStartOfHour(window_start) AS hour,
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
FROM {database}.usage_meters
WHERE (SELECT count() FROM {database}.usage_meters_1h) = 0
GROUP BY tenant, hour, subject, model, feature, provider, type, unit
SETTINGS async_insert = 0, insert_deduplicate = 1, insert_deduplication_token = 'meterline-migration-120-backfill';
