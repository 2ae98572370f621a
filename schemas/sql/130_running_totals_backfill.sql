-- Running totals (070) for the events stored before 070 existed, and for any group a
-- torn INSERT left short: the entitlement check and the budget alerts read
-- usage_running_totals (query/running_totals.py, query/alerts.py), and a group short
-- of its events under-enforces a hard budget and misses its alerts.
-- Migration 070 created the table and its views without a backfill, so a database
-- that upgraded across it counts only the events stored after the upgrade. A guard
-- "target empty" (as 120-123) cannot apply here: the views have been filling the table
-- since 070. Instead: add to every group what it lacks against usage_events,
-- recomputed for all time as the views compute it (per subject, scope 0; tenant-wide,
-- scope 1 with subject ''), and nothing else:
-- * Only shortfalls: a group whose every sum is >= what it holds and one of them >.
--   A group ABOVE its events (in any column) is left as is: lowering it needs
--   negative counts, a human's decision; `meterline verify` names it
--   (processor/verify.py verify_running_totals).
-- * Idempotent by construction: a second run finds nothing short and inserts no row
--   (e.g. a crash after this INSERT and before the file is recorded: the next start
--   runs it again). That holds only if nothing writes while it runs: embedded (chDB),
--   one process owns the folder and migrates BEFORE it consumes; a server is migrated
--   with the processors stopped (docs/query.md, docs/budgets.md). An INSERT landing
--   between this SELECT's reads of usage_events and of usage_running_totals would be
--   counted twice or not at all for its group; `meterline verify` names it and
--   `meterline verify --repair-rollups` adds what is short.
-- * Two processes migrating one server at once: both compute the same rows; the fixed
--   insert_deduplication_token (a constant: the file's checksum must be the same on
--   every database) makes the second INSERT a duplicate block, dropped (single node; on
--   a cluster the Distributed table spreads rows over shards differently each time, so
--   not there: as for 120-123, docs/query.md). The table has no views of its own, so
--   nothing downstream can count a dropped block. The other
--   side of the token: a crash in the middle of this INSERT (some parts written, not
--   all) and a re-run can see its first blocks taken for duplicates of the first
--   run's and dropped; `meterline verify` over the stored months names what is still
--   short and `--repair-rollups` adds it.
-- Cost: one scan of usage_events and of usage_running_totals, grouped in memory (one
-- row per tenant, subject, 15 minutes, feature and model), once.
INSERT INTO {database}.usage_running_totals
SELECT
    e.tenant,
    e.scope,
    e.subject,
    e.bucket,
    e.feature,
    e.model,
    e.events - s.events,
    e.cost_usd - s.cost_usd,
    e.price_usd - s.price_usd
FROM
(
    SELECT
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
    GROUP BY tenant, subject, bucket, feature, model
    UNION ALL
    SELECT
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
    GROUP BY tenant, bucket, feature, model
) AS e
LEFT JOIN
(
    SELECT
        tenant, scope, subject, bucket, feature, model,
        sum(events) AS events,
        sum(cost_usd) AS cost_usd,
        sum(price_usd) AS price_usd
    FROM {database}.usage_running_totals
    GROUP BY tenant, scope, subject, bucket, feature, model
) AS s
ON e.tenant = s.tenant AND e.scope = s.scope AND e.subject = s.subject
    AND e.bucket = s.bucket AND e.feature = s.feature AND e.model = s.model
WHERE e.events >= s.events AND e.cost_usd >= s.cost_usd AND e.price_usd >= s.price_usd
    AND (e.events > s.events OR e.cost_usd > s.cost_usd OR e.price_usd > s.price_usd)
SETTINGS join_use_nulls = 0, async_insert = 0, insert_deduplicate = 1, insert_deduplication_token = 'meterline-migration-130-backfill';
