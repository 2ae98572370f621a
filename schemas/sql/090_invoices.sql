-- Invoices (query/invoices.py, docs/invoices.md): frozen billing records, append-only.
-- One close of one customer's period writes ONE revision as ONE INSERT (its lines
-- and its per-currency totals, kind = 'total'), so a crash leaves the revision
-- whole or absent, never half-written. Rows are never updated or deleted: a
-- re-bill is a NEW revision carrying the difference. The INSERT carries
-- insert_deduplication_token = tenant/period/subject/revision, so two closers
-- racing for the same revision number store only the first (the other reads it
-- back and sees it lost); that needs the dedup window below.
CREATE TABLE IF NOT EXISTS {database}.invoice_lines
(
    tenant          LowCardinality(String),
    period          String COMMENT 'YYYY-MM: the calendar month in `timezone`',
    timezone        LowCardinality(String) COMMENT 'Billing timezone the period was closed in',
    period_start    DateTime64(3, 'UTC') COMMENT 'First instant of the period (inclusive)',
    period_end      DateTime64(3, 'UTC') COMMENT 'End of the period (exclusive)',
    subject         String COMMENT 'The customer',
    revision        UInt32 COMMENT '1 = first close; each later revision carries only the difference',
    invoice_id      String COMMENT 'inv_...: one id per (tenant, period, subject, revision)',
    run             String COMMENT 'Billing run the revision was closed from; empty: the live tables',
    kind            LowCardinality(String) COMMENT 'usage, charge (instant charges) or total (one per currency)',
    line            UInt32 COMMENT 'Line number inside the revision (totals after the lines)',
    type            LowCardinality(String),
    provider        LowCardinality(String),
    model           LowCardinality(String),
    feature         LowCardinality(String),
    unit            LowCardinality(String),
    description     String COMMENT 'Instant charges: the description they were sent with',
    currency        LowCardinality(String) COMMENT 'ISO 4217; usage lines are USD',
    events          Int64 COMMENT 'Events on the line (a difference in revisions > 1)',
    unpriced_events Int64,
    quantity        Decimal(38, 12) COMMENT 'tokens (input + output), images, units, or charges',
    input_tokens    Int64,
    output_tokens   Int64,
    unit_price      Decimal(38, 12) COMMENT 'amount_exact / quantity of the full line (average), 0 without quantity',
    amount_exact    Decimal(38, 12) COMMENT 'Exact, unrounded amount (the difference in revisions > 1)',
    amount          Decimal(38, 12) COMMENT 'Rounded half-even to the currency minor units (see docs/invoices.md)',
    price_books     Array(String) COMMENT 'Price-book versions that priced the events of the line',
    closed_at       DateTime64(3, 'UTC'),
    closed_by       String COMMENT 'Hash of the API key that closed it; cli for the command line'
)
ENGINE = MergeTree
ORDER BY (tenant, period, subject, revision, line)
SETTINGS non_replicated_deduplication_window = 10000;
