-- Revoked customer-scoped read tokens (query/portal_tokens.py). Tokens are
-- stateless and signed; this list is the only state every gateway shares about
-- them, re-read by each process at most every 2 s. A token lives at most 24 h,
-- so a revocation older than that protects nothing: the TTL drops it.
CREATE TABLE IF NOT EXISTS {database}.portal_token_revocations
(
    tenant       LowCardinality(String),
    token_id     String COMMENT 'The token''s id (claim tid), as minted',
    revoked_at   DateTime64(3, 'UTC'),
    revoked_by   String COMMENT 'Hash of the API key that revoked it'
)
ENGINE = ReplacingMergeTree(revoked_at)
ORDER BY (tenant, token_id)
TTL toDateTime(revoked_at) + INTERVAL 2 DAY;
