-- meterline: repeatable (re-applied whenever its rendered text changes, e.g. a new
-- billing timezone; see sinks/ddl.py).
-- Rollups for plain SQL. Views, not tables: they are always exactly the sum of
-- usage_meters, and day/month boundaries follow the billing timezone
-- ({billing_timezone}, setting METERLINE_BILLING_TIMEZONE) at migrate time.

CREATE OR REPLACE VIEW {database}.usage_meters_hourly AS
SELECT
    tenant,
    toStartOfHour(window_start) AS hour,
    subject, model, feature, provider, type, unit,
    sum(events) AS events,
    sum(unpriced_events) AS unpriced_events,
    sum(estimated_events) AS estimated_events,
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
FROM {database}.usage_meters
GROUP BY tenant, hour, subject, model, feature, provider, type, unit;

CREATE OR REPLACE VIEW {database}.usage_meters_daily AS
SELECT
    tenant,
    toDate(window_start, '{billing_timezone}') AS day,
    subject, model, feature, provider, type, unit,
    sum(events) AS events,
    sum(unpriced_events) AS unpriced_events,
    sum(estimated_events) AS estimated_events,
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
FROM {database}.usage_meters
GROUP BY tenant, day, subject, model, feature, provider, type, unit;

CREATE OR REPLACE VIEW {database}.usage_meters_monthly AS
SELECT
    tenant,
    toStartOfMonth(window_start, '{billing_timezone}') AS month,
    subject, model, feature, provider, type, unit,
    sum(events) AS events,
    sum(unpriced_events) AS unpriced_events,
    sum(estimated_events) AS estimated_events,
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
FROM {database}.usage_meters
GROUP BY tenant, month, subject, model, feature, provider, type, unit;
