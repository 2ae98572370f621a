-- Budget alerts (query/alerts.py, docs/budgets.md#alerts).
-- One row per alert CLAIM. The alert's identity is (tenant, budget_id,
-- period_start, threshold); `alert_id` is derived from it (the same bytes on
-- every process), and is the webhook-id receivers deduplicate on.
-- An alerter claims an alert with ONE INSERT carrying
-- insert_deduplication_token = alert_id, then reads the first claim back: a
-- second alerter racing for the same alert has its block dropped as a
-- duplicate (the window below), so both read the same winner and only it
-- delivers. MergeTree, not Replacing: the FIRST claim must win (read with
-- ORDER BY created_at, claimant LIMIT 1 BY alert_id), and a replacing merge
-- would keep the last one.
CREATE TABLE IF NOT EXISTS {database}.budget_alerts
(
    tenant        LowCardinality(String),
    alert_id      String COMMENT 'alr_ + sha256 of (tenant, budget_id, period_start, threshold): the webhook-id and the CloudEvent id',
    budget_id     String,
    period_start  DateTime('UTC') COMMENT 'Start of the budget period (billing-timezone midnight, as UTC)',
    threshold     UInt16 COMMENT 'Percent of the amount that was crossed',
    claimant      String COMMENT 'The alerter (one per process run) that claimed it and delivers it',
    created_at    DateTime64(3, 'UTC') COMMENT 'When the crossing was detected and claimed',
    event         String COMMENT 'The CloudEvent (io.meterline.alert.budget) as JSON: every (re)delivery sends these bytes'
)
ENGINE = MergeTree
ORDER BY (tenant, alert_id)
SETTINGS non_replicated_deduplication_window = 10000;

-- Append-only delivery log: one row per webhook attempt and per log publish.
-- The state of a delivery is its newest row per (alert_id, channel).
CREATE TABLE IF NOT EXISTS {database}.alert_deliveries
(
    tenant      LowCardinality(String),
    alert_id    String,
    channel     LowCardinality(String) COMMENT 'webhook or log',
    attempt     UInt32 COMMENT '1, 2, ... within one delivery run (a replay starts again at 1)',
    outcome     LowCardinality(String) COMMENT 'delivered, retrying, failed (retries exhausted), skipped (no endpoint for the tenant)',
    status      UInt16 COMMENT 'HTTP status; 0: no response',
    error       String COMMENT 'Why it failed (HTTP status line, connection error); empty when delivered',
    target      String COMMENT 'Webhook URL or log topic',
    at          DateTime64(3, 'UTC'),
    by_replay   UInt8 COMMENT '1: sent by `meterline alerts replay`'
)
ENGINE = MergeTree
ORDER BY (tenant, alert_id, channel, at);
