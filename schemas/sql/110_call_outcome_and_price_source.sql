-- Issue 15, items 6 and 7: where price_usd came from, and what a provider wrapper
-- measured about the call. Appended (ADD COLUMN without AFTER): the chDB writer
-- inserts by position, in sinks/base.py:EVENT_COLUMNS order. Rows written before
-- this migration read the defaults: priced from the book, call not measured.
ALTER TABLE {database}.usage_events
    ADD COLUMN IF NOT EXISTS price_source LowCardinality(String) DEFAULT 'book' COMMENT 'book: price_usd from the price book; client: the event''s own unit_prices (tenant allowed by METERLINE_CLIENT_PRICE_TENANTS)',
    ADD COLUMN IF NOT EXISTS status LowCardinality(String) COMMENT 'Provider call outcome: ok, error, or empty when not measured (events not sent by a wrapper)',
    ADD COLUMN IF NOT EXISTS error_type LowCardinality(String) COMMENT 'The provider client''s exception class for status = error, e.g. RateLimitError',
    ADD COLUMN IF NOT EXISTS http_status UInt16 COMMENT 'HTTP status of the provider''s answer; 0 = none (connection error, not measured)',
    ADD COLUMN IF NOT EXISTS latency_ms UInt32 COMMENT 'Provider call time in ms, as measured by the wrapper; 0 = not measured';

ALTER TABLE {database}.billing_run_events
    ADD COLUMN IF NOT EXISTS price_source LowCardinality(String) DEFAULT 'book',
    ADD COLUMN IF NOT EXISTS status LowCardinality(String),
    ADD COLUMN IF NOT EXISTS error_type LowCardinality(String),
    ADD COLUMN IF NOT EXISTS http_status UInt16,
    ADD COLUMN IF NOT EXISTS latency_ms UInt32;
