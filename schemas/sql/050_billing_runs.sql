-- Re-billing: `meterline replay` re-prices a range of the log into a named run,
-- leaving the live tables untouched. Same columns as usage_events plus `run`.
CREATE TABLE IF NOT EXISTS {database}.billing_run_events
ENGINE = MergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (run, tenant, id, source)
EMPTY AS SELECT toLowCardinality('') AS run, * FROM {database}.usage_events;

-- One row per replay: what was read and with which price book.
CREATE TABLE IF NOT EXISTS {database}.billing_runs
(
    run            String,
    price_book     String,
    from_time      DateTime64(3, 'UTC') COMMENT 'Log (ingest) time range replayed, inclusive',
    to_time        DateTime64(3, 'UTC') COMMENT 'exclusive',
    created_at     DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(created_at)
ORDER BY run;
