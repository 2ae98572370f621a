-- Budgets (query/budgets.py, docs/budgets.md). One append-only table of
-- versions: every create, update and delete is ONE row (one INSERT, atomic), so
-- the current budget and its history can never disagree, as they could with a
-- "current" table plus a separate change log written by two INSERTs.
-- The current state of a budget is its row with the highest version
-- (argMax(..., version)); a delete is a version with deleted = 1.
CREATE TABLE IF NOT EXISTS {database}.budget_versions
(
    tenant       LowCardinality(String),
    id           String COMMENT 'Budget id (bgt_...), chosen by the gateway at create',
    version      UInt64 COMMENT 'Microseconds since the epoch of the change; highest wins',
    action       LowCardinality(String) COMMENT 'create, update or delete',
    subject      String COMMENT 'The one subject it limits; empty: every subject of the tenant together',
    feature      String COMMENT 'Only this feature; empty: every feature',
    model        String COMMENT 'Only this model; empty: every model',
    period       LowCardinality(String) COMMENT 'day or month, in the billing timezone',
    metric       LowCardinality(String) COMMENT 'price_usd (what the customer pays) or cost_usd',
    amount       Decimal(38, 12) COMMENT 'The limit per period, in USD',
    thresholds   Array(UInt16) COMMENT 'Alert thresholds, percent of amount',
    mode         LowCardinality(String) COMMENT 'soft (alert only) or hard (entitlement denied)',
    deleted      UInt8,
    changed_at   DateTime64(3, 'UTC'),
    changed_by   String COMMENT 'Hash of the API key that made the change'
)
ENGINE = MergeTree
ORDER BY (tenant, id, version);

-- Running totals for the entitlement check (GET /v1/subjects/{s}/entitlements/{f}):
-- per tenant, subject, 15-minute UTC bucket, feature and model, filled by
-- materialized views from the SAME INSERT as usage_events, so they are exactly
-- once like usage_meters (the processor's dedup token covers the MV targets,
-- which need their own dedup window). `scope` 0: one subject; 1: the whole
-- tenant (subject ''), so a tenant-wide budget is a short range read too.
-- SummingMergeTree: always read with sum(...) GROUP BY.
CREATE TABLE IF NOT EXISTS {database}.usage_running_totals
(
    tenant     LowCardinality(String),
    scope      UInt8 COMMENT '0: per subject; 1: the whole tenant (subject empty)',
    subject    String,
    bucket     DateTime('UTC') COMMENT 'Event time, start of its 15 minutes (UTC). Every timezone offset is a multiple of 15 min, so any billing-timezone day or month is a whole number of buckets, and the table does not depend on the timezone setting',
    feature    LowCardinality(String),
    model      LowCardinality(String),
    events     UInt64,
    cost_usd   Decimal(38, 12),
    price_usd  Decimal(38, 12)
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (tenant, scope, subject, bucket, feature, model)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.usage_running_totals_subject_mv
TO {database}.usage_running_totals
AS SELECT
    tenant,
    toUInt8(0) AS scope,
    subject,
    toStartOfFifteenMinutes(time) AS bucket,
    feature,
    model,
    count() AS events,
    sum(cost_usd) AS cost_usd,
    sum(price_usd) AS price_usd
FROM {database}.usage_events
GROUP BY tenant, subject, bucket, feature, model;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.usage_running_totals_tenant_mv
TO {database}.usage_running_totals
AS SELECT
    tenant,
    toUInt8(1) AS scope,
    '' AS subject,
    toStartOfFifteenMinutes(time) AS bucket,
    feature,
    model,
    count() AS events,
    sum(cost_usd) AS cost_usd,
    sum(price_usd) AS price_usd
FROM {database}.usage_events
GROUP BY tenant, bucket, feature, model;
