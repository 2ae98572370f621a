-- Issue 17: the dedupe lookup reads 8 bytes per stored identity instead of ~45.
-- Provider ids are random, so a batch's 50k ids fall in every granule of
-- usage_event_ids (sorted by id): each lookup reads the whole table, and its cost grows
-- with every stored id (measured, chDB, 50k ids a lookup: ~90 ms of CPU with 1M ids
-- stored, ~210 with 4M, ~570 with 16M). The lookup now filters on this hash first
-- (PREWHERE key_hash IN ..., sinks/chdb_sink.py and clickhouse_sink.py), and checks
-- the exact (tenant, source, id) only on the rows that pass: ~75 ms with 4M ids
-- stored, ~170 with 16M (docs/benchmarks.md, round 9).
-- MATERIALIZED: the engine computes it on every insert (the views' and verify's
-- repair), no insert can set it, and SELECT * does not show it. Only a prefilter:
-- a hash collision only adds a row for the exact check to drop.
-- Rows stored before this migration: MATERIALIZE COLUMN writes it for them in the
-- background; until it has, the engine computes it from the three columns when read
-- (the same values: slower, never different).
ALTER TABLE {database}.usage_event_ids
    ADD COLUMN IF NOT EXISTS key_hash UInt64 MATERIALIZED cityHash64(tenant, source, id) COMMENT 'cityHash64(tenant, source, id): the dedupe lookup''s prefilter';

ALTER TABLE {database}.usage_event_ids MATERIALIZE COLUMN key_hash;
