-- 1-minute tumbling windows by event time. SummingMergeTree merges rows of the
-- same group in the background: ALWAYS read with sum(...) GROUP BY, never
-- row by row (a group can be spread over several rows until merged).
CREATE TABLE IF NOT EXISTS {database}.usage_meters
(
    tenant                 LowCardinality(String),
    window_start           DateTime('UTC') COMMENT 'Start of the 1-minute window (event time)',
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

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.usage_meters_mv
TO {database}.usage_meters
AS SELECT
    tenant,
    toStartOfMinute(time) AS window_start,
    subject, model, feature, provider, type, unit,
    count() AS events,
    countIf(priced = 0) AS unpriced_events,
    countIf(estimated = 1) AS estimated_events,
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
FROM {database}.usage_events
GROUP BY tenant, window_start, subject, model, feature, provider, type, unit;
