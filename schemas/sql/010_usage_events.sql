-- One row per accepted, unique event (tenant, source, id), priced.
-- Written only by the processor, one INSERT per batch, carrying an
-- insert_deduplication_token; the materialized views below derive the dedupe
-- index and the meters from the same INSERT, so they can never disagree with it.
CREATE TABLE IF NOT EXISTS {database}.usage_events
(
    tenant                 LowCardinality(String) COMMENT 'Tenant, from the API key that sent the event',
    id                     String COMMENT 'CloudEvents id (provider response id when there is one)',
    source                 String COMMENT 'CloudEvents source (the emitting app)',
    type                   LowCardinality(String) COMMENT 'CloudEvents type',
    subject                String COMMENT 'The customer being metered',
    time                   DateTime64(3, 'UTC') COMMENT 'When the usage happened (event time, ms, UTC)',
    provider               LowCardinality(String),
    model                  LowCardinality(String) COMMENT 'Model as reported by the provider',
    feature                LowCardinality(String),
    user                   String COMMENT 'End user inside the customer',
    input_tokens           UInt64 COMMENT 'All prompt tokens, cached ones included',
    output_tokens          UInt64 COMMENT 'All generated tokens, reasoning included',
    cache_read_tokens      UInt64,
    cache_write_tokens     UInt64 COMMENT '5-minute cache writes',
    cache_write_1h_tokens  UInt64,
    reasoning_tokens       UInt64,
    input_audio_tokens     UInt64,
    output_audio_tokens    UInt64,
    images                 UInt64,
    image_size             LowCardinality(String),
    image_quality          LowCardinality(String),
    unit                   LowCardinality(String) COMMENT 'Custom unit: page, api_call... (token, image, charge for built-in types)',
    quantity               Decimal(38, 12) COMMENT 'Custom units consumed (1 for other types)',
    charge_amount          Decimal(38, 12) COMMENT 'Instant charge amount, in charge_currency',
    charge_currency        LowCardinality(String),
    cost_usd               Decimal(38, 12) COMMENT 'What the provider charges us (0 when unpriced)',
    price_usd              Decimal(38, 12) COMMENT 'What the customer is charged (0 when unpriced)',
    priced                 UInt8 COMMENT '1 when a price rule matched; 0 = unpriced, re-priceable by replay',
    estimated              UInt8 COMMENT '1 when token counts were estimated locally (tiktoken)',
    matched_model          LowCardinality(String) COMMENT 'Price-book model the event matched',
    price_book             LowCardinality(String) COMMENT 'Price-book version used (catalog + local book hash)',
    topic                  LowCardinality(String),
    partition              UInt32,
    offset                 UInt64,
    ingested_at            DateTime64(3, 'UTC') COMMENT 'When the gateway accepted it (log timestamp)',
    processed_at           DateTime64(3, 'UTC') COMMENT 'When the processor wrote it',
    metadata               Map(String, String),
    data                   String COMMENT 'The CloudEvent exactly as received (JSON)'
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (tenant, subject, time, id)
SETTINGS non_replicated_deduplication_window = 10000;
